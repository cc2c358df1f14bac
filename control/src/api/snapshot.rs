//! `GET /skiff/v0/snapshot`: a consistent snapshot of the store (the backup file
//! `skiff snapshot save` writes), for the join or admin token.
//!
//! **The answer holds the cluster's secrets (CA key, admin and join tokens).**

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::model::status::ApiResult;
use crate::store::backup;

/// The store at one applied index, at least as new as every write acknowledged
/// before the request.
pub async fn snapshot(State(s): State<ApiState>, headers: HeaderMap) -> ApiResult<Response> {
    super::authorize(&s, &headers)?;
    let b = backup::take(&s.store, Some(s.token.clone()), true).await?;
    tracing::info!(applied = b.applied, keys = b.kvs.len(), "snapshot taken");
    let bytes = tokio::task::spawn_blocking(move || b.encode())
        .await
        .map_err(|e| crate::model::status::ApiError::internal(e.to_string()))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}
