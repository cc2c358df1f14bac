//! The OCI distribution endpoint (`/v2/`) over the cluster's image store: pull
//! (manifests and blobs by tag or digest) and push (monolithic or chunked uploads,
//! manifests), so any OCI client, `skiff image import` and the nodes use one API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::images::{ImageError, Images, Reference};

/// Largest blob or manifest accepted in one request.
const MAX_UPLOAD: usize = 512 * 1024 * 1024;

/// Upload sessions in progress on this server.
#[derive(Clone, Default)]
pub struct Uploads(Arc<Mutex<HashMap<String, Vec<u8>>>>);

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
        ImageError::MissingBlob(_) => err(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            e.to_string(),
        ),
        ImageError::NotFound { what: "blob", .. } => {
            err(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", e.to_string())
        }
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
    axum::body::to_bytes(body, MAX_UPLOAD)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| {
            err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!("uploads are limited to {MAX_UPLOAD} bytes"),
            )
        })
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
    let split = ["/blobs/uploads", "/blobs/", "/manifests/"]
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
            match images.put_manifest(&repository, tag, &media, &bytes).await {
                Ok(digest) => created(&format!("/v2/{name}/manifests/{digest}"), &digest),
                Err(e) => from_image_error(e),
            }
        }
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
            let bytes = match read_all(body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            if let Some(d) = query(raw_query, "digest") {
                return match images.put_blob(&d, &bytes).await {
                    Ok(()) => created(&format!("/v2/{name}/blobs/{d}"), &d),
                    Err(e) => from_image_error(e),
                };
            }
            let id = super::objects::new_uid();
            uploads.0.lock().unwrap().insert(id.clone(), bytes);
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::ACCEPTED;
            r.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&format!("/v2/{name}/blobs/uploads/{id}")).expect("ascii"),
            );
            r.headers_mut().insert(
                "docker-upload-uuid",
                HeaderValue::from_str(&id).expect("ascii"),
            );
            r.headers_mut()
                .insert(header::RANGE, HeaderValue::from_static("0-0"));
            r
        }
        ("/blobs/uploads", &Method::PATCH | &Method::PUT) => {
            let bytes = match read_all(body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let id = arg.to_string();
            let total = {
                let mut up = uploads.0.lock().unwrap();
                let Some(buf) = up.get_mut(&id) else {
                    return err(
                        StatusCode::NOT_FOUND,
                        "BLOB_UPLOAD_UNKNOWN",
                        format!("upload {id} not found"),
                    );
                };
                buf.extend_from_slice(&bytes);
                buf.len()
            };
            if method == Method::PATCH {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::ACCEPTED;
                r.headers_mut().insert(
                    header::LOCATION,
                    HeaderValue::from_str(&format!("/v2/{name}/blobs/uploads/{id}"))
                        .expect("ascii"),
                );
                r.headers_mut().insert(
                    header::RANGE,
                    HeaderValue::from_str(&format!("0-{}", total.saturating_sub(1)))
                        .expect("ascii"),
                );
                return r;
            }
            let Some(d) = query(raw_query, "digest") else {
                return err(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "the final PUT of an upload needs ?digest=",
                );
            };
            let data = uploads.0.lock().unwrap().remove(&id).unwrap_or_default();
            match images.put_blob(&d, &data).await {
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
