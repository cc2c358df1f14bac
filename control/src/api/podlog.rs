//! `pods/{name}/log`: find the pod's node and container, then stream the
//! container's log from that node's agent (its address and port are in the
//! Node's status), as the API server proxies to the kubelet.
//!
//! **Errors a client can fix (no node yet, unknown or unspecified container)
//! are answered here with a Status; the agent is only asked for real logs.**

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::model::status::{ApiError, ApiResult};
use crate::storage::Objects;
use std::collections::HashMap;

pub(super) fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The container a log request means: the named one, or the only one.
pub(super) fn container(pod: &Value, name: &str, asked: Option<&str>) -> ApiResult<String> {
    let names: Vec<&str> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    match asked {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => match s(pod, "/spec/containers/0/name") {
            only if pod.pointer("/spec/containers/1").is_none() && !only.is_empty() => {
                Ok(only.to_string())
            }
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            ))),
        },
    }
}

/// The pod (by namespace and name) and the base URL of its node's agent API.
pub(super) async fn pod_and_agent(
    objects: &Objects,
    ns: &str,
    name: &str,
    what: &str,
) -> ApiResult<(Value, String)> {
    let pods = objects
        .registry
        .by_kind("v1", "Pod")
        .cloned()
        .ok_or_else(|| ApiError::internal("no pod type"))?;
    let pod = objects.get(&pods, Some(ns), name).await?;
    let node_name = s(&pod, "/spec/nodeName");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} is not scheduled to a node yet, so it has no {what}"
        )));
    }
    let base = agent_of(objects, node_name).await?;
    Ok((pod, base))
}

/// The base URL of node `node_name`'s agent API.
async fn agent_of(objects: &Objects, node_name: &str) -> ApiResult<String> {
    let nodes = objects
        .registry
        .by_kind("v1", "Node")
        .cloned()
        .ok_or_else(|| ApiError::internal("no node type"))?;
    let node = objects.get(&nodes, None, node_name).await?;
    crate::agents::base_url(&node)
        .ok_or_else(|| unavailable(format!("node {node_name} publishes no agent endpoint")))
}

/// GET `url` from node `node_name`'s agent (503 if it does not answer).
async fn agent_get(node_name: &str, url: &str, agent_token: &str) -> ApiResult<reqwest::Response> {
    crate::agents::client()
        .get(url)
        .bearer_auth(agent_token)
        .send()
        .await
        .map_err(|e| unavailable(format!("node {node_name}: {e}")))
}

/// Stream a container's log from its node's agent.
pub async fn pod_log(
    objects: &Objects,
    agent_token: &str,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let (pod, base) = pod_and_agent(objects, ns, name, "logs").await?;
    let c = container(&pod, name, q.get("container").map(String::as_str))?;
    let node_name = s(&pod, "/spec/nodeName");
    let mut url = format!("{base}/containerLogs/{ns}/{name}/{c}");
    let params: Vec<String> = [
        "follow",
        "previous",
        "tailLines",
        "limitBytes",
        "timestamps",
    ]
    .iter()
    .filter_map(|k| q.get(*k).map(|v| format!("{k}={v}")))
    .collect();
    if !params.is_empty() {
        url = format!("{url}?{}", params.join("&"));
    }
    let resp = agent_get(node_name, &url, agent_token).await?;
    let code = resp.status();
    if code == reqwest::StatusCode::BAD_REQUEST || code == reqwest::StatusCode::NOT_FOUND {
        let msg = resp.text().await.unwrap_or_default();
        return Err(if code == reqwest::StatusCode::NOT_FOUND {
            ApiError::new(StatusCode::NOT_FOUND, "NotFound", msg.trim().to_string())
        } else {
            ApiError::bad_request(msg.trim().to_string())
        });
    }
    if !code.is_success() {
        return Err(unavailable(format!("node {node_name} answered {code}")));
    }
    let body = Body::from_stream(resp.bytes_stream());
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response())
}

/// `GET /api/v1/nodes/{node}/proxy/{path}`: the node agent's own endpoints
/// (`/metrics`, `/stats/summary`, `/healthz`) through the API server, which
/// alone holds a client certificate the agent admits (RBAC: `get
/// nodes/proxy`).
pub async fn node_proxy(
    objects: &Objects,
    agent_token: &str,
    node_name: &str,
    path: &str,
    query: Option<&str>,
) -> ApiResult<Response> {
    let base = agent_of(objects, node_name).await?;
    let mut url = format!("{base}/{}", path.trim_start_matches('/'));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url = format!("{url}?{q}");
    }
    let resp = agent_get(node_name, &url, agent_token).await?;
    let code = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    let body = Body::from_stream(resp.bytes_stream());
    Ok((code, [(header::CONTENT_TYPE, content_type)], body).into_response())
}
