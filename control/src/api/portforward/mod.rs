//! `pods/{name}/portforward`, as `kubectl port-forward` speaks it: SPDY/3.1
//! tunnelled in WebSocket binary messages (subprotocol
//! `SPDY/3.1+portforward.k8s.io`), or, for older clients, SPDY over a plain
//! HTTP upgrade. Each forwarded connection is a pair of SPDY streams (`error`
//! and `data`) with one `requestID`; the data stream is relayed through the
//! pod's node agent to the port inside the pod's network namespace.
//!
//! **Every data stream ends with a FIN on it and on its error stream (with the
//! reason first, when the port could not be reached), so the client's
//! connection never hangs.**

mod dictionary;
pub mod spdy;

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::podexec::{
    accept_key, is_upgrade, offered_protocols, switching_to_websocket, take_upgrade,
};
use super::podlog::pod_and_agent;
use crate::model::status::{ApiError, ApiResult};
use crate::storage::Objects;
use spdy::{Decoder, Encoder, Frame};

/// The port-forward stream protocol, and its WebSocket tunnelling name.
const PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// Bytes per DATA frame sent.
const CHUNK: usize = 32 * 1024;

/// Where a data stream's bytes go: the pod's agent and the pod.
#[derive(Clone)]
struct Target {
    agent: String,
    token: String,
    ns: String,
    pod: String,
    pod_ip: String,
}

/// What the session hands a data stream's relay.
enum Inbound {
    Data(Vec<u8>),
    Fin,
}

/// Answer `pods/{name}/portforward`: check the pod, upgrade, run the session.
pub async fn pod_port_forward(
    objects: &Objects,
    token: String,
    ns: String,
    name: String,
    mut parts: Parts,
) -> ApiResult<Response> {
    let (pod, agent) = pod_and_agent(objects, &ns, &name, "ports to forward to").await?;
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or("");
    if text("/status/phase") != "Running" || text("/status/podIP").is_empty() {
        return Err(ApiError::bad_request(format!(
            "unable to forward port because pod is not running. Current status={}",
            text("/status/phase")
        )));
    }
    let target = Target {
        agent,
        token,
        ns,
        pod: name,
        pod_ip: text("/status/podIP").to_string(),
    };
    let spdy_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    let websocket = is_upgrade(&parts.headers);
    if !websocket && !spdy_upgrade {
        return Err(ApiError::bad_request(format!(
            "port-forward needs a WebSocket upgrade with protocol {TUNNEL_PROTOCOL} \
             (or an upgrade to SPDY/3.1)"
        )));
    }
    let resp = if websocket {
        let offered = offered_protocols(&parts.headers);
        if !offered.iter().any(|p| p == TUNNEL_PROTOCOL) {
            return Err(ApiError::bad_request(format!(
                "none of the offered stream protocols [{}] is served; use {TUNNEL_PROTOCOL}",
                offered.join(", ")
            )));
        }
        switching_to_websocket(TUNNEL_PROTOCOL, &accept_key(&parts.headers)?)
    } else {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(
            "X-Stream-Protocol-Version",
            HeaderValue::from_static(PROTOCOL),
        );
        resp
    };
    let on_upgrade = take_upgrade(&mut parts)?;
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        let (bytes_in_tx, bytes_in) = mpsc::channel::<Vec<u8>>(16);
        let (frames_tx, frames) = mpsc::unbounded_channel::<Vec<u8>>();
        if websocket {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            tokio::spawn(websocket_pump(ws, bytes_in_tx, frames));
        } else {
            tokio::spawn(raw_pump(io, bytes_in_tx, frames));
        }
        session(bytes_in, frames_tx, target).await;
    });
    Ok(resp.into_response())
}

/// Carry SPDY bytes in WebSocket binary messages, both ways.
async fn websocket_pump<S>(
    ws: WebSocketStream<S>,
    bytes_in: mpsc::Sender<Vec<u8>>,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, mut rx) = ws.split();
    let writer = async move {
        while let Some(f) = frames.recv().await {
            if tx.send(Message::Binary(f.into())).await.is_err() {
                break;
            }
        }
        let _ = tx.close().await;
    };
    let reader = async move {
        while let Some(Ok(m)) = rx.next().await {
            match m {
                Message::Binary(b) if bytes_in.send(b.to_vec()).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    // The session ends when the client goes (reader) or when it is done (writer).
    tokio::select! {
        () = writer => {},
        () = reader => {},
    }
}

/// Carry SPDY bytes over the upgraded connection itself.
async fn raw_pump<S>(
    io: S,
    bytes_in: mpsc::Sender<Vec<u8>>,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let writer = async move {
        while let Some(f) = frames.recv().await {
            if wr.write_all(&f).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if bytes_in.send(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = writer => {},
        () = reader => {},
    }
}

/// Read frames until the client goes away: accept streams, pair them by
/// request, relay data streams, answer pings.
async fn session(
    mut bytes_in: mpsc::Receiver<Vec<u8>>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    target: Target,
) {
    let mut decoder = Decoder::default();
    let mut encoder = Encoder::default();
    // requestID → the error stream opened for it.
    let mut error_streams: HashMap<String, u32> = HashMap::new();
    // data stream → its relay.
    let mut relays: HashMap<u32, mpsc::UnboundedSender<Inbound>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    'session: loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward session ends");
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream { id, headers, .. } => {
                    let get = |k: &str| headers.get(k).cloned().unwrap_or_default();
                    let request = get("requestid");
                    let port = get("port");
                    match get("streamtype").as_str() {
                        "error" => {
                            let _ = out.send(encoder.syn_reply(id));
                            error_streams.insert(request, id);
                        }
                        "data" => {
                            let _ = out.send(encoder.syn_reply(id));
                            let error_stream = error_streams.remove(&request);
                            let (tx, rx) = mpsc::unbounded_channel();
                            relays.insert(id, tx);
                            tasks.spawn(relay(
                                target.clone(),
                                port,
                                id,
                                error_stream,
                                rx,
                                out.clone(),
                            ));
                        }
                        other => {
                            tracing::debug!(stream = id, kind = other, "refused stream");
                            let _ = out.send(spdy::rst_stream(id, spdy::REFUSED_STREAM));
                        }
                    }
                }
                Frame::Data { id, fin, data } => {
                    if let Some(r) = relays.get(&id) {
                        let mut gone = !data.is_empty() && r.send(Inbound::Data(data)).is_err();
                        if fin {
                            gone |= r.send(Inbound::Fin).is_err();
                        }
                        if gone {
                            relays.remove(&id);
                        }
                    }
                }
                Frame::RstStream { id } => {
                    // Dropping the sender stops the relay.
                    relays.remove(&id);
                }
                Frame::Ping(id) => {
                    let _ = out.send(spdy::ping(id));
                }
                Frame::GoAway => break 'session,
                Frame::Other => {}
            }
        }
        // Finished relays leave the set (a long session forwards many connections).
        while tasks.try_join_next().is_some() {}
        relays.retain(|_, r| !r.is_closed());
        match bytes_in.recv().await {
            Some(b) => decoder.push(&b),
            None => break,
        }
    }
    tasks.abort_all();
}

/// Relay one data stream to `port` in the pod, through its agent.
async fn relay(
    t: Target,
    port: String,
    id: u32,
    error_stream: Option<u32>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    out: mpsc::UnboundedSender<Vec<u8>>,
) {
    let finish = |message: Option<String>| {
        if let (Some(e), Some(m)) = (error_stream, message) {
            let _ = out.send(spdy::data(e, false, m.as_bytes()));
        }
        let _ = out.send(spdy::data(id, true, b""));
        if let Some(e) = error_stream {
            let _ = out.send(spdy::data(e, true, b""));
        }
    };
    let upgraded = match connect(&t, &port).await {
        Ok(u) => u,
        Err(why) => {
            finish(Some(format!(
                "error forwarding port {port} to pod {}/{}: {why}",
                t.ns, t.pod
            )));
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(upgraded);
    let to_client = out.clone();
    let mut from_pod = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.send(spdy::data(id, false, &buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut client_done = false;
    loop {
        tokio::select! {
            _ = &mut from_pod => break,
            m = inbound.recv(), if !client_done => match m {
                Some(Inbound::Data(b)) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Some(Inbound::Fin) => {
                    client_done = true;
                    let _ = wr.shutdown().await;
                }
                None => {
                    // Reset by the client, or the session is gone.
                    from_pod.abort();
                    return;
                }
            },
        }
    }
    from_pod.abort();
    finish(None);
}

/// Open a byte stream to `port` in the pod through its agent.
async fn connect(t: &Target, port: &str) -> Result<reqwest::Upgraded, String> {
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {port:?}"))?;
    let resp = crate::agents::client()
        .get(format!(
            "{}/portForward/{}/{}/{port}?ip={}",
            t.agent, t.ns, t.pod, t.pod_ip
        ))
        .bearer_auth(&t.token)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .send()
        .await
        .map_err(|e| format!("cannot reach the pod's node: {e}"))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let text = resp.text().await.unwrap_or_default();
        return Err(text.trim().to_string());
    }
    resp.upgrade().await.map_err(|e| e.to_string())
}
