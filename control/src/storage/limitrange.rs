//! LimitRange admission of pods and claims, as Kubernetes' LimitRanger: a
//! container without a limit or request gets its namespace's `default` /
//! `defaultRequest`, then every container (type `Container`), the pod's sums
//! (type `Pod`) and a claim's storage (type `PersistentVolumeClaim`) are held
//! to `min`, `max` and `maxLimitRequestRatio`; a breach is a 403 listing
//! each one.

use serde_json::{Map, Value, json};

use crate::model::ResourceType;
use crate::model::meta::name_of;
use crate::model::status::{ApiError, ApiResult};

use super::{Objects, qualified};

fn qty(v: &Value) -> Option<f64> {
    v.as_str().and_then(skiff_common::quantity::parse)
}

fn map(v: &Value, key: &str) -> Map<String, Value> {
    v.get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Fill a container's missing limits from `default` and missing requests
/// from `defaultRequest` (else `default`).
fn apply_defaults(c: &mut Value, item: &Value) {
    let default = map(item, "default");
    let mut default_request = map(item, "defaultRequest");
    for (k, v) in &default {
        default_request.entry(k.clone()).or_insert(v.clone());
    }
    if default.is_empty() && default_request.is_empty() {
        return;
    }
    let res = c
        .as_object_mut()
        .map(|o| o.entry("resources").or_insert(json!({})));
    let Some(res) = res.and_then(Value::as_object_mut) else {
        return;
    };
    for (field, values) in [("limits", &default), ("requests", &default_request)] {
        if values.is_empty() {
            continue;
        }
        let slot = res.entry(field).or_insert(json!({}));
        if let Some(m) = slot.as_object_mut() {
            for (k, v) in values {
                m.entry(k.clone()).or_insert(v.clone());
            }
        }
    }
}

/// The breaches of `min`/`max`/`maxLimitRequestRatio` by one set of
/// requests and limits, worded as Kubernetes words them for `what`.
fn check(
    item: &Value,
    what: &str,
    requests: &Map<String, Value>,
    limits: &Map<String, Value>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (res, min) in map(item, "min") {
        let m = qty(&min).unwrap_or(0.0);
        let ms = min.as_str().unwrap_or("");
        match requests.get(&res).and_then(qty) {
            None => out.push(format!(
                "minimum {res} usage per {what} is {ms}.  No request is specified"
            )),
            Some(r) if r < m => out.push(format!(
                "minimum {res} usage per {what} is {ms}, but request is {}",
                requests[&res].as_str().unwrap_or("")
            )),
            _ => {}
        }
    }
    for (res, max) in map(item, "max") {
        let m = qty(&max).unwrap_or(f64::MAX);
        let ms = max.as_str().unwrap_or("");
        match limits.get(&res).and_then(qty) {
            None => out.push(format!(
                "maximum {res} usage per {what} is {ms}.  No limit is specified"
            )),
            Some(l) if l > m => out.push(format!(
                "maximum {res} usage per {what} is {ms}, but limit is {}",
                limits[&res].as_str().unwrap_or("")
            )),
            _ => {}
        }
    }
    for (res, ratio) in map(item, "maxLimitRequestRatio") {
        let r = qty(&ratio).unwrap_or(f64::MAX);
        if let (Some(l), Some(q)) = (
            limits.get(&res).and_then(qty),
            requests.get(&res).and_then(qty),
        ) && q > 0.0
            && l / q > r + 1e-9
        {
            out.push(format!(
                "{res} max limit to request ratio per {what} is {}, but provided ratio is {:.6}",
                ratio.as_str().unwrap_or(""),
                l / q
            ));
        }
    }
    out
}

fn sum(containers: &[Value], field: &str) -> Map<String, Value> {
    let mut totals: std::collections::BTreeMap<String, f64> = Default::default();
    for c in containers {
        for (k, v) in map(c.get("resources").unwrap_or(&Value::Null), field) {
            *totals.entry(k).or_default() += qty(&v).unwrap_or(0.0);
        }
    }
    totals
        .into_iter()
        .map(|(k, v)| (k.clone(), json!(crate::model::quota::format(&k, v))))
        .collect()
}

impl Objects {
    /// LimitRange admission of creating `obj` (of `t`, in `ns`): defaults
    /// filled in place, or the refusal.
    pub(super) async fn admit_limit_ranges(
        &self,
        t: &ResourceType,
        ns: &str,
        obj: &mut Value,
    ) -> ApiResult<()> {
        let kind = match (t.group, t.kind) {
            ("", "Pod") => "Pod",
            ("", "PersistentVolumeClaim") => "PersistentVolumeClaim",
            _ => return Ok(()),
        };
        let Some(lt) = self.registry.by_kind("v1", "LimitRange").cloned() else {
            return Ok(());
        };
        let ranges = self.list_local(&lt, ns)?;
        if ranges.is_empty() {
            return Ok(());
        }
        let items: Vec<Value> = ranges
            .iter()
            .flat_map(|r| {
                r.pointer("/spec/limits")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let of_type = |ty: &'static str| {
            items
                .iter()
                .filter(move |i| i.get("type").and_then(Value::as_str) == Some(ty))
        };
        let mut breaches = Vec::new();
        if kind == "Pod" {
            for key in ["initContainers", "containers"] {
                let Some(cs) = obj
                    .pointer_mut(&format!("/spec/{key}"))
                    .and_then(Value::as_array_mut)
                else {
                    continue;
                };
                for c in cs.iter_mut() {
                    for item in of_type("Container") {
                        apply_defaults(c, item);
                    }
                    let res = c.get("resources").cloned().unwrap_or(Value::Null);
                    for item in of_type("Container") {
                        breaches.extend(check(
                            item,
                            "Container",
                            &map(&res, "requests"),
                            &map(&res, "limits"),
                        ));
                    }
                }
            }
            let containers: Vec<Value> = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in of_type("Pod") {
                breaches.extend(check(
                    item,
                    "Pod",
                    &sum(&containers, "requests"),
                    &sum(&containers, "limits"),
                ));
            }
        } else {
            let res = obj
                .pointer("/spec/resources")
                .cloned()
                .unwrap_or(Value::Null);
            for item in of_type("PersistentVolumeClaim") {
                breaches.extend(check(
                    item,
                    "PersistentVolumeClaim",
                    &map(&res, "requests"),
                    &map(&res, "limits"),
                ));
            }
        }
        if breaches.is_empty() {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: [{}]",
            qualified(t),
            name_of(obj),
            breaches.join(", ")
        )))
    }
}
