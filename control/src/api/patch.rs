//! PATCH in its four media types (JSON patch, merge patch, strategic merge patch,
//! server-side apply) and the `scale` subresource.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::model::ResourceType;

use super::{apply, body, strategic};
use crate::model::status::{ApiError, ApiResult};
use crate::storage::{
    Attempt, FieldValidation, Objects, WriteOptions, Written, qualified, until_not_raced,
};

/// Options of a PATCH request.
#[derive(Debug, Clone)]
pub struct PatchOptions {
    pub field_validation: FieldValidation,
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub force: bool,
}

impl PatchOptions {
    pub fn write_options(&self) -> WriteOptions {
        WriteOptions {
            field_validation: self.field_validation,
            dry_run: self.dry_run,
            manager: self
                .field_manager
                .clone()
                .unwrap_or_else(|| "unknown".into()),
            apply_fields: None,
        }
    }
}

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_media(ct: &str) -> ApiResult<PatchType> {
        match ct {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media(other)),
        }
    }
}

/// The most operations a JSON patch may have, as Kubernetes.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Apply a JSON patch one operation at a time, with Kubernetes' bounds: at
/// most [`MAX_JSON_PATCH_OPERATIONS`], and `copy` operations that together
/// copy at most a request body's worth of JSON (else a patch that copies an
/// object onto itself doubles it with every operation). `out` is the caller's
/// copy: on an error it is dropped.
fn json_patch_bounded(out: &mut Value, p: &json_patch::Patch) -> ApiResult<()> {
    if p.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                p.0.len()
            ),
        ));
    }
    let mut copied = 0usize;
    for (i, op) in p.0.iter().enumerate() {
        if let json_patch::PatchOperation::Copy(c) = op
            && let Some(v) = out.pointer(c.from.as_str())
        {
            copied += serde_json::to_vec(v).map_or(0, |b| b.len());
            if copied > body::MAX_BODY {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    format!(
                        "Request entity too large: the json patch's copy operations copy more than {} bytes (operation {i})",
                        body::MAX_BODY
                    ),
                ));
            }
        }
        json_patch::patch(out, std::slice::from_ref(op)).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!(
                    "the json patch could not be applied: operation {i}: {}",
                    e.kind
                ),
            )
        })?;
    }
    Ok(())
}

/// Apply a non-apply patch document to `target`.
pub fn apply_patch(pt: PatchType, target: &Value, doc: &[u8]) -> ApiResult<Value> {
    let mut out = target.clone();
    match pt {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(doc)
                .map_err(|e| ApiError::bad_request(format!("invalid json patch: {e}")))?;
            json_patch_bounded(&mut out, &p)?;
        }
        PatchType::Merge => {
            let p = body::json(doc)?;
            json_patch::merge(&mut out, &p);
        }
        PatchType::Strategic => {
            let p = body::json(doc)?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be an object",
                ));
            }
            strategic::apply(&mut out, &p);
        }
        PatchType::Apply => unreachable!("server-side apply is handled by the apply module"),
    }
    Ok(out)
}

/// PATCH an object (or its `status` or `scale`).
#[allow(clippy::too_many_arguments)]
pub async fn patch(
    o: &Objects,
    t: &ResourceType,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    ct: &str,
    doc: &[u8],
    opts: &PatchOptions,
) -> ApiResult<Written> {
    let pt = PatchType::from_media(ct)?;
    if pt == PatchType::Apply {
        if sub.is_some() {
            return Err(ApiError::method_not_allowed("apply on a subresource"));
        }
        return apply::server_side_apply(o, t, ns, name, doc, opts).await;
    }
    // Retry when someone else wrote in between, unless the patch pins a version.
    until_not_raced(|| async {
        let current = o.get(t, ns, name).await?;
        let rv = current
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        match sub {
            Some("scale") => {
                let scale = apply_patch(pt, &scale_of(&current), doc)?;
                Ok(set_scale(o, t, ns, name, &scale, &opts.write_options()).await?)
            }
            _ => {
                let mut patched = apply_patch(pt, &current, doc)?;
                let pinned = patched.pointer("/metadata/resourceVersion") != Some(&rv);
                if !pinned
                    && let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    m.insert("resourceVersion".into(), rv.clone());
                }
                o.update(t, ns, name, patched, sub, &opts.write_options())
                    .await
                    .map_err(|e| Attempt::of(e, pinned))
            }
        }
    })
    .await
}

fn selector_of(obj: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(Value::Object(m)) = obj.pointer("/spec/selector/matchLabels") {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    parts.join(",")
}

/// The autoscaling/v1 Scale view of a scalable object.
pub fn scale_of(obj: &Value) -> Value {
    let md = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut meta = json!({});
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = md.get(k) {
            meta[k] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_of(obj),
        },
    })
}

/// Write `spec.replicas` from a Scale object.
pub async fn set_scale(
    o: &Objects,
    t: &ResourceType,
    ns: Option<&str>,
    name: &str,
    scale: &Value,
    wo: &WriteOptions,
) -> ApiResult<Written> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_request("spec.replicas is required"))?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            name,
            vec![crate::model::validate::Cause::invalid(
                "spec.replicas",
                &replicas.to_string(),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut current = o.get(t, ns, name).await?;
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !rv.is_empty()
        && current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            != Some(rv)
    {
        return Err(ApiError::conflict(&qualified(t), name));
    }
    current["spec"]["replicas"] = json!(replicas);
    let wo = WriteOptions {
        field_validation: FieldValidation::Ignore,
        ..wo.clone()
    };
    let w = o.update(t, ns, name, current, None, &wo).await?;
    Ok(Written {
        created: w.created,
        object: scale_of(&w.object),
        warnings: w.warnings,
        audit: w.audit,
    })
}
