//! The HTTP API on the API address. For now: health, cluster status, join, and a
//! raw key-value view of the store for operators and tests. The Kubernetes REST
//! API is built on the same router.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::store::{ConflictKind, Expect, Op, Store, StoreError};

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub token: String,
}

/// Body of `POST /skiff/v0/join`.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_id: u64,
    pub peer_addr: String,
}

/// Answer to a join: the members and their peer addresses.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub members: std::collections::BTreeMap<u64, String>,
}

/// An error answered as JSON with an HTTP code.
#[derive(Debug)]
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let (code, reason) = match &e {
            StoreError::Conflict {
                kind: ConflictKind::NotFound,
                ..
            } => (StatusCode::NOT_FOUND, "NotFound"),
            StoreError::Conflict {
                kind: ConflictKind::AlreadyExists,
                ..
            } => (StatusCode::CONFLICT, "AlreadyExists"),
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
            StoreError::NoLeader | StoreError::Stopped => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            }
            StoreError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            StoreError::Expired { .. } => (StatusCode::GONE, "Expired"),
            StoreError::Invalid(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        ApiError::new(code, reason, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        (self.code, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn authorize(state: &ApiState, headers: &HeaderMap) -> ApiResult<()> {
    let ok = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == state.token);
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid bearer token is required",
        ))
    }
}

/// The router of the API address.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/skiff/v0/status", get(status))
        .route("/skiff/v0/join", post(join))
        .route("/skiff/v0/kv", get(list))
        .route(
            "/skiff/v0/kv/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        )
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<ApiState>) -> Response {
    let st = s.store.status();
    if st.leader_id != 0 && st.voters.contains(&st.id) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no leader yet").into_response()
    }
}

async fn status(State(s): State<ApiState>, headers: HeaderMap) -> ApiResult<Response> {
    authorize(&s, &headers)?;
    Ok(Json(s.store.status()).into_response())
}

async fn join(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Json(req): Json<JoinRequest>,
) -> ApiResult<Json<JoinResponse>> {
    authorize(&s, &headers)?;
    if req.node_id == 0 || req.peer_addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "join needs a non-zero node_id and a peer_addr of the form IP:PORT",
        ));
    }
    tracing::info!(node_id = req.node_id, peer_addr = %req.peer_addr, "join request");
    s.store.add_voter(req.node_id, req.peer_addr).await?;
    Ok(Json(JoinResponse {
        members: s.store.status().peers,
    }))
}

fn key_of(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

/// A stored value as the kv view shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvItem {
    pub key: String,
    pub value: String,
    pub create_revision: u64,
    pub mod_revision: u64,
}

/// Answer of a kv list.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvList {
    pub revision: u64,
    pub items: Vec<KvItem>,
}

async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<KvList>> {
    authorize(&s, &headers)?;
    let prefix = q.get("prefix").map_or("/", |p| p.as_str());
    let limit = match q.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", "bad limit"))?,
        None => usize::MAX,
    };
    let (kvs, revision) = if q.get("consistency").map(String::as_str) == Some("local") {
        (s.store.list_local(prefix, limit)?, s.store.status().applied)
    } else {
        s.store.list(prefix, None, limit).await?
    };
    Ok(Json(KvList {
        revision,
        items: kvs
            .into_iter()
            .map(|kv| KvItem {
                value: String::from_utf8_lossy(&kv.value).into_owned(),
                key: kv.key,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
            })
            .collect(),
    }))
}

async fn kv_get(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    authorize(&s, &headers)?;
    let key = key_of(&path);
    match s.store.get(&key).await? {
        Some(kv) => Ok(([("x-revision", kv.mod_revision.to_string())], kv.value).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("key {key} not found"),
        )),
    }
}

fn expect_of(q: &HashMap<String, String>) -> ApiResult<Expect> {
    match q.get("expect").map(String::as_str) {
        None | Some("any") => Ok(Expect::Any),
        Some("absent") => Ok(Expect::Absent),
        Some("present") => Ok(Expect::Present),
        Some(rev) => rev.parse().map(Expect::Revision).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "expect must be any, absent, present or a revision",
            )
        }),
    }
}

async fn kv_put(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&s, &headers)?;
    let op = Op::Put {
        key: key_of(&path),
        value: body.to_vec(),
        expect: expect_of(&q)?,
    };
    let revision = s.store.write(op).await?;
    Ok(Json(serde_json::json!({ "revision": revision })))
}

async fn kv_delete(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&s, &headers)?;
    let op = Op::Delete {
        key: key_of(&path),
        expect: match expect_of(&q)? {
            Expect::Any => Expect::Present,
            e => e,
        },
    };
    let revision = s.store.write(op).await?;
    Ok(Json(serde_json::json!({ "revision": revision })))
}
