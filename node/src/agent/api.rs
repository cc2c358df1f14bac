//! The agent's own HTTP API, which the API server calls on behalf of clients:
//! `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `previous`,
//! `tailLines` and `limitBytes`, as the kubelet serves it; and
//! `POST /exec/{namespace}/{pod}/{container}` (`{"command": [...]}`), which
//! runs a command in a running container image to its end and answers its
//! output (base64) and exit code; and `GET /portForward/{namespace}/{pod}/{port}?ip=`
//! upgraded to a raw byte stream joined to `localhost:{port}` inside the pod's
//! network namespace (the pod with that IP), for `kubectl port-forward`.
//!
//! **Served over mutual TLS: only callers with a client certificate of the
//! cluster CA that present the cluster's join token are served.**

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;

use super::pods::Pods;
use crate::net::{PodNetwork, netns};
use crate::pod::Tasks;
use crate::pod::logs::{self, LogDir};

#[derive(Clone)]
struct AgentApi {
    token: String,
    logs: LogDir,
    pods: Pods,
    tasks: Tasks,
    net: PodNetwork,
    stats: std::sync::Arc<crate::stats::Stats>,
    metrics: std::sync::Arc<super::metrics::AgentMetrics>,
}

/// Serve the agent API on `listener` until it fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    token: String,
    ctx: std::sync::Arc<crate::pod::NodeCtx>,
    pods: Pods,
    metrics: std::sync::Arc<super::metrics::AgentMetrics>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", post(exec))
        .route("/portForward/{ns}/{pod}/{port}", get(port_forward))
        .route("/stats/summary", get(stats_summary))
        .route("/metrics", get(prometheus))
        .with_state(AgentApi {
            token,
            logs: ctx.logs.clone(),
            pods,
            tasks: ctx.tasks.clone(),
            net: ctx.net.clone(),
            stats: ctx.stats.clone(),
            metrics,
        });
    super::tls::serve(listener, tls, app).await;
    Ok(())
}

/// The node's resource and traffic figures (`skiff_common::stats::Summary`).
async fn stats_summary(State(s): State<AgentApi>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &s.token) {
        return text(StatusCode::UNAUTHORIZED, "unauthorized\n".into());
    }
    axum::Json(s.stats.summary()).into_response()
}

/// Prometheus text metrics of the node.
async fn prometheus(State(s): State<AgentApi>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &s.token) {
        return text(StatusCode::UNAUTHORIZED, "unauthorized\n".into());
    }
    let body = s.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn text(code: StatusCode, msg: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], msg).into_response()
}

/// Whether the caller shows the join token.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}

#[derive(serde::Deserialize)]
struct ExecRequest {
    command: Vec<String>,
}

async fn exec(
    State(s): State<AgentApi>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Json(req): axum::Json<ExecRequest>,
) -> Response {
    if !authorized(&headers, &s.token) {
        return text(StatusCode::UNAUTHORIZED, "unauthorized".into());
    }
    if s.pods.uid(&ns, &pod).is_none() {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} is not on this node"),
        );
    }
    let task = s
        .tasks
        .lock()
        .expect("tasks")
        .get(&format!("{ns}/{pod}/{container}"))
        .cloned();
    let Some(task) = task else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "container {container} of pod {ns}/{pod} is not a running container image: \
                 exec runs commands in OCI containers only (a Wasm component has no processes to exec into)"
            ),
        );
    };
    match task.exec(&req.command, &s.logs.0.join(".exec")).await {
        Ok(out) => {
            let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
            axum::Json(serde_json::json!({
                "stdout": b64(&out.stdout),
                "stderr": b64(&out.stderr),
                "exitCode": out.exit_code,
            }))
            .into_response()
        }
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Join the upgraded connection to `localhost:{port}` in the pod's namespace.
async fn port_forward(
    State(s): State<AgentApi>,
    Path((ns, pod, port)): Path<(String, String, u16)>,
    Query(q): Query<HashMap<String, String>>,
    mut req: Request,
) -> Response {
    if !authorized(req.headers(), &s.token) {
        return text(StatusCode::UNAUTHORIZED, "unauthorized".into());
    }
    if s.pods.uid(&ns, &pod).is_none() {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} is not on this node"),
        );
    }
    let Some(ip) = q.get("ip").and_then(|ip| ip.parse().ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "ip: a pod IPv4 address is required".into(),
        );
    };
    let path = netns::path(&s.net.netns_name(ip));
    if !netns::exists(&path) {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} has no network namespace for {ip} on this node"),
        );
    }
    let connected = tokio::task::spawn_blocking(move || {
        netns::run_in(&path, move || {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            c.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(c)
        })
    })
    .await;
    let stream = match connected {
        Ok(Ok(Ok(c))) => c,
        Ok(Ok(Err(e))) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "failed to connect to localhost:{port} inside the pod's network namespace: {e}"
                ),
            );
        }
        Ok(Err(e)) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return text(
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded".into(),
        );
    };
    tokio::spawn(async move {
        let Ok(mut pod_side) = tokio::net::TcpStream::from_std(stream) else {
            return;
        };
        match on_upgrade.await {
            Ok(u) => {
                let mut client = hyper_util::rt::TokioIo::new(u);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut pod_side).await;
            }
            Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Body::empty())
        .unwrap_or_default()
}

async fn container_logs(
    State(s): State<AgentApi>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, &s.token) {
        return text(StatusCode::UNAUTHORIZED, "unauthorized".into());
    }
    let Some(uid) = s.pods.uid(&ns, &pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} is not on this node"),
        );
    };
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let attempts = s.logs.attempts(&ns, &pod, &uid, &container);
    let previous = flag("previous");
    let pick = if previous {
        attempts.len().checked_sub(2).map(|i| attempts[i].clone())
    } else {
        attempts.last().cloned()
    };
    let Some((attempt, path)) = pick else {
        if previous {
            return text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
            );
        }
        return text(StatusCode::OK, String::new());
    };
    let mut bytes = logs::read(&path);
    if let Some(n) = q.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        bytes = logs::tail(&bytes, n).to_vec();
    }
    let limit = q.get("limitBytes").and_then(|n| n.parse::<usize>().ok());
    if let Some(l) = limit {
        bytes.truncate(l);
    }
    if !flag("follow") || previous {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            bytes,
        )
            .into_response();
    }
    // Follow: what is there, then what is appended, until this run of the
    // container is superseded or the pod leaves the node.
    let start = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let state = (
        s,
        ns,
        pod,
        container,
        uid,
        attempt,
        path,
        start,
        Some(bytes),
    );
    let stream = futures::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.8.take() {
            return Some((Ok::<_, std::io::Error>(first), st));
        }
        loop {
            let (s, ns, pod, container, uid, attempt, path, offset) =
                (&st.0, &st.1, &st.2, &st.3, &st.4, st.5, &st.6, st.7);
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if len > offset {
                let all = logs::read(path);
                let chunk = all.get(offset as usize..).unwrap_or_default().to_vec();
                st.7 = all.len() as u64;
                return Some((Ok(chunk), st));
            }
            let newer = s
                .logs
                .attempts(ns, pod, uid, container)
                .last()
                .is_some_and(|(n, _)| *n > attempt);
            if newer || s.pods.uid(ns, pod).as_deref() != Some(uid.as_str()) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(stream),
    )
        .into_response()
}
