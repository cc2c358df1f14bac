//! What the autoscalers read from the metrics APIs, through the API like any
//! client: per-pod CPU and memory (`metrics.k8s.io/v1beta1` PodMetrics), per-pod
//! custom metrics and Service metrics (`custom.metrics.k8s.io/v1beta2`).

use std::collections::HashMap;

use serde_json::Value;

use super::framework::{ControllerError, Result};

/// Per-pod usage: CPU in millicores and memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_millis: f64,
    pub memory_bytes: f64,
}

async fn get(client: &kube::Client, path: &str) -> Result<Option<Value>> {
    let req = axum::http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| ControllerError::Invalid(e.to_string()))?;
    match client.request::<Value>(req).await {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Percent-encode a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn quantity(v: &Value) -> Option<f64> {
    v.as_str().and_then(skiff_common::quantity::parse)
}

/// CPU and memory of the pods of `ns` that `selector` picks, by pod name.
pub async fn pod_usage(
    client: &kube::Client,
    ns: &str,
    selector: &str,
) -> Result<HashMap<String, Usage>> {
    let path = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={}",
        enc(selector)
    );
    let mut out = HashMap::new();
    let Some(list) = get(client, &path).await? else {
        return Ok(out);
    };
    for item in list["items"].as_array().into_iter().flatten() {
        let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let mut u = Usage::default();
        for c in item["containers"].as_array().into_iter().flatten() {
            u.cpu_millis += quantity(&c["usage"]["cpu"]).unwrap_or(0.0) * 1000.0;
            u.memory_bytes += quantity(&c["usage"]["memory"]).unwrap_or(0.0);
        }
        out.insert(name.to_string(), u);
    }
    Ok(out)
}

/// A custom metric of the pods of `ns` that `selector` picks, by pod name.
pub async fn pod_metric(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    metric: &str,
) -> Result<HashMap<String, f64>> {
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/{}?labelSelector={}",
        enc(metric),
        enc(selector)
    );
    let mut out = HashMap::new();
    let Some(list) = get(client, &path).await? else {
        return Ok(out);
    };
    for item in list["items"].as_array().into_iter().flatten() {
        if let (Some(name), Some(v)) = (
            item.pointer("/describedObject/name")
                .and_then(Value::as_str),
            quantity(&item["value"]),
        ) {
            out.insert(name.to_string(), v);
        }
    }
    Ok(out)
}

/// A custom metric of one Service (`None`: no node reported it).
pub async fn service_metric(
    client: &kube::Client,
    ns: &str,
    service: &str,
    metric: &str,
) -> Result<Option<f64>> {
    let path =
        format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/services/{service}/{metric}");
    let Some(v) = get(client, &path).await? else {
        return Ok(None);
    };
    Ok(v["items"]
        .as_array()
        .and_then(|i| i.first())
        .and_then(|i| quantity(&i["value"]))
        .or_else(|| quantity(&v["value"])))
}

/// `matchLabels` and `matchExpressions` as a label selector string.
pub fn selector_string(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => continue,
        });
    }
    parts.join(",")
}
