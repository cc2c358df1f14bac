//! The activator: where a scale-to-zero Service's connections go while it has
//! no ready endpoints (the proxy DNATs them to this node's activator address).
//! It holds each connection, scales the Deployment behind the Service from 0
//! to 1, and as soon as an endpoint is ready joins the held connection to it,
//! reporting the wake-up latency.
//!
//! **Waiting is bounded: at most `max_held` connections are held at once and
//! each for at most `timeout`; beyond either, or as soon as the Deployment's
//! pod cannot start (a bad image, a crash loop, unschedulable), an HTTP client
//! gets `503 Service Unavailable` with `Retry-After` and the reason, and the
//! Deployment gets a warning event naming the cause. Nothing is held forever.**

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::agent::local::LocalPods;
use crate::pod::events::Recorder;
use crate::proxy::ServiceView;
use crate::proxy::rules::PortView;
use crate::proxy::wake::Wakers;

/// Default port of the activator on the node's bridge address.
pub const DEFAULT_PORT: u16 = 8012;
/// How long a failed wake-up answers new connections at once before the
/// next one tries again.
const FAILED_MEMORY: Duration = Duration::from_secs(5);
/// How long a refused connection to a just-ready pod is retried.
const CONNECT_RETRY: Duration = Duration::from_secs(3);
/// How often a waking Deployment's pods are checked for failures.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Settings of the activator.
#[derive(Debug, Clone)]
pub struct ActivatorConfig {
    pub addr: SocketAddrV4,
    /// Longest a connection is held.
    pub timeout: Duration,
    /// Most connections held at once.
    pub max_held: usize,
}

/// Buckets of the wake-up latency histogram, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counters for the node's `/metrics`.
#[derive(Debug)]
pub struct ActivatorStats {
    /// Connections forwarded after a hold.
    pub forwarded: AtomicU64,
    /// Connections answered 503 (timeout, full, failed start).
    pub rejected: AtomicU64,
    /// Scale-ups from zero asked for (cold starts).
    pub wakeups: AtomicU64,
    /// Wake-up latencies (accept → connected to a ready pod), in seconds.
    pub latency: Arc<skiff_common::prom::Histogram>,
}

impl ActivatorStats {
    /// Counters at zero, latencies observed into `latency`.
    pub fn new(latency: Arc<skiff_common::prom::Histogram>) -> ActivatorStats {
        ActivatorStats {
            forwarded: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            latency,
        }
    }
}

/// The state of one Deployment's wake-up.
#[derive(Debug, Clone, PartialEq)]
enum Wake {
    Waking,
    Failed(String, Instant),
}

/// The node's activator.
pub struct Activator {
    cfg: ActivatorConfig,
    client: Client,
    views: watch::Receiver<Arc<Vec<ServiceView>>>,
    /// The scale-to-zero Deployments as the proxy last saw them.
    wakers: watch::Receiver<Arc<Wakers>>,
    /// Pods this node starts itself while no API server answers.
    local: LocalPods,
    events: Recorder,
    node_stats: Arc<crate::stats::Stats>,
    pub stats: Arc<ActivatorStats>,
    held: AtomicUsize,
    waking: Mutex<HashMap<(String, String), watch::Sender<Wake>>>,
    next: AtomicUsize,
}

/// Why a held connection was not forwarded.
enum Refusal {
    /// Try again later (timeout, too many held).
    Busy(String),
    /// The Deployment cannot start.
    Failed(String),
}

impl Activator {
    pub fn new(
        cfg: ActivatorConfig,
        client: Client,
        (views, wakers): (
            watch::Receiver<Arc<Vec<ServiceView>>>,
            watch::Receiver<Arc<Wakers>>,
        ),
        local: LocalPods,
        events: Recorder,
        node_stats: Arc<crate::stats::Stats>,
        stats: Arc<ActivatorStats>,
    ) -> Arc<Activator> {
        Arc::new(Activator {
            cfg,
            client,
            views,
            wakers,
            local,
            events,
            node_stats,
            stats,
            held: AtomicUsize::new(0),
            waking: Mutex::default(),
            next: AtomicUsize::new(0),
        })
    }

    /// Accept connections until the listener fails.
    pub async fn serve(self: Arc<Self>) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.cfg.addr).await?;
        tracing::info!(addr = %self.cfg.addr, "activator listening");
        loop {
            let (sock, peer) = listener.accept().await?;
            let me = self.clone();
            let span = tracing::debug_span!("activate", %peer);
            tokio::spawn(tracing::Instrument::instrument(me.handle(sock), span));
        }
    }

    async fn handle(self: Arc<Self>, mut sock: TcpStream) {
        let t0 = Instant::now();
        let Some(orig) = original_destination(&sock) else {
            let _ = sock.shutdown().await;
            return;
        };
        let Some((view, port_view)) = self.find(orig) else {
            respond_503(&mut sock, "no scale-to-zero Service here", 1).await;
            return;
        };
        let (ns, svc) = (view.namespace.clone(), view.name.clone());
        let Some(deployment) = view.wake.clone() else {
            respond_503(&mut sock, "the Service has no ready endpoints", 1).await;
            return;
        };
        self.node_stats.touch_service(&ns, &svc);
        let held = self.held.fetch_add(1, Ordering::AcqRel);
        let _release = Release(&self.held);
        if held >= self.cfg.max_held {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            respond_503(
                &mut sock,
                &format!("too many requests are waiting for {ns}/{deployment} to start"),
                1,
            )
            .await;
            return;
        }
        let found = self.wait_for_endpoint(&view, &port_view, &deployment).await;
        if let Ok(target) = &found {
            tracing::debug!(%target, after_ms = t0.elapsed().as_secs_f64() * 1e3, "endpoint ready");
        }
        match found {
            Ok(target) => match connect(target).await {
                Ok(mut upstream) => {
                    let took = t0.elapsed();
                    self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    self.stats.latency.observe(took.as_secs_f64());
                    tracing::info!(
                        service = %format!("{ns}/{svc}"),
                        %target,
                        wake_ms = took.as_secs_f64() * 1e3,
                        "activated"
                    );
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut upstream).await;
                    self.node_stats.touch_service(&ns, &svc);
                }
                Err(e) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    respond_503(&mut sock, &format!("cannot reach {target}: {e}"), 1).await;
                }
            },
            Err(Refusal::Busy(why)) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                respond_503(&mut sock, &why, 1).await;
            }
            Err(Refusal::Failed(why)) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                respond_503(&mut sock, &why, 10).await;
            }
        }
    }

    /// The Service port a translated connection was meant for.
    fn find(&self, orig: SocketAddrV4) -> Option<(ServiceView, PortView)> {
        let views = self.views.borrow().clone();
        for v in views.iter() {
            for p in v.ports.iter().filter(|p| p.proto == "tcp") {
                let by_ip = (v.cluster_ip == *orig.ip() || v.ingress.contains(orig.ip()))
                    && p.port == orig.port();
                if by_ip || p.node_port == Some(orig.port()) {
                    return Some((v.clone(), p.clone()));
                }
            }
        }
        None
    }

    /// A pod of this node that the Service selects and that just became
    /// Ready: the agent knows before the EndpointSlices do.
    fn local_endpoint(&self, view: &ServiceView, port: &PortView) -> Option<SocketAddr> {
        if view.selector.is_empty() {
            return None;
        }
        let pods = self.node_stats.ready_pods();
        let matching: Vec<_> = pods
            .iter()
            .filter(|p| {
                p.namespace == view.namespace
                    && view
                        .selector
                        .iter()
                        .all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .filter_map(|p| {
                let n = p.target(port.target_name.as_deref(), port.target_port)?;
                Some(SocketAddr::from((p.ip, n)))
            })
            .collect();
        if matching.is_empty() {
            return None;
        }
        Some(matching[self.next.fetch_add(1, Ordering::Relaxed) % matching.len()])
    }

    /// A ready endpoint of the Service port, once there is one: wakes the
    /// Deployment and waits, within the bound, failing early when its pod
    /// cannot start.
    async fn wait_for_endpoint(
        self: &Arc<Self>,
        view: &ServiceView,
        port: &PortView,
        deployment: &str,
    ) -> Result<SocketAddr, Refusal> {
        let (ns, svc) = (view.namespace.as_str(), view.name.as_str());
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let mut views = self.views.clone();
        let mut local = self.node_stats.watch_ready();
        let mut wake = Some(self.wake(ns, deployment));
        loop {
            if let Some(t) = self.local_endpoint(view, port) {
                return Ok(t);
            }
            if let Some(t) = self.ready_endpoint(&views.borrow(), ns, svc, &port.name, port.port) {
                return Ok(t);
            }
            if let Some(Wake::Failed(why, _)) = wake.as_ref().map(|w| w.borrow().clone()) {
                return Err(Refusal::Failed(why));
            }
            let woken = async {
                match wake.as_mut() {
                    Some(w) => w.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = views.changed() => if r.is_err() {
                    return Err(Refusal::Busy("the node's proxy stopped".into()));
                },
                _ = local.changed() => {},
                alive = woken => if !alive {
                    // The wake-up ended with a ready pod: its endpoint is on
                    // its way to the proxy's views.
                    wake = None;
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Refusal::Busy(format!(
                        "{ns}/{deployment} did not become ready within {:?}",
                        self.cfg.timeout
                    )));
                }
            }
        }
    }

    fn ready_endpoint(
        &self,
        views: &[ServiceView],
        ns: &str,
        svc: &str,
        port_name: &str,
        port: u16,
    ) -> Option<SocketAddr> {
        let v = views.iter().find(|v| v.namespace == ns && v.name == svc)?;
        let p = v
            .ports
            .iter()
            .find(|p| p.proto == "tcp" && p.name == port_name && p.port == port)?;
        if p.endpoints.is_empty() {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) % p.endpoints.len();
        let (ip, port) = p.endpoints[k];
        Some(SocketAddr::from((ip, port)))
    }

    /// Join (or start) the wake-up of `ns/deployment`.
    fn wake(self: &Arc<Self>, ns: &str, deployment: &str) -> watch::Receiver<Wake> {
        let key = (ns.to_string(), deployment.to_string());
        let mut waking = self.waking.lock().expect("waking");
        if let Some(tx) = waking.get(&key) {
            let stale =
                matches!(&*tx.borrow(), Wake::Failed(_, at) if at.elapsed() > FAILED_MEMORY);
            if !stale && !tx.is_closed() {
                return tx.subscribe();
            }
        }
        let (tx, rx) = watch::channel(Wake::Waking);
        waking.insert(key.clone(), tx.clone());
        let me = self.clone();
        tokio::spawn(async move {
            me.run_wake(&key.0, &key.1, &tx).await;
            // A failure is remembered for a while; otherwise forget at once.
            if matches!(&*tx.borrow(), Wake::Failed(..)) {
                tokio::time::sleep(FAILED_MEMORY).await;
            }
            let mut waking = me.waking.lock().expect("waking");
            if waking.get(&key).is_some_and(|t| t.same_channel(&tx)) {
                waking.remove(&key);
            }
        });
        rx
    }

    /// Scale the Deployment to one replica if it is at zero, then watch its
    /// pods until one is ready (the task ends) or one cannot start. With no
    /// API server answering, start a pod of it on this node instead.
    async fn run_wake(&self, ns: &str, name: &str, tx: &watch::Sender<Wake>) {
        if self.local.offline() {
            return self.wake_here(ns, name, tx).await;
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let deployment = match api.get(name).await {
            Ok(d) => d,
            Err(_) if self.local.offline() => return self.wake_here(ns, name, tx).await,
            Err(e) => {
                let _ = tx.send(Wake::Failed(
                    format!("cannot read Deployment {ns}/{name}: {e}"),
                    Instant::now(),
                ));
                return;
            }
        };
        let replicas = deployment.spec.replicas.unwrap_or(1);
        if replicas == 0 {
            let patch = serde_json::json!({"spec": {"replicas": 1}});
            let scaled = api
                .patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            if let Err(e) = scaled {
                if self.local.offline() {
                    return self.wake_here(ns, name, tx).await;
                }
                let _ = tx.send(Wake::Failed(
                    format!("cannot scale Deployment {ns}/{name}: {e}"),
                    Instant::now(),
                ));
                return;
            }
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            tracing::info!(deployment = %format!("{ns}/{name}"), "scaled from zero");
        }
        let selector = match_labels(&deployment);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let uid = deployment.metadata.uid.clone().unwrap_or_default();
        let started = Instant::now();
        while started.elapsed() < self.cfg.timeout {
            if tx.is_closed() {
                return;
            }
            if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                if list.items.iter().any(pod_ready) {
                    return;
                }
                if let Some(why) = list.items.iter().find_map(cannot_start) {
                    let message = format!("Deployment {ns}/{name} cannot start: {why}");
                    self.events
                        .record_object(
                            ("Deployment", "apps/v1"),
                            (ns, name, &uid),
                            true,
                            "FailedActivation",
                            &message,
                        )
                        .await;
                    let _ = tx.send(Wake::Failed(message, Instant::now()));
                    return;
                }
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }
}

impl Activator {
    /// Wake `ns/name` with no API server to scale it: a pod of its template
    /// as last seen, started by this node (handed over to the cluster's own
    /// once a server answers). The wait for it is the caller's.
    async fn wake_here(&self, ns: &str, name: &str, tx: &watch::Sender<Wake>) {
        let found = self.wakers.borrow().deployment(ns, name);
        let Some(d) = found else {
            let _ = tx.send(Wake::Failed(
                format!("no API server answers and this node has not seen Deployment {ns}/{name}"),
                Instant::now(),
            ));
            return;
        };
        match self.local.start(&d) {
            Some((pod, true)) => {
                self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
                let uid = d.metadata.uid.clone().unwrap_or_default();
                let message = format!(
                    "no API server answers: started pod {pod} on this node from its last view of the Deployment (replaced by the Deployment's own pod once a server answers)"
                );
                self.events
                    .record_object(
                        ("Deployment", "apps/v1"),
                        (ns, name, &uid),
                        false,
                        "ScaledFromZeroOffline",
                        &message,
                    )
                    .await;
            }
            Some((_, false)) => {}
            None => {
                let _ = tx.send(Wake::Failed(
                    format!("Deployment {ns}/{name} has no pod template to start"),
                    Instant::now(),
                ));
            }
        }
    }
}

/// Connect to a just-ready pod: an app may be Ready (no readiness probe)
/// a moment before it listens, so a refusal is retried for a short while.
async fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let until = Instant::now() + CONNECT_RETRY;
    loop {
        match TcpStream::connect(target).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused && Instant::now() < until =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// Decrements the held count when a connection is done.
struct Release<'a>(&'a AtomicUsize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address a connection had before the proxy translated it.
fn original_destination(sock: &TcpStream) -> Option<SocketAddrV4> {
    let sa = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::OriginalDst).ok()?;
    let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
    Some(SocketAddrV4::new(ip, u16::from_be(sa.sin_port)))
}

/// `spec.selector.matchLabels` as a label selector string.
pub(crate) fn match_labels(d: &Deployment) -> String {
    d.spec
        .selector
        .match_labels
        .as_ref()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Ready and not being deleted.
pub(crate) fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waiting reasons that mean the pod will not become ready by waiting.
const CANNOT_START: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Why a pod cannot start, if it cannot.
fn cannot_start(p: &Pod) -> Option<String> {
    if p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = p.metadata.name.as_deref().unwrap_or("");
    let status = p.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(reason) = w.reason.as_deref().filter(|r| CANNOT_START.contains(r))
        {
            let msg = w.message.as_deref().unwrap_or("");
            return Some(format!("pod {name} container {}: {reason}: {msg}", c.name));
        }
    }
    status.conditions.iter().flatten().find_map(|c| {
        (c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable"))
        .then(|| {
            format!(
                "pod {name} is unschedulable: {}",
                c.message.as_deref().unwrap_or("")
            )
        })
    })
}

/// Answer an HTTP 503 (after reading what the client sent, so closing does
/// not reset the connection before the client reads the answer).
async fn respond_503(sock: &mut TcpStream, why: &str, retry_after: u64) {
    let mut buf = vec![0u8; 16 << 10];
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Ok(n) = sock.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() > 64 << 10 {
                break;
            }
        }
    })
    .await;
    let body = format!("{why}\n");
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry_after}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_that_cannot_start_are_named() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "web-1"},
            "status": {"containerStatuses": [{"name": "app", "image": "x", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "no such image"}}}]}}))
        .unwrap();
        let why = cannot_start(&p).unwrap();
        assert!(
            why.contains("web-1") && why.contains("ErrImagePull") && why.contains("no such image")
        );
        let ok: Pod = serde_json::from_value(json!({"metadata": {"name": "web-2"},
            "status": {"containerStatuses": [{"name": "app", "image": "x", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]}}))
        .unwrap();
        assert_eq!(cannot_start(&ok), None);
    }
}
