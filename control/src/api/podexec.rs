//! `pods/{name}/exec` over a WebSocket (`v5.channel.k8s.io`, or
//! `v4.channel.k8s.io`), as `kubectl exec` speaks it: the request is upgraded,
//! the command runs on the pod's node through its agent, and its output comes
//! back on channels 1 (stdout) and 2 (stderr), its end as a `Status` on
//! channel 3.
//!
//! **Every exec ends with a Status on the error channel (success, a non-zero
//! exit code, or the reason it could not run), then a close; a client is never
//! left waiting on an open socket.**

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::Response;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::podlog::{container, pod_and_agent, unavailable};
use super::request::{query_all, query_map};
use crate::model::status::{ApiError, ApiResult};
use crate::storage::Objects;

/// The stream protocols served, best first.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;

/// Whether a request asks for a WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The WebSocket subprotocols a request offers.
pub(super) fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect()
}

/// The `Sec-WebSocket-Accept` answer to a WebSocket upgrade request.
pub(super) fn accept_key(headers: &HeaderMap) -> ApiResult<String> {
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .ok_or_else(|| ApiError::bad_request("a WebSocket upgrade needs Sec-WebSocket-Key"))
}

/// The Status an exec ends with.
fn end_status(command: &[String], exit_code: Option<i64>, error: Option<String>) -> Value {
    match (exit_code, error) {
        (_, Some(message)) => json!({"metadata": {}, "status": "Failure", "message": message,
            "reason": "InternalError", "code": 500}),
        (Some(0) | None, None) => json!({"metadata": {}, "status": "Success"}),
        (Some(code), None) => json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}}),
    }
}

/// What the agent answered: stdout, stderr, exit code, or why it could not run.
async fn run_on_agent(
    agent_token: &str,
    ns: &str,
    name: &str,
    container: &str,
    base: &str,
    command: &[String],
) -> Result<(Vec<u8>, Vec<u8>, i64), String> {
    let resp = crate::agents::client()
        .post(format!("{base}/exec/{ns}/{name}/{container}"))
        .bearer_auth(agent_token)
        .json(&json!({"command": command}))
        .send()
        .await
        .map_err(|e| format!("cannot reach the pod's node: {e}"))?;
    let code = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !code.is_success() {
        return Err(text.trim().to_string());
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("agent answer: {e}"))?;
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v[k].as_str().unwrap_or(""))
            .unwrap_or_default()
    };
    Ok((
        b64("stdout"),
        b64("stderr"),
        v["exitCode"].as_i64().unwrap_or(0),
    ))
}

/// Answer `pods/{name}/exec`: upgrade, then run the command and stream back.
pub async fn pod_exec(
    objects: &Objects,
    agent_token: String,
    ns: String,
    name: String,
    mut parts: Parts,
) -> ApiResult<Response> {
    let raw = parts.uri.query().map(str::to_string);
    let q = query_map(raw.as_deref());
    let command = query_all(raw.as_deref(), "command");
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let (pod, base) = pod_and_agent(objects, &ns, &name, "containers to exec into").await?;
    let c = container(&pod, &name, q.get("container").map(String::as_str))?;
    if !is_upgrade(&parts.headers) {
        return Err(ApiError::bad_request(format!(
            "exec needs a WebSocket upgrade with one of the protocols {}",
            PROTOCOLS.join(", ")
        )));
    }
    let offered = offered_protocols(&parts.headers);
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return Err(ApiError::bad_request(format!(
            "none of the offered stream protocols [{}] is served; use one of {}",
            offered.join(", "),
            PROTOCOLS.join(", ")
        )));
    };
    let key = accept_key(&parts.headers)?;
    let on_upgrade = take_upgrade(&mut parts)?;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "exec upgrade failed");
                return;
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (mut tx, mut rx) = ws.split();
        // Whatever the client sends (stdin, resize, close) is read and dropped:
        // exec runs commands to their end without input.
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        let (exit, error) = match run_on_agent(&agent_token, &ns, &name, &c, &base, &command).await
        {
            Ok((out, err, code)) => {
                for (ch, data) in [(STDOUT, out), (STDERR, err)] {
                    if !data.is_empty() {
                        let mut frame = vec![ch];
                        frame.extend_from_slice(&data);
                        let _ = tx.send(Message::Binary(frame.into())).await;
                    }
                }
                (Some(code), None)
            }
            Err(e) => (None, Some(e)),
        };
        let mut frame = vec![ERROR];
        frame.extend(serde_json::to_vec(&end_status(&command, exit, error)).unwrap_or_default());
        let _ = tx.send(Message::Binary(frame.into())).await;
        // A normal close is the end of every stream for the client.
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = tx.send(Message::Close(Some(close))).await;
        reader.abort();
    });
    Ok(switching_to_websocket(protocol, &key))
}

/// The connection's upgrade, which the 101 answer hands over.
pub(super) fn take_upgrade(parts: &mut Parts) -> ApiResult<hyper::upgrade::OnUpgrade> {
    parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| unavailable("this connection cannot be upgraded".into()))
}

/// The 101 answer to a WebSocket upgrade with `protocol`.
pub(super) fn switching_to_websocket(protocol: &'static str, accept: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_statuses() {
        let cmd = vec!["false".to_string()];
        assert_eq!(end_status(&cmd, Some(0), None)["status"], "Success");
        let s = end_status(&cmd, Some(3), None);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let e = end_status(&cmd, None, Some("no such container".into()));
        assert_eq!(e["message"], "no such container");
    }
}
