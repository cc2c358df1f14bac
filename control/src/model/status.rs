//! API errors: what went wrong as a `metav1.Status` (code, reason, message,
//! details), shared by the storage layer, the HTTP layer and the loops that call
//! the storage layer.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::model::validate::Cause;
use crate::store::{ConflictKind, StoreError};

/// An error answered as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(resource: &str, name: &str) -> ApiError {
        let group_res = resource.to_string();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{group_res} \"{name}\" not found"),
        )
        .with_details(json!({"name": name, "kind": kind_of(resource), "group": group_of(resource)}))
    }

    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn already_exists(resource: &str, name: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .with_details(json!({"name": name, "kind": kind_of(resource), "group": group_of(resource)}))
    }

    pub fn conflict(resource: &str, name: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(json!({"name": name, "kind": kind_of(resource), "group": group_of(resource)}))
    }

    /// A delete's precondition (uid or resourceVersion) does not hold: a 409
    /// that no retry can fix, worded as Kubernetes words it.
    pub fn precondition_failed(resource: &str, name: &str, what: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": Precondition failed: {what}"),
        )
        .with_details(json!({"name": name, "kind": kind_of(resource), "group": group_of(resource)}))
    }

    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let message = if summary.len() == 1 {
            format!("{kind} \"{name}\" is invalid: {}", summary[0])
        } else {
            format!("{kind} \"{name}\" is invalid: [{}]", summary.join(", "))
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
            .with_details(json!({"name": name, "kind": kind, "causes": causes}))
    }

    pub fn unsupported_media(ct: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})"
            ),
        )
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn method_not_allowed(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({what})"),
        )
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// Map a store error on `resource`/`name` to the API's answer.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> ApiError {
        match e {
            StoreError::Conflict {
                kind: ConflictKind::AlreadyExists,
                ..
            } => ApiError::already_exists(resource, name),
            StoreError::Conflict {
                kind: ConflictKind::NotFound,
                ..
            } => ApiError::not_found(resource, name),
            StoreError::Conflict { .. } => ApiError::conflict(resource, name),
            e => e.into(),
        }
    }
}

fn kind_of(resource: &str) -> &str {
    resource.split('.').next().unwrap_or(resource)
}

fn group_of(resource: &str) -> &str {
    resource.split_once('.').map_or("", |(_, g)| g)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::NoLeader | StoreError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            ),
            StoreError::Timeout | StoreError::LeaderChanged => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", e.to_string())
            }
            StoreError::Expired { .. } => ApiError::gone(e.to_string()),
            StoreError::Conflict { key, .. } => ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("precondition failed on {key}"),
            ),
            StoreError::Invalid(m) => ApiError::bad_request(m.clone()),
            StoreError::NoSpace { .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                e.to_string(),
            ),
            _ => ApiError::internal(e.to_string()),
        }
    }
}
