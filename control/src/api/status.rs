//! API errors on the wire: an `ApiError` answers as its `Status` object.

use axum::Json;
use axum::response::{IntoResponse, Response};

use crate::model::status::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, Json(self.status())).into_response()
    }
}
