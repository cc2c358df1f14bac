//! One request through the router: find the backend in the table, pick a
//! ready endpoint of the Service (round robin; the ClusterIP when a
//! scale-to-zero Service has none, so the activator wakes it), and forward
//! over pooled HTTP/1.1 connections with `X-Forwarded-*` set. An upgrade
//! (WebSocket) is forwarded as such and the two connections joined.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use super::table::{Backend, PortRef, Table};
use crate::proxy::ServiceView;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// Bodies up to this size (with a Content-Length) are forwarded whole.
const SMALL_BODY: u64 = 64 * 1024;

/// What every request reads: the table and the Services' views.
pub struct Router {
    pub table: watch::Receiver<Arc<Table>>,
    pub services: watch::Receiver<Arc<Vec<ServiceView>>>,
    client: Client<HttpConnector, Incoming>,
    /// Round-robin positions per backend.
    next: Mutex<HashMap<Backend, Arc<AtomicUsize>>>,
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.into() + "\n"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers that belong to one connection, not the request.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request's host, without port, as routing reads it.
fn host_of(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    // `[::1]:80`, `name:80`, `name`.
    match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => {
            h.to_string()
        }
        _ => raw,
    }
}

impl Router {
    pub fn new(
        table: watch::Receiver<Arc<Table>>,
        services: watch::Receiver<Arc<Vec<ServiceView>>>,
    ) -> Router {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        Router {
            table,
            services,
            client,
            next: Mutex::default(),
        }
    }

    /// Where to send a request for `b`: a ready endpoint, or the ClusterIP of
    /// a scale-to-zero Service without one.
    fn target(&self, b: &Backend) -> Result<(Ipv4Addr, u16), String> {
        let views = self.services.borrow().clone();
        let Some(v) = views
            .iter()
            .find(|v| v.namespace == b.namespace && v.name == b.service)
        else {
            return Err(format!(
                "service \"{}/{}\" not found",
                b.namespace, b.service
            ));
        };
        let port = v
            .ports
            .iter()
            .filter(|p| p.proto == "tcp")
            .find(|p| match &b.port {
                PortRef::Number(n) => p.port == *n,
                PortRef::Name(n) => p.name == *n,
            });
        let Some(port) = port else {
            let want = match &b.port {
                PortRef::Number(n) => n.to_string(),
                PortRef::Name(n) => format!("{n:?}"),
            };
            return Err(format!(
                "service \"{}/{}\" has no TCP port {want}",
                b.namespace, b.service
            ));
        };
        if port.endpoints.is_empty() {
            if v.wake.is_some() && !v.cluster_ip.is_unspecified() {
                return Ok((v.cluster_ip, port.port));
            }
            return Err(format!(
                "service \"{}/{}\" has no ready endpoints",
                b.namespace, b.service
            ));
        }
        let counter = self
            .next
            .lock()
            .expect("round robin")
            .entry(b.clone())
            .or_default()
            .clone();
        let i = counter.fetch_add(1, Ordering::Relaxed) % port.endpoints.len();
        Ok(port.endpoints[i])
    }

    /// Answer one request from `peer` on a listener of `scheme` and `port`.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
        port: u16,
    ) -> Response<Body> {
        let host = host_of(&req);
        let path = req.uri().path().to_string();
        let table = self.table.borrow().clone();
        let backend = match table.route(&host, &path) {
            None => return text(StatusCode::NOT_FOUND, "404 page not found"),
            Some(Err(())) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the Ingress rule names no Service backend",
                );
            }
            Some(Ok(b)) => b.clone(),
        };
        let (ip, tport) = match self.target(&backend) {
            Ok(t) => t,
            Err(why) => return text(StatusCode::SERVICE_UNAVAILABLE, why),
        };
        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        parts.uri = match Uri::try_from(format!("http://{ip}:{tport}{pq}")) {
            Ok(u) => u,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad request target: {e}")),
        };
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let kept_upgrade = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(u) = kept_upgrade {
                parts.headers.insert(header::UPGRADE, u);
            }
        }
        // HTTP/2 clients send the authority, not a Host header.
        if !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&host)
        {
            parts.headers.insert(header::HOST, v);
        }
        parts.version = http::Version::HTTP_11;
        let h = &mut parts.headers;
        let client_ip = peer.ip().to_string();
        if let Ok(v) = HeaderValue::from_str(&client_ip) {
            h.insert("x-forwarded-for", v.clone());
            h.insert("x-real-ip", v);
        }
        h.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
        h.insert("x-forwarded-port", HeaderValue::from(port));
        if let Some(v) = original_host {
            h.insert("x-forwarded-host", v);
        }
        let out = Request::from_parts(parts, body);
        let mut resp = match self.client.request(out).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, backend = ?backend, "ingress backend");
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "backend {ip}:{tport} of service \"{}/{}\": {e}",
                        backend.namespace, backend.service
                    ),
                );
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(a), Ok(b)) = (client_upgrade.await, backend_upgrade.await) else {
                    return;
                };
                let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(
                parts,
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed(),
            );
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // A small body of known length is read whole first, so the head and
        // the body leave in one write (one packet, one wake-up of the client).
        let small = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= SMALL_BODY);
        if small {
            return match body.collect().await {
                Ok(all) => Response::from_parts(
                    parts,
                    Full::new(all.to_bytes())
                        .map_err(|never| match never {})
                        .boxed(),
                ),
                Err(e) => text(
                    StatusCode::BAD_GATEWAY,
                    format!("reading the answer of {ip}:{tport}: {e}"),
                ),
            };
        }
        Response::from_parts(parts, body.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        let mut up = HeaderMap::new();
        up.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        up.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&up));
        up.remove(header::UPGRADE);
        assert!(!is_upgrade(&up));
    }
}
