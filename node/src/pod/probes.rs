//! Container probes as the kubelet runs them: liveness, readiness and startup,
//! with `httpGet`, `tcpSocket` and `grpc` checks sent from the host to the
//! pod IP (the host routes the node's pod block to the bridge), thresholds and
//! timing with Kubernetes' defaults. `exec` runs in a container image's run
//! (its runner's own checker, `container/oci.rs`), but not in a Wasm container
//! (it has no processes): there such a probe errors on every attempt, which
//! counts as a failure, and each attempt is recorded as an `Unhealthy` warning
//! naming why. The same handlers serve lifecycle hooks (plus `sleep`).
//!
//! **A probe result only changes after `successThreshold` successes or
//! `failureThreshold` failures in a row; the first settles readiness (which
//! starts false) and startup, the second liveness and startup.**

use std::net::IpAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    self as k8s, Container, ExecAction, GRPCAction, HTTPGetAction, LifecycleHandler, SleepAction,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::mpsc;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    fn field(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "livenessProbe",
            ProbeKind::Readiness => "readinessProbe",
            ProbeKind::Startup => "startupProbe",
        }
    }
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Http {
        https: bool,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        port: u16,
    },
    Grpc {
        port: u16,
        service: String,
    },
    Exec {
        command: Vec<String>,
    },
    /// A lifecycle hook's pause.
    Sleep {
        seconds: u64,
    },
}

/// One probe of a container, with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Whole seconds of a probe field, `default` when unset or not positive
/// (`initialDelaySeconds` may be 0).
fn secs(v: Option<i32>, default: u64, zero_ok: bool) -> Duration {
    Duration::from_secs(
        v.and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0 || zero_ok)
            .unwrap_or(default),
    )
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(v: &IntOrString, container: &Container) -> Result<u16, String> {
    match v {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(s) => {
            if let Ok(p) = s.parse::<u16>() {
                return Ok(p);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("port {s:?} is not a named port of the container"))
        }
    }
}

/// The actions a probe or a lifecycle hook may name (a probe has no `sleep`,
/// a hook no `grpc`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Handlers<'a> {
    pub http_get: Option<&'a HTTPGetAction>,
    pub tcp_socket: Option<&'a TCPSocketAction>,
    pub grpc: Option<&'a GRPCAction>,
    pub exec: Option<&'a ExecAction>,
    pub sleep: Option<&'a SleepAction>,
}

impl<'a> From<&'a k8s::Probe> for Handlers<'a> {
    fn from(p: &'a k8s::Probe) -> Handlers<'a> {
        Handlers {
            http_get: p.http_get.as_ref(),
            tcp_socket: p.tcp_socket.as_ref(),
            grpc: p.grpc.as_ref(),
            exec: p.exec.as_ref(),
            sleep: None,
        }
    }
}

impl<'a> From<&'a LifecycleHandler> for Handlers<'a> {
    fn from(h: &'a LifecycleHandler) -> Handlers<'a> {
        Handlers {
            http_get: h.http_get.as_ref(),
            tcp_socket: h.tcp_socket.as_ref(),
            grpc: None,
            exec: h.exec.as_ref(),
            sleep: h.sleep.as_ref(),
        }
    }
}

impl Handler {
    /// The handler of a probe or lifecycle hook (`what` names it in errors).
    pub fn parse(v: Handlers<'_>, container: &Container, what: &str) -> Result<Handler, String> {
        Ok(if let Some(h) = v.http_get {
            let path = h.path.as_deref().unwrap_or("/");
            Handler::Http {
                https: h.scheme.as_deref() == Some("HTTPS"),
                port: port(&h.port, container)?,
                path: if path.starts_with('/') {
                    path.to_string()
                } else {
                    format!("/{path}")
                },
                headers: h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|x| (x.name.clone(), x.value.clone()))
                    .collect(),
            }
        } else if let Some(t) = v.tcp_socket {
            Handler::Tcp {
                port: port(&t.port, container)?,
            }
        } else if let Some(g) = v.grpc {
            Handler::Grpc {
                port: port(&IntOrString::Int(g.port), container)?,
                service: g.service.clone().unwrap_or_default(),
            }
        } else if let Some(e) = v.exec {
            Handler::Exec {
                command: e.command.clone().unwrap_or_default(),
            }
        } else if let Some(z) = v.sleep {
            Handler::Sleep {
                seconds: u64::try_from(z.seconds).unwrap_or(0),
            }
        } else {
            return Err(format!("{what} has no handler"));
        })
    }
}

impl Probe {
    /// The container's probe of this kind, if it has one.
    pub fn of(container: &Container, kind: ProbeKind) -> Option<Result<Probe, String>> {
        let v = match kind {
            ProbeKind::Liveness => container.liveness_probe.as_ref(),
            ProbeKind::Readiness => container.readiness_probe.as_ref(),
            ProbeKind::Startup => container.startup_probe.as_ref(),
        }?;
        Some(Probe::parse(v, container, kind))
    }

    fn parse(v: &k8s::Probe, container: &Container, kind: ProbeKind) -> Result<Probe, String> {
        let handler = Handler::parse(Handlers::from(v), container, kind.field())?;
        let positive = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
        let success_threshold = match kind {
            // Liveness and startup must use 1 (the API enforces it).
            ProbeKind::Readiness => positive(v.success_threshold),
            _ => None,
        }
        .unwrap_or(1);
        Ok(Probe {
            kind,
            handler,
            initial_delay: secs(v.initial_delay_seconds, 0, true),
            period: secs(v.period_seconds, 10, false),
            timeout: secs(v.timeout_seconds, 1, false),
            success_threshold,
            failure_threshold: positive(v.failure_threshold).unwrap_or(3),
        })
    }
}

/// Consecutive results and the settled one, as the kubelet's probe worker
/// keeps them.
#[derive(Debug, Clone)]
pub struct Thresholds {
    settled: Option<bool>,
    last: Option<bool>,
    run: u32,
    success: u32,
    failure: u32,
}

impl Thresholds {
    /// Readiness starts failed, liveness succeeded, startup unknown.
    pub fn new(p: &Probe) -> Thresholds {
        Thresholds {
            settled: match p.kind {
                ProbeKind::Readiness => Some(false),
                ProbeKind::Liveness => Some(true),
                ProbeKind::Startup => None,
            },
            last: None,
            run: 0,
            success: p.success_threshold,
            failure: p.failure_threshold,
        }
    }

    /// Count one result; the new settled result when it changes.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let needed = if ok { self.success } else { self.failure };
        if self.run >= needed && self.settled != Some(ok) {
            self.settled = Some(ok);
            return Some(ok);
        }
        None
    }
}

/// Runs one check (a narrow seam so the worker is testable without a network).
pub trait Checker: Send + Sync + 'static {
    /// Ok with a note, or Err with the failure message.
    fn check<'a>(
        &'a self,
        ip: IpAddr,
        h: &'a Handler,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// One probe attempt as the container's runner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: ProbeKind,
    /// The failure message of this attempt (for the `Unhealthy` event).
    pub failure: Option<String>,
    /// The settled result, when this attempt changed it.
    pub settled: Option<bool>,
}

/// Probe `ip` until the receiver is dropped, reporting every attempt.
pub async fn run(
    probe: Probe,
    ip: IpAddr,
    checker: std::sync::Arc<dyn Checker>,
    tx: mpsc::Sender<Report>,
) {
    let mut t = Thresholds::new(&probe);
    tokio::time::sleep(probe.initial_delay).await;
    let mut tick = tokio::time::interval(probe.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = match tokio::time::timeout(
            probe.timeout,
            checker.check(ip, &probe.handler, probe.timeout),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the check timed out after {}s",
                probe.timeout.as_secs_f64()
            )),
        };
        let settled = t.observe(result.is_ok());
        let report = Report {
            kind: probe.kind,
            failure: result.err(),
            settled,
        };
        if tx.send(report).await.is_err() {
            return;
        }
    }
}

/// The real checks, over the host's route to the pod network.
pub struct NetChecker {
    http: reqwest::Client,
}

impl NetChecker {
    pub fn new() -> NetChecker {
        let http = reqwest::Client::builder()
            .no_proxy()
            // Never follow a redirect off the pod; a 3xx is a success.
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(true)
            .user_agent(concat!("kube-probe/skiff-", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        NetChecker { http }
    }
}

impl Default for NetChecker {
    fn default() -> Self {
        NetChecker::new()
    }
}

impl Checker for NetChecker {
    fn check<'a>(
        &'a self,
        ip: IpAddr,
        h: &'a Handler,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match h {
                Handler::Http {
                    https,
                    port,
                    path,
                    headers,
                } => {
                    let url = format!(
                        "{}://{}{path}",
                        if *https { "https" } else { "http" },
                        std::net::SocketAddr::new(ip, *port)
                    );
                    let mut req = self.http.get(&url).timeout(timeout);
                    for (n, v) in headers {
                        req = req.header(n, v);
                    }
                    let resp = req
                        .send()
                        .await
                        .map_err(|e| format!("Get {url:?}: {}", error_chain(&e)))?;
                    let code = resp.status().as_u16();
                    if (200..400).contains(&code) {
                        Ok(())
                    } else {
                        Err(format!("HTTP probe failed with statuscode: {code}"))
                    }
                }
                Handler::Tcp { port } => {
                    let addr = std::net::SocketAddr::new(ip, *port);
                    tokio::net::TcpStream::connect(addr)
                        .await
                        .map(drop)
                        .map_err(|e| format!("dial tcp {addr}: connect: {e}"))
                }
                Handler::Grpc { port, service } => {
                    grpc_check(std::net::SocketAddr::new(ip, *port), service).await
                }
                Handler::Sleep { seconds } => {
                    tokio::time::sleep(Duration::from_secs(*seconds)).await;
                    Ok(())
                }
                Handler::Exec { command } => Err(format!(
                    "exec probes cannot run in a Wasm container (it has no processes to run {command:?} in); use httpGet, tcpSocket or grpc"
                )),
            }
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// `grpc.health.v1.Health/Check` over HTTP/2 (prior knowledge, no TLS).
pub async fn grpc_check(addr: std::net::SocketAddr, service: &str) -> Result<(), String> {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("failed to connect service {addr:?}: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("failed to connect service {addr:?}: {e}"))?;
    let driver = tokio::spawn(conn);
    let result = async {
        // HealthCheckRequest { string service = 1; }, in one gRPC message frame.
        let mut msg = Vec::new();
        if !service.is_empty() {
            msg.push(0x0a);
            put_varint(&mut msg, service.len() as u64);
            msg.extend_from_slice(service.as_bytes());
        }
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        frame.extend_from_slice(&msg);
        let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "kube-probe/skiff")
            .body(Full::new(bytes::Bytes::from(frame)))
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("health rpc failed: {e}"))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!(
                "health rpc failed: HTTP status {}",
                resp.status().as_u16()
            ));
        }
        let head = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("health rpc failed: {e}"))?;
        let trailers = body.trailers().cloned().unwrap_or_default();
        let grpc_status = trailers
            .get("grpc-status")
            .or_else(|| head.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if grpc_status != "0" {
            let message = trailers
                .get("grpc-message")
                .or_else(|| head.get("grpc-message"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            return Err(format!(
                "health rpc failed: rpc error: code = {} desc = {message}",
                grpc_code_name(grpc_status)
            ));
        }
        let bytes = body.to_bytes();
        let status = bytes
            .get(5..)
            .and_then(health_status)
            .ok_or("health rpc failed: malformed HealthCheckResponse")?;
        match status {
            1 => Ok(()),
            s => Err(format!(
                "service unhealthy (responded with {:?})",
                ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]
                    .get(s as usize)
                    .copied()
                    .unwrap_or("UNKNOWN")
            )),
        }
    }
    .await;
    driver.abort();
    result
}

fn grpc_code_name(code: &str) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    code.parse::<usize>()
        .ok()
        .and_then(|c| NAMES.get(c))
        .map_or_else(|| format!("Code({code})"), |n| n.to_string())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` (field 1) of a HealthCheckResponse; 0 (UNKNOWN) when absent.
fn health_status(msg: &[u8]) -> Option<u64> {
    let (mut i, mut status) = (0, 0);
    while i < msg.len() {
        let tag = varint(msg, &mut i)?;
        match tag & 7 {
            0 => {
                let v = varint(msg, &mut i)?;
                if tag >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let len = varint(msg, &mut i)? as usize;
                i = i.checked_add(len).filter(|e| *e <= msg.len())?;
            }
            1 => i += 8,
            5 => i += 4,
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("a container")
    }

    #[test]
    fn parse_defaults_and_named_ports() {
        let c = container(json!({
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "healthz", "port": "http",
                "httpHeaders": [{"name": "X-A", "value": "1"}]}},
            "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 2,
                "successThreshold": 2, "failureThreshold": 1, "timeoutSeconds": 5, "initialDelaySeconds": 3},
            "startupProbe": {"grpc": {"port": 50051}},
        }));
        let l = Probe::of(&c, ProbeKind::Liveness).unwrap().unwrap();
        assert_eq!(
            l,
            Probe {
                kind: ProbeKind::Liveness,
                handler: Handler::Http {
                    https: false,
                    port: 8080,
                    path: "/healthz".into(),
                    headers: vec![("X-A".into(), "1".into())]
                },
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let r = Probe::of(&c, ProbeKind::Readiness).unwrap().unwrap();
        assert_eq!(r.handler, Handler::Tcp { port: 9000 });
        assert_eq!(
            (
                r.period,
                r.timeout,
                r.initial_delay,
                r.success_threshold,
                r.failure_threshold
            ),
            (
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_secs(3),
                2,
                1
            )
        );
        let s = Probe::of(&c, ProbeKind::Startup).unwrap().unwrap();
        assert_eq!(
            s.handler,
            Handler::Grpc {
                port: 50051,
                service: String::new()
            }
        );
        let bad = container(json!({"livenessProbe": {"httpGet": {"port": "nope"}}}));
        assert!(Probe::of(&bad, ProbeKind::Liveness).unwrap().is_err());
        assert!(Probe::of(&container(json!({})), ProbeKind::Liveness).is_none());
    }

    fn probe(kind: ProbeKind, success: u32, failure: u32) -> Probe {
        Probe {
            kind,
            handler: Handler::Tcp { port: 1 },
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    /// (kind, success, failure, results, settled changes after each)
    type ThresholdCase = (ProbeKind, u32, u32, Vec<bool>, Vec<Option<bool>>);

    #[test]
    fn thresholds_table() {
        let cases: Vec<ThresholdCase> = vec![
            (
                ProbeKind::Readiness,
                1,
                3,
                vec![true, false, false, false, true],
                vec![Some(true), None, None, Some(false), Some(true)],
            ),
            (
                ProbeKind::Readiness,
                2,
                1,
                vec![true, false, true, true, true],
                vec![None, None, None, Some(true), None],
            ),
            (
                ProbeKind::Liveness,
                1,
                2,
                vec![true, false, true, false, false, false],
                vec![None, None, None, None, Some(false), None],
            ),
            (
                ProbeKind::Startup,
                1,
                3,
                vec![false, false, true],
                vec![None, None, Some(true)],
            ),
        ];
        for (kind, s, f, results, want) in cases {
            let mut t = Thresholds::new(&probe(kind, s, f));
            let got: Vec<Option<bool>> = results.iter().map(|r| t.observe(*r)).collect();
            assert_eq!(got, want, "{kind:?} {s}/{f} {results:?}");
        }
    }

    struct Scripted(std::sync::Mutex<Vec<bool>>);

    impl Checker for Scripted {
        fn check<'a>(
            &'a self,
            _: IpAddr,
            _: &'a Handler,
            _: Duration,
        ) -> BoxFuture<'a, Result<(), String>> {
            let ok = self.0.lock().unwrap().pop().unwrap_or(true);
            Box::pin(async move { if ok { Ok(()) } else { Err("down".into()) } })
        }
    }

    #[tokio::test]
    async fn worker_reports_each_attempt() {
        // Popped from the end: fail, fail, ok.
        let checker =
            std::sync::Arc::new(Scripted(std::sync::Mutex::new(vec![true, false, false])));
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(run(
            probe(ProbeKind::Liveness, 1, 2),
            "127.0.0.1".parse().unwrap(),
            checker,
            tx,
        ));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(rx.recv().await.unwrap());
        }
        drop(rx);
        let _ = task.await;
        assert_eq!(got[0].failure.as_deref(), Some("down"));
        assert_eq!(got[0].settled, None);
        assert_eq!(got[1].settled, Some(false));
        assert_eq!(got[2].settled, Some(true));
        assert!(got[2].failure.is_none());
    }

    #[tokio::test]
    async fn net_checks_against_loopback_servers() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let code = if req.starts_with("GET /ok ") && req.contains("x-probe: yes") {
                        "200 OK"
                    } else if req.starts_with("GET /moved ") {
                        "302 Found\r\nLocation: http://192.0.2.1/"
                    } else {
                        "503 Service Unavailable"
                    };
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 {code}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        let c = NetChecker::new();
        let http = |path: &str| Handler::Http {
            https: false,
            port,
            path: path.into(),
            headers: vec![("X-Probe".into(), "yes".into())],
        };
        let t = Duration::from_secs(2);
        assert_eq!(c.check(ip, &http("/ok"), t).await, Ok(()));
        assert_eq!(c.check(ip, &http("/moved"), t).await, Ok(()));
        assert_eq!(
            c.check(ip, &http("/bad"), t).await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
        assert_eq!(c.check(ip, &Handler::Tcp { port }, t).await, Ok(()));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = c
            .check(ip, &Handler::Tcp { port: closed }, t)
            .await
            .unwrap_err();
        assert!(
            e.starts_with(&format!("dial tcp 127.0.0.1:{closed}: connect:")),
            "{e}"
        );
        let e = c
            .check(
                ip,
                &Handler::Exec {
                    command: vec!["true".into()],
                },
                t,
            )
            .await
            .unwrap_err();
        assert!(
            e.contains("exec probes cannot run in a Wasm container"),
            "{e}"
        );
    }

    /// A gRPC health server on loopback answering with `status` (or a
    /// grpc-status error when `status` is None).
    async fn grpc_server(status: Option<u8>) -> std::net::SocketAddr {
        use http_body_util::{BodyExt, StreamBody};
        use hyper::body::Frame;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| async move {
                            assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let service =
                                String::from_utf8_lossy(body.get(7..).unwrap_or_default())
                                    .to_string();
                            let mut trailers = http::HeaderMap::new();
                            let data = match status {
                                Some(st) => {
                                    trailers.insert("grpc-status", "0".parse().unwrap());
                                    // "other" service: NOT_SERVING.
                                    let st = if service == "other" { 2 } else { st };
                                    vec![0, 0, 0, 0, 2, 0x08, st]
                                }
                                None => {
                                    trailers.insert("grpc-status", "12".parse().unwrap());
                                    trailers.insert("grpc-message", "no health".parse().unwrap());
                                    vec![]
                                }
                            };
                            let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
                                Ok(Frame::data(bytes::Bytes::from(data))),
                                Ok(Frame::trailers(trailers)),
                            ];
                            let resp = http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(StreamBody::new(futures::stream::iter(frames)))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn grpc_health_check() {
        let serving = grpc_server(Some(1)).await;
        assert_eq!(grpc_check(serving, "").await, Ok(()));
        assert_eq!(
            grpc_check(serving, "other").await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let broken = grpc_server(None).await;
        assert_eq!(
            grpc_check(broken, "").await,
            Err("health rpc failed: rpc error: code = Unimplemented desc = no health".into())
        );
    }
}
