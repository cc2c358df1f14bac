//! Request bodies: size limit, media type, JSON or YAML into a JSON value.

use axum::body::Body;
use axum::http::HeaderMap;
use serde_json::Value;

use crate::model::status::{ApiError, ApiResult};

/// Largest request body accepted (as the Kubernetes API server: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Past this, an oversized body is not even drained: the connection is dropped.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Read a body of at most [`MAX_BODY`] bytes. A larger one is drained (not kept) so
/// the client gets a clean 413 instead of a reset connection.
pub async fn read(mut body: Body) -> ApiResult<bytes::Bytes> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if total > DRAIN_LIMIT {
                return Err(ApiError::too_large(MAX_BODY));
            }
        }
    }
    if total > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(buf.freeze())
}

/// The media type of the request, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Parse a YAML document into JSON. Aliases are bounded by the parser (a "billion
/// laughs" document fails fast instead of expanding).
pub fn yaml(bytes: &[u8]) -> ApiResult<Value> {
    serde_norway::from_slice::<Value>(bytes)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

pub fn json(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice::<Value>(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

/// Decode an object body of a create or update.
pub fn object(
    headers: &HeaderMap,
    bytes: &[u8],
    registry: &crate::model::Registry,
) -> ApiResult<Value> {
    let ct = content_type(headers);
    let v = match ct.as_str() {
        "application/json" | "" | "*/*" => json(bytes)?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => yaml(bytes)?,
        super::protobuf::MEDIA_TYPE => super::protobuf::decode(bytes, registry)?,
        other => return Err(ApiError::unsupported_media(other)),
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billion_laughs_is_rejected_quickly() {
        let mut doc = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for c in 'b'..='i' {
            doc.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = c;
        }
        let t = std::time::Instant::now();
        let err = yaml(doc.as_bytes()).unwrap_err();
        // Refused for its expansion, not for some other parse error.
        assert!(err.message.contains("repetition limit"), "{}", err.message);
        eprintln!("refused in {:?}", t.elapsed());
    }
}
