//! The HTTPS API: health, version, discovery, OpenAPI, the Kubernetes REST API over
//! every registered resource, and Skiff's own `/skiff/v0` endpoints (status, join,
//! raw key-value view of the store). It speaks HTTP only: requests are parsed
//! here, objects are read and written through the storage layer
//! (`crate::storage`), and answers are rendered here (objects, tables, watch
//! streams, `Status` errors).
//!
//! **Every request except the health endpoints (and `/skiff/v0`, which takes
//! the join token) is authenticated and authorized (`crate::auth`).**

pub mod apply;
pub mod audit;
pub mod body;
pub mod discovery;
pub mod distribution;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod podexec;
pub mod podlog;
pub mod portforward;
pub mod prom;
pub mod protobuf;
pub mod request;
pub mod rest;
pub mod reviews;
pub mod snapshot;
pub mod status;
pub mod strategic;
pub mod table;
pub mod tls;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::store::{Expect, Op, Store};

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// The cluster join token (peers, joins and the `/skiff/v0` endpoints).
    pub token: String,
    /// The admin bearer token of the Kubernetes API.
    pub admin_token: String,
    pub rest: rest::Rest,
    pub openapi: Arc<openapi::OpenApi>,
    pub images: crate::imagestore::Images,
    pub uploads: distribution::Uploads,
    /// The cluster CA certificate (PEM) agents bootstrap with.
    pub ca_pem: String,
    /// The cluster CA with its key, for certificates this server issues
    /// (joining servers' peer certificates); none in the in-process cluster.
    pub ca: Option<Arc<crate::pki::ClusterCa>>,
    /// How long the certificates it issues are valid.
    pub cert_lifetime: std::time::Duration,
    /// The cluster-managed encryption keys (none: they come from
    /// `--encryption-provider-config`).
    pub managed_keys: Option<crate::storage::encryption::ManagedKeys>,
    /// `GET /metrics`: request, Raft and pod metrics.
    pub metrics: Arc<prom::Metrics>,
    /// Node agents' usage reports, for `metrics.k8s.io` and
    /// `custom.metrics.k8s.io` (one shared, briefly cached round).
    pub collector: crate::metrics::Collector,
    /// Who a request is from (bearer tokens).
    pub authn: crate::auth::authn::Authenticator,
    /// The roles and bindings requests are authorized against.
    pub policy: crate::auth::cache::PolicyCache,
    /// The audit log (none: requests are not logged).
    pub audit: Option<audit::Auditor>,
    /// Which pods are bound to which node, for the Node authorizer.
    pub nodes: crate::auth::node::GraphCache,
    /// Whether the raw key-value view (`/skiff/v0/kv`) is served
    /// (`--enable-debug-kv`).
    pub debug_kv: bool,
}

impl ApiState {
    pub fn new(
        store: Store,
        token: String,
        admin_token: String,
        server_addr: String,
        encryption: crate::storage::Encryption,
    ) -> ApiState {
        let mut objects = crate::storage::Objects::new(store.clone());
        objects.encryption = encryption;
        let openapi = Arc::new(openapi::OpenApi::build(&objects.registry));
        let metrics = Arc::new(prom::Metrics::new(&store, &objects.registry));
        ApiState {
            collector: crate::metrics::Collector::new(objects.clone(), token.clone()),
            rest: rest::Rest {
                objects,
                server_addr,
                agent_token: token.clone(),
            },
            ca_pem: String::new(),
            ca: None,
            cert_lifetime: crate::pki::LEAF_LIFETIME,
            managed_keys: None,
            images: crate::imagestore::Images::new(store.clone()),
            uploads: distribution::Uploads::default(),
            store,
            token,
            authn: crate::auth::authn::Authenticator::new(admin_token.clone()),
            policy: crate::auth::cache::PolicyCache::default(),
            audit: None,
            nodes: crate::auth::node::GraphCache::default(),
            debug_kv: false,
            admin_token,
            openapi,
            metrics,
        }
    }
}

/// Body of `POST /skiff/v0/join`.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_id: u64,
    pub peer_addr: String,
    /// A certificate signing request (PEM) for the new member's peer key.
    #[serde(default)]
    pub peer_csr: String,
}

/// Answer to a join: the members and their peer addresses, and the new
/// member's peer certificate (chain) with the CA it is of.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub members: std::collections::BTreeMap<u64, String>,
    pub peer_cert: String,
    pub ca_pem: String,
}

use crate::model::status::{ApiError, ApiResult};

use crate::auth::authn::{Refused, bearer, effective_user, same};
use crate::auth::{Attributes, UserInfo, forbidden_message, rbac};

/// The join token, for the `/skiff/v0` endpoints (peers, joins, agents).
fn authorize(state: &ApiState, headers: &HeaderMap) -> ApiResult<()> {
    match bearer(headers) {
        Some(t) if same(t, &state.token) || same(t, &state.admin_token) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Authenticate, authorize and audit every request but the health checks
/// and the `/skiff/v0` endpoints (which check the join token themselves):
/// 401 without a known credential, 403 (naming user, verb and resource) when
/// no role allows it. The user the request runs as goes into its extensions.
async fn require_token(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/livez" | "/readyz") || path.starts_with("/skiff/v0/") {
        return next.run(req).await;
    }
    let mut audit = Audit::begin(&s, &req);
    // A client certificate of the cluster CA (verified in the handshake)
    // names the user first, as Kubernetes' x509 authenticator; else a
    // bearer token.
    let from_cert = req
        .extensions()
        .get::<tls::ClientCertUser>()
        .map(|c| crate::auth::UserInfo::with_groups(&c.name, &c.groups));
    let registry = path == "/v2" || path.starts_with("/v2/");
    let by_token = || {
        if registry {
            s.authn.authenticate_registry(req.headers())
        } else {
            s.authn.authenticate(req.headers())
        }
    };
    let requester = match from_cert.map_or_else(by_token, Ok) {
        Ok(u) => u,
        Err(why) => {
            let reason = match &why {
                crate::auth::authn::Unauthenticated::NoCredential => "no_credential",
                crate::auth::authn::Unauthenticated::Invalid(_) => "invalid",
            };
            s.metrics.authn_failures.with_label_values(&[reason]).inc();
            tracing::debug!(?why, path, "unauthenticated");
            let mut resp = ApiError::unauthorized().into_response();
            if registry {
                // Registry clients ask again with credentials when told how.
                let h = resp.headers_mut();
                h.insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Basic realm=\"skiff\""),
                );
                h.insert(
                    "docker-distribution-api-version",
                    axum::http::HeaderValue::from_static("registry/2.0"),
                );
            }
            audit.finish(None, None, resp.status()).await;
            return resp;
        }
    };
    let policy = s.policy.policy();
    let user = match effective_user(&*policy, requester.clone(), req.headers()) {
        Ok(u) => u,
        Err(refused) => {
            let resp = match refused {
                Refused::BadRequest(m) => ApiError::bad_request(m),
                Refused::Forbidden(m) => ApiError::forbidden(m),
            }
            .into_response();
            audit.finish(Some(&requester), None, resp.status()).await;
            return resp;
        }
    };
    let impersonated = (user != requester).then_some(&user);
    if !authorized(&s, &user, &audit.attrs) {
        tracing::debug!(user = %user.name, attrs = ?audit.attrs, "forbidden");
        let resp = forbidden(&user, &audit.attrs).into_response();
        audit
            .finish(Some(&requester), impersonated, resp.status())
            .await;
        return resp;
    }
    let mut req = req;
    if let Some(node) = crate::auth::node::node_of(&user) {
        req = match node_restriction(node, &audit.attrs, req).await {
            Ok(r) => r,
            Err(e) => {
                let resp = e.into_response();
                audit
                    .finish(Some(&requester), impersonated, resp.status())
                    .await;
                return resp;
            }
        };
    }
    req.extensions_mut().insert(user.clone());
    let req = audit.capture_request(&user, req).await;
    let resp = next.run(req).await;
    let resp = audit.capture_response(resp).await;
    if let Some(a) = resp.extensions().get::<audit::Annotations>() {
        audit.annotations = a.0.clone();
    }
    audit
        .finish(Some(&requester), impersonated, resp.status())
        .await;
    resp
}

/// The Node authorizer for node credentials, then RBAC. A node's request
/// the pods graph does not allow yet is judged again on a fresh read of the
/// store's pods (the graph may lag the pod the node just saw by moments).
fn authorized(s: &ApiState, user: &UserInfo, a: &Attributes) -> bool {
    use crate::auth::node;
    if let Some(name) = node::node_of(user) {
        if s.nodes.read(|g| node::allows(g, name, a)) {
            return true;
        }
        if rbac::allows(&*s.policy.policy(), user, a) {
            return true;
        }
        return node::allows(&s.nodes.fresh(&s.rest.objects), name, a)
            || node::ingress_tls_secret(&s.rest.objects, a);
    }
    rbac::allows(&*s.policy.policy(), user, a)
}

/// NodeRestriction: a node creates only its own Node and Lease (the name is
/// in the body, not the path).
async fn node_restriction(node: &str, a: &Attributes, req: Request) -> ApiResult<Request> {
    let Attributes::Resource {
        verb,
        group,
        resource,
        subresource: None,
        ..
    } = a
    else {
        return Ok(req);
    };
    let creates_own = verb == "create"
        && matches!(
            (group.as_str(), resource.as_str()),
            ("", "nodes") | ("coordination.k8s.io", "leases")
        );
    if !creates_own {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = body::read(body).await?;
    let named = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.pointer("/metadata/name")?.as_str().map(str::to_string));
    if named.as_deref() != Some(node) {
        return Err(ApiError::forbidden(format!(
            "{resource} {:?} is forbidden: node {node:?} may only create its own",
            named.unwrap_or_default()
        )));
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// The audit record of one request, filled in as it is served.
struct Audit {
    auditor: Option<audit::Auditor>,
    attrs: Attributes,
    level: audit::Level,
    id: String,
    uri: String,
    source: Option<std::net::SocketAddr>,
    user_agent: Option<String>,
    received: jiff::Timestamp,
    request: Option<serde_json::Value>,
    response: Option<serde_json::Value>,
    /// Annotations the handler left for the event (`audit::Annotations`).
    annotations: Vec<(String, String)>,
}

/// The most of a body the audit log keeps.
const AUDIT_BODY_LIMIT: usize = 3 << 20;

impl Audit {
    fn begin(s: &ApiState, req: &Request) -> Audit {
        Audit {
            auditor: s.audit.clone(),
            attrs: Attributes::of_request(req.method(), req.uri().path(), req.uri().query()),
            level: audit::Level::Metadata,
            id: crate::model::meta::new_uid(),
            // The path and query, as Kubernetes records `requestURI` (an
            // HTTP/2 request's URI also carries scheme and authority).
            uri: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_string(), ToString::to_string),
            source: req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
            user_agent: req
                .headers()
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            received: jiff::Timestamp::now(),
            request: None,
            response: None,
            annotations: Vec::new(),
        }
    }

    /// Keep the request body when the policy's level for `user` asks for it
    /// (JSON bodies of the Kubernetes API only).
    async fn capture_request(&mut self, user: &UserInfo, req: Request) -> Request {
        let Some(a) = &self.auditor else { return req };
        self.level = a.policy.level(Some(user), &self.attrs);
        let has_body = matches!(
            *req.method(),
            axum::http::Method::POST | axum::http::Method::PUT | axum::http::Method::PATCH
        );
        if self.level < audit::Level::Request || !has_body || req.uri().path().starts_with("/v2") {
            return req;
        }
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, AUDIT_BODY_LIMIT).await {
            Ok(bytes) => {
                self.request = serde_json::from_slice(&bytes).ok();
                Request::from_parts(parts, axum::body::Body::from(bytes))
            }
            // Over the limit: the handler would refuse it as too large.
            Err(_) => Request::from_parts(parts, axum::body::Body::empty()),
        }
    }

    /// Keep a JSON response body of known, bounded length when the level is
    /// RequestResponse (never a stream: watches, logs, exec).
    async fn capture_response(&mut self, resp: Response) -> Response {
        if self.auditor.is_none() || self.level < audit::Level::RequestResponse {
            return resp;
        }
        let json = resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bounded = resp
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n <= AUDIT_BODY_LIMIT);
        if !json || !bounded {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        match axum::body::to_bytes(body, AUDIT_BODY_LIMIT).await {
            Ok(bytes) => {
                self.response = serde_json::from_slice(&bytes).ok();
                Response::from_parts(parts, axum::body::Body::from(bytes))
            }
            Err(_) => Response::from_parts(parts, axum::body::Body::empty()),
        }
    }

    async fn finish(
        &mut self,
        user: Option<&UserInfo>,
        impersonated: Option<&UserInfo>,
        code: StatusCode,
    ) {
        let Some(a) = &self.auditor else { return };
        let level = match user {
            None => audit::Level::Metadata,
            Some(u) if self.level == audit::Level::Metadata => {
                a.policy.level(Some(impersonated.unwrap_or(u)), &self.attrs)
            }
            Some(_) => self.level,
        };
        a.record(&audit::Entry {
            id: std::mem::take(&mut self.id),
            level,
            uri: &self.uri,
            attrs: &self.attrs,
            user,
            impersonated,
            source: self.source,
            user_agent: self.user_agent.as_deref(),
            code: code.as_u16(),
            received: self.received,
            request: self.request.take(),
            response: self.response.take(),
            annotations: std::mem::take(&mut self.annotations),
        })
        .await;
    }
}

/// A 403 as Kubernetes answers it: the message names user, verb and
/// resource; the details name the object.
fn forbidden(user: &UserInfo, a: &Attributes) -> ApiError {
    let mut e = ApiError::forbidden(forbidden_message(user, a));
    if let Attributes::Resource {
        group,
        resource,
        name,
        ..
    } = a
    {
        let mut d = serde_json::json!({"group": group, "kind": resource});
        if let Some(n) = name {
            d["name"] = serde_json::json!(n);
        }
        e.details = Some(d);
    }
    e
}

/// The router of the API address.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/metrics", get(prom::metrics))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*gv}", get(openapi_doc))
        .route("/api", any(kube))
        .route("/api/{*rest}", any(kube))
        .route("/apis", any(kube))
        .route("/apis/{*rest}", any(kube))
        .route("/v2", any(oci))
        .route("/v2/", any(oci))
        .route("/v2/{*rest}", any(oci))
        .route("/skiff/v0/status", get(status))
        .route("/skiff/v0/join", post(join))
        .route("/skiff/v0/agent", get(agent_bootstrap))
        .route("/skiff/v0/agent/serving-cert", post(agent_serving_cert))
        .route("/skiff/v0/cacerts", get(cacerts))
        .route("/skiff/v0/encryption/rotate", post(rotate_encryption_key))
        .route("/skiff/v0/snapshot", get(snapshot::snapshot))
        .route("/skiff/v0/kv", get(list))
        .route(
            "/skiff/v0/kv/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            prom::track,
        ))
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    ApiError::no_route(req.uri().path()).into_response()
}

async fn version() -> Response {
    rest::json_response(StatusCode::OK, &discovery::version())
}

/// OpenAPI v2 is answered with an empty (valid) protobuf document: kubectl only
/// falls back to it for kinds the v3 documents do not describe, and an empty
/// document lets it report those as unknown kinds instead of failing validation.
async fn openapi_v2() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        )],
        Vec::<u8>::new(),
    )
        .into_response()
}

async fn openapi_index(State(s): State<ApiState>) -> Response {
    rest::json_response(StatusCode::OK, &s.openapi.index())
}

async fn openapi_doc(State(s): State<ApiState>, Path(gv): Path<String>) -> Response {
    match s.openapi.document(gv.trim_matches('/')) {
        Some(doc) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            doc.to_vec(),
        )
            .into_response(),
        None => ApiError::no_route(&format!("/openapi/v3/{gv}")).into_response(),
    }
}

async fn oci(State(s): State<ApiState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    distribution::handle(
        &s.images,
        &s.uploads,
        parts.method,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        body,
    )
    .await
}

async fn kube(State(s): State<ApiState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    // `pods/{name}/exec` and `/portforward` upgrade the connection, so they need
    // the request's parts.
    if let ["", "api", "v1", "namespaces", ns, "pods", name, "exec"] =
        path.split('/').collect::<Vec<_>>()[..]
        && (parts.method == axum::http::Method::GET || parts.method == axum::http::Method::POST)
    {
        let (ns, name) = (ns.to_string(), name.to_string());
        return podexec::pod_exec(&s.rest.objects, s.rest.agent_token.clone(), ns, name, parts)
            .await
            .unwrap_or_else(|e| e.into_response());
    }
    if let [
        "",
        "api",
        "v1",
        "namespaces",
        ns,
        "pods",
        name,
        "portforward",
    ] = path.split('/').collect::<Vec<_>>()[..]
        && (parts.method == axum::http::Method::GET || parts.method == axum::http::Method::POST)
    {
        let (ns, name) = (ns.to_string(), name.to_string());
        let token = s.rest.agent_token.clone();
        return portforward::pod_port_forward(&s.rest.objects, token, ns, name, parts)
            .await
            .unwrap_or_else(|e| e.into_response());
    }
    let segments: Vec<&str> = path.split('/').collect();
    if let ["", "api", "v1", "nodes", node, "proxy", rest @ ..] = &segments[..]
        && parts.method == axum::http::Method::GET
    {
        return podlog::node_proxy(
            &s.rest.objects,
            &s.rest.agent_token,
            node,
            &rest.join("/"),
            parts.uri.query(),
        )
        .await
        .unwrap_or_else(|e| e.into_response());
    }
    if let Some(route) = tokens::route(&path) {
        let (user, doc) = match review_input(&s, &parts, body).await {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        };
        return tokens::serve(&s, &user, &parts.method, route, doc).await;
    }
    if let Some(route) = reviews::route(&path) {
        let (user, doc) = match review_input(&s, &parts, body).await {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        };
        return reviews::serve(&*s.policy.policy(), &user, &parts.method, route, doc);
    }
    if parts.method == axum::http::Method::POST
        && path == "/apis/certificates.k8s.io/v1/certificatesigningrequests"
    {
        // Who asks for a certificate is the API's to say, not the body's.
        let (user, mut doc) = match review_input(&s, &parts, body).await {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        };
        if let Some(spec) = doc
            .get_mut("spec")
            .and_then(serde_json::Value::as_object_mut)
        {
            spec.insert("username".into(), serde_json::json!(user.name));
            spec.insert("uid".into(), serde_json::json!(user.uid));
            spec.insert("groups".into(), serde_json::json!(user.groups));
            spec.insert("extra".into(), serde_json::json!(user.extra));
        }
        let mut headers = parts.headers;
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        headers.remove(axum::http::header::CONTENT_LENGTH);
        let body = axum::body::Body::from(serde_json::to_vec(&doc).unwrap_or_default());
        return s
            .rest
            .handle(parts.method, &path, parts.uri.query(), headers, body)
            .await;
    }
    if let Some(route) = metrics::route(&path) {
        return metrics::serve(
            &s.collector,
            &s.rest.objects,
            &parts.method,
            route,
            parts.uri.query(),
        )
        .await;
    }
    s.rest
        .handle(parts.method, &path, parts.uri.query(), parts.headers, body)
        .await
}

/// What a review or token request works from: the user it runs as and its
/// body (JSON, YAML or protobuf; none unless POST).
async fn review_input(
    s: &ApiState,
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
) -> ApiResult<(UserInfo, serde_json::Value)> {
    let user = parts
        .extensions
        .get::<UserInfo>()
        .cloned()
        .unwrap_or_default();
    let doc = match parts.method {
        axum::http::Method::POST => {
            let b = body::read(body).await?;
            body::object(&parts.headers, &b, &s.rest.objects.registry)?
        }
        _ => serde_json::Value::Null,
    };
    Ok((user, doc))
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
        return Err(ApiError::bad_request(
            "join needs a non-zero node_id and a peer_addr of the form IP:PORT",
        ));
    }
    let ca =
        s.ca.as_ref()
            .ok_or_else(|| ApiError::internal("this server issues no peer certificates"))?;
    if req.peer_csr.is_empty() {
        return Err(ApiError::bad_request(
            "join needs peer_csr: a certificate signing request for the new member's peer key",
        ));
    }
    let peer_cert = ca
        .sign_request(
            &crate::pki::peer_leaf(req.node_id, s.cert_lifetime),
            &req.peer_csr,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    tracing::info!(node_id = req.node_id, peer_addr = %req.peer_addr, "join request");
    s.store.add_voter(req.node_id, req.peer_addr).await?;
    Ok(Json(JoinResponse {
        members: s.store.status().peers,
        peer_cert,
        ca_pem: ca.cert_pem.clone(),
    }))
}

/// A node agent's serving certificate, for the certificate signing request
/// (PEM) in the body: valid for the node's name and `?ip=` addresses, with
/// when to ask again (join token).
async fn agent_serving_cert(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
    body: String,
) -> ApiResult<Response> {
    authorize(&s, &headers)?;
    let ca =
        s.ca.as_ref()
            .ok_or_else(|| ApiError::internal("this server issues no certificates"))?;
    let node = q
        .iter()
        .find(|(k, _)| k == "node")
        .map_or("", |(_, v)| v.as_str());
    crate::model::validate::dns1123_subdomain(node).map_err(|e| {
        ApiError::bad_request(format!("?node= must name the node (a DNS subdomain): {e}"))
    })?;
    let mut hosts = vec![node.to_string()];
    for (_, ip) in q.iter().filter(|(k, _)| k == "ip") {
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| ApiError::bad_request(format!("?ip={ip} is not an IP address")))?;
        hosts.push(ip.to_string());
    }
    let leaf = crate::pki::agent_serving_leaf(node, hosts, s.cert_lifetime);
    let chain = ca
        .sign_request(&leaf, &body)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let renew_after = crate::pki::CertInfo::from_pem(&chain)
        .ok()
        .and_then(|i| {
            i.renew_at()
                .duration_since(std::time::SystemTime::now())
                .ok()
        })
        .map_or(0, |d| d.as_secs().max(1));
    Ok(Json(serde_json::json!({
        "certChain": chain,
        "caCert": ca.cert_pem,
        "renewAfterSeconds": renew_after,
    }))
    .into_response())
}

/// `skiff secrets rotate-key`: a new primary encryption key, everything
/// sealed again with it (join token).
async fn rotate_encryption_key(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&s, &headers)?;
    let managed = s.managed_keys.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "this server's keys come from --encryption-provider-config: rotate them in that file as in Kubernetes (add the new key first on every server, then make it primary, then rewrite the secrets)",
        )
    })?;
    let done = s.rest.objects.rotate_encryption_key(managed).await?;
    Ok(Json(done).into_response())
}

/// A node agent that shows the join token gets the cluster CA and API
/// credentials.
/// The cluster CA, to anyone: joining machines check it against the hash
/// their join token pins before they send the token.
async fn cacerts(State(s): State<ApiState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        s.ca_pem.clone(),
    )
        .into_response()
}

/// The join token for the cluster CA and a credential of node `?node=NAME`
/// (user `system:node:NAME`: the Node authorizer decides what it may do).
async fn agent_bootstrap(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    authorize(&s, &headers)?;
    let node = q.get("node").map(String::as_str).unwrap_or("");
    if let Err(e) = crate::model::validate::dns1123_subdomain(node) {
        return Err(ApiError::bad_request(format!(
            "?node= must name the node (a DNS subdomain): {e}"
        )));
    }
    let signer = s
        .authn
        .signer()
        .ok_or_else(|| ApiError::internal("this server issues no credentials"))?;
    let (token, _) = signer
        .issue_node(
            node,
            crate::auth::tokens::NODE_CREDENTIAL_SECONDS,
            crate::auth::tokens::now(),
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(serde_json::json!({"caCert": s.ca_pem, "token": token})).into_response())
}

/// The raw key-value view: only with `--enable-debug-kv`, and then with
/// the join token.
fn debug_kv(s: &ApiState, headers: &HeaderMap) -> ApiResult<()> {
    if !s.debug_kv {
        return Err(ApiError::no_route(
            "/skiff/v0/kv (off: see --enable-debug-kv)",
        ));
    }
    authorize(s, headers)
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
    debug_kv(&s, &headers)?;
    let prefix = q.get("prefix").map_or("/", |p| p.as_str());
    let limit = match q.get("limit") {
        Some(l) => l.parse().map_err(|_| ApiError::bad_request("bad limit"))?,
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
    debug_kv(&s, &headers)?;
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
            ApiError::bad_request("expect must be any, absent, present or a revision")
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
    debug_kv(&s, &headers)?;
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
    debug_kv(&s, &headers)?;
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
