//! The OCI distribution endpoint (`/v2/`) over the cluster's image store: pull
//! (manifests and blobs by tag or digest), push (monolithic or chunked uploads,
//! streamed into the store as they arrive; manifests), the catalog and tag
//! lists, and manifest deletion, so any OCI client, `skiff image` and the nodes
//! use one API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

use crate::imagestore::{BlobWriter, ImageError, Images, Reference};

/// Header of a manifest a node copied from a registry (its host), so that
/// `imagePullPolicy: Always` asks that registry again.
const PULLED_FROM: &str = "skiff-pulled-from";

/// Largest manifest accepted.
const MAX_MANIFEST: usize = 16 * 1024 * 1024;

/// An upload session untouched this long is dropped (with its parts).
const SESSION_IDLE: Duration = Duration::from_secs(3600);

/// Upload sessions one repository may have open at once (a client that
/// starts uploads and never finishes them cannot hold the server's disk
/// without bound; sessions idle for an hour go anyway).
const MAX_SESSIONS_PER_REPO: usize = 64;

struct Session {
    repo: String,
    writer: BlobWriter,
    touched: Instant,
}

/// Upload sessions in progress on this server. A session is taken out of the
/// map while a request appends to it, so chunks of one upload are sequential.
#[derive(Clone, Default)]
pub struct Uploads(Arc<Mutex<HashMap<String, Session>>>);

impl Uploads {
    fn take(&self, id: &str) -> Option<BlobWriter> {
        self.0.lock().unwrap().remove(id).map(|s| s.writer)
    }

    /// Sessions of `repo` open now.
    fn open_in(&self, repo: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.repo == repo && s.touched.elapsed() <= SESSION_IDLE)
            .count()
    }

    fn put(&self, id: String, repo: &str, writer: BlobWriter) {
        let stale: Vec<BlobWriter> = {
            let mut map = self.0.lock().unwrap();
            map.insert(
                id,
                Session {
                    repo: repo.to_string(),
                    writer,
                    touched: Instant::now(),
                },
            );
            let old: Vec<String> = map
                .iter()
                .filter(|(_, s)| s.touched.elapsed() > SESSION_IDLE)
                .map(|(k, _)| k.clone())
                .collect();
            old.iter()
                .filter_map(|k| map.remove(k).map(|s| s.writer))
                .collect()
        };
        for w in stale {
            tokio::spawn(w.abort());
        }
    }

    fn size(&self, id: &str) -> Option<u64> {
        self.0.lock().unwrap().get(id).map(|s| s.writer.size())
    }
}

fn err(code: StatusCode, oci: &str, message: impl Into<String>) -> Response {
    let body = json!({"errors": [{"code": oci, "message": message.into()}]});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn from_image_error(e: ImageError) -> Response {
    match &e {
        ImageError::DigestMismatch { .. } | ImageError::BadDigest(_) => {
            err(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string())
        }
        ImageError::BadReference(_) => err(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string()),
        ImageError::BadManifest(_) => {
            err(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", e.to_string())
        }
        ImageError::MissingBlob(_) | ImageError::MissingManifest(_) => err(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            e.to_string(),
        ),
        ImageError::NotFound { what: "blob", .. } => {
            err(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", e.to_string())
        }
        ImageError::NotFound {
            what: "repository", ..
        } => err(StatusCode::NOT_FOUND, "NAME_UNKNOWN", e.to_string()),
        ImageError::NotFound { .. } => {
            err(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", e.to_string())
        }
        ImageError::Store(_) => err(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            e.to_string(),
        ),
    }
}

async fn read_all(body: Body) -> Result<Vec<u8>, Response> {
    axum::body::to_bytes(body, MAX_MANIFEST)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| {
            err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!("manifests are limited to {MAX_MANIFEST} bytes"),
            )
        })
}

/// Stream a request body into `w`; on failure the writer is dropped with its parts.
async fn stream_into(body: Body, mut w: BlobWriter) -> Result<BlobWriter, Response> {
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let failed = match frame {
            Ok(data) => match w.write(&data).await {
                Ok(()) => continue,
                Err(e) => from_image_error(e),
            },
            Err(e) => err(
                StatusCode::BAD_REQUEST,
                "BLOB_UPLOAD_INVALID",
                format!("reading the upload: {e}"),
            ),
        };
        w.abort().await;
        return Err(failed);
    }
    Ok(w)
}

/// Drain a request body without keeping it.
async fn drain(body: Body) {
    let mut frames = body.into_data_stream();
    while let Some(Ok(_)) = frames.next().await {}
}

fn upload_status(code: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v2/{name}/blobs/uploads/{id}")).expect("ascii"),
    );
    h.insert(
        "docker-upload-uuid",
        HeaderValue::from_str(id).expect("ascii"),
    );
    h.insert(
        header::RANGE,
        HeaderValue::from_str(&format!("0-{}", size.saturating_sub(1))).expect("ascii"),
    );
    r
}

fn json_ok(v: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// `n` and `last` of a list request applied to sorted `items`.
fn page(items: Vec<String>, raw_query: Option<&str>) -> Vec<String> {
    let last = query(raw_query, "last");
    let n = query(raw_query, "n").and_then(|n| n.parse::<usize>().ok());
    items
        .into_iter()
        .filter(|i| last.as_ref().is_none_or(|l| i > l))
        .take(n.unwrap_or(usize::MAX))
        .collect()
}

fn query(q: Option<&str>, key: &str) -> Option<String> {
    super::request::query_map(q).remove(key)
}

/// Handle a request under `/v2/`.
pub async fn handle(
    images: &Images,
    uploads: &Uploads,
    method: Method,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let rest = path.trim_start_matches("/v2").trim_start_matches('/');
    if rest.is_empty() {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response();
    }
    if rest == "_catalog" {
        if method != Method::GET {
            return err(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                format!("{method} on /v2/_catalog"),
            );
        }
        return match images.repositories().await {
            Ok(repos) => json_ok(json!({"repositories": page(repos, raw_query)})),
            Err(e) => from_image_error(e),
        };
    }
    let split = ["/blobs/uploads", "/blobs/", "/manifests/", "/tags/list"]
        .iter()
        .find_map(|m| rest.find(m).map(|i| (i, *m)));
    let Some((i, kind)) = split else {
        return err(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("no route for /v2/{rest}"),
        );
    };
    let name = &rest[..i];
    let arg = rest[i + kind.len()..].trim_start_matches('/');
    let repository = match Reference::parse(name) {
        Ok(r) => r.repository,
        Err(e) => return from_image_error(e),
    };
    match (kind, &method) {
        ("/manifests/", &Method::GET | &Method::HEAD) => {
            match images.get_manifest(&repository, arg).await {
                Ok(m) => {
                    let mut r = if method == Method::HEAD {
                        Response::new(Body::empty())
                    } else {
                        Response::new(Body::from(m.bytes.clone()))
                    };
                    let h = r.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_str(&m.media_type)
                            .unwrap_or(HeaderValue::from_static("application/json")),
                    );
                    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.bytes.len()));
                    h.insert(
                        "docker-content-digest",
                        HeaderValue::from_str(&m.digest).expect("digest is ascii"),
                    );
                    if let Some(v) = m
                        .pulled_from
                        .as_deref()
                        .and_then(|f| HeaderValue::from_str(f).ok())
                    {
                        h.insert(PULLED_FROM, v);
                    }
                    r
                }
                Err(e) => from_image_error(e),
            }
        }
        ("/manifests/", &Method::PUT) => {
            let bytes = match read_all(body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let media = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/vnd.oci.image.manifest.v1+json")
                .to_string();
            let tag = (!arg.starts_with("sha256:")).then_some(arg);
            let from = headers
                .get(PULLED_FROM)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 255);
            match images
                .put_manifest_from(&repository, tag, &media, &bytes, from)
                .await
            {
                Ok(digest) => created(&format!("/v2/{name}/manifests/{digest}"), &digest),
                Err(e) => from_image_error(e),
            }
        }
        ("/manifests/", &Method::DELETE) => match images.delete(&repository, arg).await {
            Ok(d) => {
                tracing::info!(
                    repository = %repository,
                    reference = %arg,
                    tags = d.tags.len(),
                    manifests = d.manifests.len(),
                    blobs = d.blobs,
                    bytes = d.bytes,
                    "image deleted"
                );
                (StatusCode::ACCEPTED, "").into_response()
            }
            Err(e) => from_image_error(e),
        },
        ("/tags/list", &Method::GET) if arg.is_empty() => match images.tags(&repository).await {
            Ok(tags) => json_ok(
                json!({"name": repository, "tags": page(tags.into_keys().collect(), raw_query)}),
            ),
            Err(e) => from_image_error(e),
        },
        ("/blobs/", &Method::GET | &Method::HEAD) => {
            if method == Method::HEAD {
                return match images.has_blob(arg).await {
                    Ok(Some(size)) => {
                        let mut r = Response::new(Body::empty());
                        r.headers_mut()
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
                        r.headers_mut().insert(
                            "docker-content-digest",
                            HeaderValue::from_str(arg).unwrap_or(HeaderValue::from_static("")),
                        );
                        r
                    }
                    Ok(None) => err(
                        StatusCode::NOT_FOUND,
                        "BLOB_UNKNOWN",
                        format!("blob {arg} not found"),
                    ),
                    Err(e) => from_image_error(e),
                };
            }
            match images.get_blob(arg).await {
                Ok(b) => {
                    let mut r = Response::new(Body::from(b));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    r.headers_mut().insert(
                        "docker-content-digest",
                        HeaderValue::from_str(arg).unwrap_or(HeaderValue::from_static("")),
                    );
                    r
                }
                Err(e) => from_image_error(e),
            }
        }
        ("/blobs/uploads", &Method::POST) => {
            if let Some(d) = query(raw_query, "digest") {
                // Monolithic: the body is the blob.
                match images.has_blob(&d).await {
                    Ok(Some(_)) => {
                        drain(body).await;
                        return created(&format!("/v2/{name}/blobs/{d}"), &d);
                    }
                    Ok(None) => {}
                    Err(e) => return from_image_error(e),
                }
                return match stream_into(body, images.writer()).await {
                    Ok(w) => match w.commit(&d).await {
                        Ok(()) => created(&format!("/v2/{name}/blobs/{d}"), &d),
                        Err(e) => from_image_error(e),
                    },
                    Err(r) => r,
                };
            }
            if uploads.open_in(name) >= MAX_SESSIONS_PER_REPO {
                drain(body).await;
                return err(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOOMANYREQUESTS",
                    format!(
                        "{name} has {MAX_SESSIONS_PER_REPO} uploads in progress; finish or cancel one first"
                    ),
                );
            }
            let w = match stream_into(body, images.writer()).await {
                Ok(w) => w,
                Err(r) => return r,
            };
            let id = crate::model::meta::new_uid();
            let size = w.size();
            uploads.put(id.clone(), name, w);
            upload_status(StatusCode::ACCEPTED, name, &id, size)
        }
        ("/blobs/uploads", &Method::GET) => match uploads.size(arg) {
            Some(size) => upload_status(StatusCode::NO_CONTENT, name, arg, size),
            None => upload_unknown(arg),
        },
        ("/blobs/uploads", &Method::DELETE) => match uploads.take(arg) {
            Some(w) => {
                w.abort().await;
                (StatusCode::NO_CONTENT, "").into_response()
            }
            None => upload_unknown(arg),
        },
        ("/blobs/uploads", &Method::PATCH | &Method::PUT) => {
            let id = arg.to_string();
            let Some(w) = uploads.take(&id) else {
                return upload_unknown(&id);
            };
            // A chunk must start where the upload stands.
            let start = headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim_start_matches("bytes ").split('-').next())
                .and_then(|s| s.trim().parse::<u64>().ok());
            if let Some(start) = start
                && start != w.size()
            {
                let size = w.size();
                uploads.put(id.clone(), name, w);
                let mut r = upload_status(StatusCode::RANGE_NOT_SATISFIABLE, name, &id, size);
                *r.body_mut() = Body::from(
                    json!({"errors": [{"code": "BLOB_UPLOAD_INVALID",
                        "message": format!("chunk starts at {start}, the upload is at {size}")}]})
                    .to_string(),
                );
                return r;
            }
            let w = match stream_into(body, w).await {
                Ok(w) => w,
                Err(r) => return r,
            };
            if method == Method::PATCH {
                let size = w.size();
                uploads.put(id.clone(), name, w);
                return upload_status(StatusCode::ACCEPTED, name, &id, size);
            }
            let Some(d) = query(raw_query, "digest") else {
                w.abort().await;
                return err(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "the final PUT of an upload needs ?digest=",
                );
            };
            match w.commit(&d).await {
                Ok(()) => created(&format!("/v2/{name}/blobs/{d}"), &d),
                Err(e) => from_image_error(e),
            }
        }
        _ => err(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!("{method} on /v2/{rest}"),
        ),
    }
}

fn upload_unknown(id: &str) -> Response {
    err(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        format!("upload {id} not found"),
    )
}

fn created(location: &str, digest: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::CREATED;
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(location).expect("ascii"),
    );
    r.headers_mut().insert(
        "docker-content-digest",
        HeaderValue::from_str(digest).expect("ascii"),
    );
    r
}
