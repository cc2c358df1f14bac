//! The generic REST handler for `/api/...` and `/apis/...`: discovery, and every
//! verb on every registered resource type.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::model::ResourceType;
use crate::model::selector::{FieldSelector, LabelSelector};
use crate::model::status::{ApiError, ApiResult};
use crate::storage::{DeleteOptions, FieldValidation, Objects, Propagation, WriteOptions, Written};
use crate::store::StoreError;

use super::request::{self, ResourceRef, Target};
use super::table::{self, Include, Rendering};
use super::{body, discovery, patch};

/// The longest a watch runs before the server ends it (a larger
/// `timeoutSeconds` is clamped to it; clients start a new watch).
const MAX_WATCH_SECONDS: u64 = 24 * 3600;

/// State of the REST handler.
#[derive(Clone)]
pub struct Rest {
    pub objects: Objects,
    pub server_addr: String,
    /// What the API server shows node agents (the join token).
    pub agent_token: String,
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut r = (code, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A write's answer: 201 for a new object, 200 otherwise, with its warnings.
pub fn written(w: Written) -> Response {
    let code = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut r = json_response(code, &w.object);
    if !w.audit.is_empty() {
        r.extensions_mut()
            .insert(super::audit::Annotations(w.audit));
    }
    for warning in w.warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", warning.replace('"', "\\\"")))
        {
            r.headers_mut().append("warning", v);
        }
    }
    r
}

struct Query {
    map: HashMap<String, String>,
}

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
    fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(o) => Err(ApiError::bad_request(format!(
                "unsupported dryRun value {o:?}"
            ))),
        }
    }
    fn field_validation(&self) -> ApiResult<FieldValidation> {
        FieldValidation::parse(self.get("fieldValidation"))
    }
    /// `fieldManager`, or the client's user agent up to the first '/'.
    fn manager(&self, headers: &HeaderMap) -> String {
        self.get("fieldManager")
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|ua| ua.split('/').next())
                    .filter(|s| !s.is_empty())
                    .unwrap_or("unknown")
                    .to_string()
            })
    }
    fn write_options(&self, headers: &HeaderMap) -> ApiResult<WriteOptions> {
        Ok(WriteOptions {
            field_validation: self.field_validation()?,
            dry_run: self.dry_run()?,
            manager: self.manager(headers),
            apply_fields: None,
        })
    }
    fn labels(&self) -> ApiResult<LabelSelector> {
        LabelSelector::parse(self.get("labelSelector").unwrap_or(""))
    }
    fn fields(&self) -> ApiResult<FieldSelector> {
        FieldSelector::parse(self.get("fieldSelector").unwrap_or(""))
    }
}

impl Rest {
    /// Entry point for every request under `/api` and `/apis`.
    pub async fn handle(
        &self,
        method: Method,
        path: &str,
        raw_query: Option<&str>,
        headers: HeaderMap,
        body: Body,
    ) -> Response {
        match self.dispatch(method, path, raw_query, headers, body).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn dispatch(
        &self,
        method: Method,
        path: &str,
        raw_query: Option<&str>,
        headers: HeaderMap,
        body: Body,
    ) -> ApiResult<Response> {
        let reg = self.objects.registry.clone();
        let target = request::parse(path, &reg)?;
        let q = Query {
            map: request::query_map(raw_query),
        };
        let r = match target {
            Target::Root { legacy: true } => {
                json_response(StatusCode::OK, &discovery::api_versions(&self.server_addr))
            }
            Target::Root { legacy: false } => {
                json_response(StatusCode::OK, &discovery::api_group_list(&reg))
            }
            Target::Group(g) => json_response(
                StatusCode::OK,
                &discovery::api_group(&reg, &g).ok_or_else(|| ApiError::no_route(path))?,
            ),
            Target::GroupVersion { group, version } => json_response(
                StatusCode::OK,
                &discovery::resource_list(&reg, &group, &version)
                    .ok_or_else(|| ApiError::no_route(path))?,
            ),
            Target::Resource(r) => {
                let t = r.resource_type(&reg)?.clone();
                self.resource(method, &t, &r, &q, &headers, body).await?
            }
        };
        Ok(r)
    }

    async fn resource(
        &self,
        method: Method,
        t: &ResourceType,
        r: &ResourceRef,
        q: &Query,
        headers: &HeaderMap,
        body: Body,
    ) -> ApiResult<Response> {
        if t.namespaced && r.name.is_some() && r.namespace.is_none() {
            return Err(ApiError::no_route(&format!(
                "{} without a namespace",
                t.plural
            )));
        }
        if let Some(sub) = &r.sub
            && !t.has_subresource(sub)
        {
            return Err(ApiError::no_route(&format!("{}/{sub}", t.plural)));
        }
        let ns = if t.namespaced {
            r.namespace.as_deref()
        } else {
            None
        };
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        let rendering = Rendering::of(accept);
        let o = &self.objects;
        match (&method, r.name.as_deref(), r.sub.as_deref()) {
            (&Method::GET, None, None) if q.flag("watch") => {
                self.watch(t, ns, None, q, rendering).await
            }
            (&Method::GET, None, None) => {
                let limit = q
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .filter(|&l: &usize| l > 0);
                let (items, rev, cont) = o
                    .list(t, ns, &q.labels()?, &q.fields()?, limit, q.get("continue"))
                    .await?;
                if rendering == Rendering::Table {
                    let include = Include::parse(q.get("includeObject"));
                    let tb = table::table(t, &items, &rev.to_string(), cont.as_deref(), include);
                    return Ok(json_response(StatusCode::OK, &tb));
                }
                let mut md = json!({"resourceVersion": rev.to_string()});
                if let Some(c) = cont {
                    md["continue"] = json!(c);
                }
                let list = if rendering == Rendering::Metadata {
                    let items: Vec<Value> = items.iter().map(table::partial_metadata).collect();
                    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": md, "items": items})
                } else {
                    json!({"kind": t.list_kind, "apiVersion": t.api_version(), "metadata": md, "items": items})
                };
                Ok(json_response(StatusCode::OK, &list))
            }
            (&Method::GET, Some(name), None | Some("status" | "approval")) => {
                if q.flag("watch") {
                    return self.watch(t, ns, Some(name), q, rendering).await;
                }
                let obj = o.get(t, ns, name).await?;
                if rendering == Rendering::Metadata {
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::partial_metadata(&obj),
                    ));
                }
                if rendering == Rendering::Table {
                    let rv = obj
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let include = Include::parse(q.get("includeObject"));
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::table(t, &[obj], &rv, None, include),
                    ));
                }
                Ok(json_response(StatusCode::OK, &obj))
            }
            (&Method::GET, Some(name), Some("log")) if t.kind == "Pod" => {
                super::podlog::pod_log(o, &self.agent_token, ns.unwrap_or("default"), name, &q.map)
                    .await
            }
            (&Method::GET, Some(name), Some("scale")) => {
                let obj = o.get(t, ns, name).await?;
                Ok(json_response(StatusCode::OK, &patch::scale_of(&obj)))
            }
            (&Method::POST, None, None) => {
                let bytes = body::read(body).await?;
                let obj = body::object(headers, &bytes, &self.objects.registry)?;
                let w = o.create(t, ns, obj, &q.write_options(headers)?).await?;
                Ok(written(w))
            }
            (&Method::POST, Some(name), Some("binding")) => {
                let bytes = body::read(body).await?;
                let b = body::object(headers, &bytes, &self.objects.registry)?;
                let node = b
                    .pointer("/target/name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ApiError::bad_request("a Binding needs target.name"))?;
                o.bind(ns.unwrap_or("default"), name, node).await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            (&Method::PUT, Some(name), sub @ (None | Some("status" | "approval"))) => {
                let bytes = body::read(body).await?;
                let obj = body::object(headers, &bytes, &self.objects.registry)?;
                let w = o
                    .update(t, ns, name, obj, sub, &q.write_options(headers)?)
                    .await?;
                Ok(written(w))
            }
            (&Method::PUT, Some(name), Some("scale")) => {
                let bytes = body::read(body).await?;
                let scale = body::object(headers, &bytes, &self.objects.registry)?;
                let w =
                    patch::set_scale(o, t, ns, name, &scale, &q.write_options(headers)?).await?;
                Ok(written(w))
            }
            (&Method::PATCH, Some(name), sub) => {
                let bytes = body::read(body).await?;
                let ct = body::content_type(headers);
                let opts = patch::PatchOptions {
                    field_validation: q.field_validation()?,
                    dry_run: q.dry_run()?,
                    field_manager: if ct.starts_with("application/apply-patch") {
                        q.get("fieldManager").map(str::to_string)
                    } else {
                        Some(q.manager(headers))
                    },
                    force: q.flag("force"),
                };
                let w = patch::patch(o, t, ns, name, sub, &ct, &bytes, &opts).await?;
                Ok(written(w))
            }
            (&Method::DELETE, Some(name), None) => {
                let bytes = body::read(body).await?;
                let opts = delete_options(headers, &bytes, q, &self.objects.registry)?;
                let obj = o.delete(t, ns, name, &opts).await?;
                Ok(json_response(StatusCode::OK, &obj))
            }
            (&Method::DELETE, None, None) => {
                let opts = DeleteOptions {
                    dry_run: q.dry_run()?,
                    grace: q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()),
                    ..DeleteOptions::default()
                };
                let (deleted, rev) = o
                    .delete_collection(t, ns, &q.labels()?, &q.fields()?, &opts)
                    .await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"kind": t.list_kind, "apiVersion": t.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": deleted}),
                ))
            }
            (m, _, sub) => Err(ApiError::method_not_allowed(&format!(
                "{m} {}{}",
                t.plural,
                sub.map(|s| format!("/{s}")).unwrap_or_default()
            ))),
        }
    }

    /// Stream watch events as newline-delimited JSON.
    async fn watch(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: Option<&str>,
        q: &Query,
        rendering: Rendering,
    ) -> ApiResult<Response> {
        let labels = q.labels()?;
        let mut fields = q.fields()?;
        if let Some(n) = name {
            fields = FieldSelector::parse(&format!("metadata.name={n}"))?;
        }
        let store = self.objects.store.clone();
        let rv = q
            .get("resourceVersion")
            .filter(|s| !s.is_empty() && *s != "0");
        let bookmarks = q.flag("allowWatchBookmarks");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(1800)
            .min(MAX_WATCH_SECONDS);
        let include = Include::parse(q.get("includeObject"));
        // Streaming list: initial ADDED events, then a bookmark that marks their end.
        let send_initial = q.flag("sendInitialEvents");
        let (initial, from) = match rv {
            Some(_) if send_initial => {
                let (items, rev, _) = self
                    .objects
                    .list(t, ns, &labels, &fields, None, None)
                    .await?;
                (items, rev)
            }
            Some(rv) => {
                let from: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?;
                (Vec::new(), from)
            }
            None => {
                let (items, rev, _) = self
                    .objects
                    .list(t, ns, &labels, &fields, None, None)
                    .await?;
                (items, rev)
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
        let t = t.clone();
        let watch = self.objects.watch(&t, ns, labels, fields, from);
        tokio::spawn(async move {
            let mut first = true;
            // An ERROR event carries a Status, whatever the rendering.
            let mut emit = |kind: &str, obj: Value| -> Bytes {
                let object = match rendering {
                    _ if kind == "ERROR" => obj,
                    Rendering::Table => {
                        let rv = obj
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        let mut tb = table::table(&t, &[obj], &rv, None, include);
                        if !first {
                            tb["columnDefinitions"] = json!([]);
                        }
                        first = false;
                        tb
                    }
                    Rendering::Metadata => table::partial_metadata(&obj),
                    Rendering::Object => obj,
                };
                let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))
                    .unwrap_or_default();
                line.push(b'\n');
                Bytes::from(line)
            };
            let mut w = match watch {
                Ok(w) => w,
                Err(e) => {
                    let st =
                        ApiError::gone(format!("too old resource version: {from} ({e})")).status();
                    let _ = tx.send(emit("ERROR", st)).await;
                    return;
                }
            };
            for obj in initial {
                if tx.send(emit("ADDED", obj)).await.is_err() {
                    return;
                }
            }
            // A bookmark names the kind the watch returns.
            let (bm_kind, bm_version) = match rendering {
                Rendering::Metadata => ("PartialObjectMetadata", "meta.k8s.io/v1".to_string()),
                _ => (t.kind, t.api_version()),
            };
            let bookmark = |metadata: Value| -> Bytes {
                let bm = json!({"kind": bm_kind, "apiVersion": bm_version, "metadata": metadata});
                let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": bm}))
                    .unwrap_or_default();
                line.push(b'\n');
                Bytes::from(line)
            };
            if send_initial {
                let md = json!({"resourceVersion": from.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}});
                if tx.send(bookmark(md)).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let next = tokio::time::timeout(Duration::from_secs(5), w.next());
                let ev = tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tx.closed() => return,
                    r = next => r,
                };
                let ev = match ev {
                    Err(_) => {
                        if bookmarks {
                            let rv = store.status().applied.max(w.revision());
                            let md = json!({"resourceVersion": rv.to_string()});
                            if tx.send(bookmark(md)).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    Ok(Err(StoreError::Expired { .. })) => {
                        let st = ApiError::gone("the watch fell behind; list again").status();
                        let _ = tx.send(emit("ERROR", st)).await;
                        return;
                    }
                    Ok(Err(_)) => return,
                    Ok(Ok(ev)) => ev,
                };
                if tx.send(emit(ev.kind(), ev.into_object())).await.is_err() {
                    return;
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}

/// The DeleteOptions of a DELETE: query parameters, then the body in the
/// encoding its Content-Type names (JSON, YAML, or Kubernetes protobuf, as
/// client-go's typed clients send since 1.32; `kind`/`apiVersion` optional).
fn delete_options(
    headers: &HeaderMap,
    bytes: &[u8],
    q: &Query,
    registry: &crate::model::Registry,
) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        dry_run: q.dry_run()?,
        grace: q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()),
        propagation: q
            .get("propagationPolicy")
            .map(Propagation::parse)
            .transpose()?,
        ..DeleteOptions::default()
    };
    if let Some(o) = q.get("orphanDependents") {
        opts.propagation = Some(if o == "true" {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(opts);
    }
    let v = body::object(headers, bytes, registry)?;
    opts.uid = v
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    opts.resource_version = v
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
        opts.grace = Some(g);
    }
    if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
        opts.propagation = Some(Propagation::parse(p)?);
    } else if let Some(o) = v.get("orphanDependents").and_then(Value::as_bool) {
        opts.propagation = Some(if o {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
    }
    if v.get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|d| d == "All"))
    {
        opts.dry_run = true;
    }
    Ok(opts)
}
