//! Pods on this node: one worker per pod drives it from bound to deleted —
//! network attachment, sandbox threads, one runner per container, status and
//! events — and cleans up everything it made.
//!
//! **A worker writes the pod's whole status from what it observed; when the pod
//! is deleted it stops the containers, removes the namespace, veth, address and
//! cgroup, and only then lets the API forget the pod.**

pub mod atomic;
pub mod container;
pub mod env;
pub mod events;
pub mod logs;
pub mod probes;
pub mod pull;
pub mod sandbox;
pub mod status;
pub mod subpath;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, Pod, PodSpec};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use skiff_runtimes::{Running, Runtime};
use tokio::sync::watch;

use crate::cgroup::PodCgroup;
use crate::net::PodNetwork;
use events::{Recorder, Subject};
use status::{ContainerState, PodView, Transitions, Waiting, now, qos_class};

/// The runtime handler of Wasm pods.
pub const WASM_HANDLER: &str = skiff_runtimes::wasm::run::HANDLER;
/// The runtime handler of container pods (served when containerd is there).
pub const RUNC_HANDLER: &str = skiff_runtimes::oci::run::HANDLER;

/// Everything pod workers share on one node.
pub struct NodeCtx {
    pub client: Client,
    pub node: String,
    pub host_ip: String,
    pub net: PodNetwork,
    /// The runtimes this node runs containers with, tried in turn.
    pub runtimes: Vec<Arc<dyn Runtime>>,
    pub images: pull::Images,
    pub logs: logs::LogDir,
    pub events: Recorder,
    /// Put pod threads into per-pod cgroups.
    pub cgroups: bool,
    /// The host's cgroups (pod CPU cgroups and the OCI containers' parents).
    pub host_cgroups: Arc<dyn crate::cgroup::Cgroups>,
    /// Where Secret and projected volumes are kept (memory on a node).
    pub volume_media: Arc<dyn volumes::VolumeMedia>,
    /// First restart delay; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Sandboxes already running in warm namespaces, by namespace path.
    pub warm_sandboxes:
        std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, sandbox::Sandbox>>,
    /// Per-pod files (volumes), `<pods_dir>/<uid>`.
    pub pods_dir: std::path::PathBuf,
    /// `Localhost` seccomp profiles (`localhostProfile` is relative to it).
    pub seccomp_dir: std::path::PathBuf,
    /// Runs probe checks against pod IPs.
    pub probes: Arc<dyn probes::Checker>,
    /// What a container without limits may use (downward API).
    pub node_cpu_millis: u64,
    pub node_memory: u64,
    /// Whether privileged containers may run here.
    pub allow_privileged: bool,
    /// Running container tasks (for exec).
    pub tasks: Tasks,
    /// Per-pod CPU, memory and request figures (metrics, autoscaling).
    pub stats: Arc<crate::stats::Stats>,
    /// The pods' ServiceAccount tokens.
    pub tokens: tokens::Tokens,
    /// The `kubernetes` Service's address and port (containers' environment).
    pub api_service: Option<(String, u16)>,
    /// The running pods' eviction handles (the eviction manager's).
    pub evictions: crate::eviction::Evictions,
    /// The node's pressure conditions (admission of new pods).
    pub pressure: watch::Receiver<crate::eviction::Pressure>,
    /// The pods' `hostPort`s (the proxy programs them).
    pub host_ports: Arc<crate::proxy::hostports::HostPorts>,
    /// The Services as this node's proxy routes them now.
    pub routes: watch::Receiver<Arc<Vec<crate::proxy::ServiceView>>>,
    /// The node's `resolv.conf` text (`--resolv-conf`: what `dnsPolicy:
    /// Default` pods get).
    pub node_resolv: String,
    /// The node's cluster DNS (Wasm guests' names resolve through it).
    pub dns: crate::dns::ClusterDns,
    /// The cluster CA (PEM): Wasm guests' outgoing `https` trusts it.
    pub cluster_ca: String,
}

/// Running container tasks by `namespace/pod/container`.
pub type Tasks = Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<dyn Running>>>>;

/// Keep a sandbox (threads already inside the namespace) ready in every warm
/// namespace: entering a network namespace is the slow part of starting a
/// pod's threads, and the kernel does it one thread at a time.
pub async fn keep_sandboxes_warm(ctx: Arc<NodeCtx>) {
    loop {
        let warm = ctx.net.warm_paths();
        let stale: Vec<sandbox::Sandbox> = {
            let mut map = ctx.warm_sandboxes.lock().expect("warm sandboxes");
            let gone: Vec<std::path::PathBuf> =
                map.keys().filter(|p| !warm.contains(p)).cloned().collect();
            gone.iter().filter_map(|p| map.remove(p)).collect()
        };
        for sb in stale {
            sb.stop().await;
        }
        for path in warm {
            if ctx
                .warm_sandboxes
                .lock()
                .expect("warm sandboxes")
                .contains_key(&path)
            {
                continue;
            }
            match sandbox::Sandbox::start("warm", path.clone(), None, WARM_THREADS, ctx.net.host())
                .await
            {
                Ok(sb) => {
                    ctx.warm_sandboxes
                        .lock()
                        .expect("warm sandboxes")
                        .insert(path, sb);
                }
                Err(e) => tracing::debug!(error = %e, "cannot warm a sandbox"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Worker threads of a warm sandbox.
const WARM_THREADS: usize = 2;

impl NodeCtx {
    /// Where a pod's `resolv.conf` comes from on this node.
    pub fn resolv_sources(&self, host_network: bool) -> crate::net::resolv::Sources<'_> {
        crate::net::resolv::Sources {
            cluster: self.net.config().node_cidr.gateway(),
            domain: crate::agent::CLUSTER_DOMAIN,
            node: &self.node_resolv,
            host_network,
        }
    }

    /// The directory of a pod's files.
    pub fn pod_dir(&self, uid: &str) -> volumes::PodDir {
        volumes::PodDir(self.pods_dir.join(uid))
    }

    /// Whether a runtime of this node serves RuntimeClass handler `handler`.
    pub fn offers(&self, handler: &str) -> bool {
        self.runtimes.iter().any(|r| r.handler() == handler)
    }

    /// The delay before restart number `n + 1`.
    pub fn backoff(&self, n: u32) -> Duration {
        self.backoff_initial
            .saturating_mul(1u32 << n.min(16))
            .min(self.backoff_max)
    }
}

/// What a worker knows of its pod that does not change.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub restart_policy: String,
    pub request_timeout: Option<Duration>,
    /// `skiff.dev/max-concurrent-requests`: requests one HTTP container of
    /// the pod handles at once.
    pub max_concurrency: Option<usize>,
    pub active_deadline: Option<Duration>,
    /// terminationGracePeriodSeconds (default 30 s).
    pub grace: Duration,
    /// The pod's metadata as bound, for the downward API.
    pub metadata: ObjectMeta,
    /// The pod's spec as bound (it does not change).
    pub spec: PodSpec,
}

pub use skiff_common::quantity::parse as quantity;

/// `"2s"`, `"500ms"`, `"1m"` → a duration.
pub fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(sec) = s.strip_suffix('s') {
        return sec.parse::<f64>().ok().map(Duration::from_secs_f64);
    }
    if let Some(min) = s.strip_suffix('m') {
        return min
            .parse::<f64>()
            .ok()
            .map(|m| Duration::from_secs_f64(m * 60.0));
    }
    None
}

impl PodInfo {
    pub fn of(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let spec = pod.spec.clone().unwrap_or_default();
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        PodInfo {
            namespace: text(&meta.namespace),
            name: text(&meta.name),
            uid: text(&meta.uid),
            restart_policy: match spec.restart_policy.as_deref() {
                None | Some("") => "Always".to_string(),
                Some(p) => p.to_string(),
            },
            request_timeout: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get("skiff.dev/request-timeout"))
                .map(String::as_str)
                .and_then(duration),
            max_concurrency: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get("skiff.dev/max-concurrent-requests"))
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0),
            active_deadline: spec
                .active_deadline_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            grace: Duration::from_secs(
                spec.termination_grace_period_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(30),
            ),
            metadata: meta.clone(),
            spec,
        }
    }

    pub(crate) fn subject(&self) -> Subject {
        Subject {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            container: None,
        }
    }
}

/// An init container with `restartPolicy: Always`: a sidecar.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// A container's `resources.limits` or `resources.requests` (`kind`) entry
/// for `name`, as written.
pub fn resource<'a>(c: &'a Container, kind: &str, name: &str) -> Option<&'a str> {
    let r = c.resources.as_ref()?;
    let map = match kind {
        "limits" => r.limits.as_ref(),
        "requests" => r.requests.as_ref(),
        _ => None,
    }?;
    map.get(name).map(|q| q.0.as_str())
}

/// Whether the API marked the pod for deletion (or it is gone).
fn deleting(pod: &Option<Pod>) -> bool {
    match pod {
        None => true,
        Some(p) => p.metadata.deletion_timestamp.is_some(),
    }
}

/// Pod threads: the CPU limit rounded up, else up to two.
fn threads(spec: &PodSpec) -> usize {
    let host = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit: f64 = spec
        .containers
        .iter()
        .filter_map(|c| resource(c, "limits", "cpu"))
        .filter_map(quantity)
        .sum();
    if limit > 0.0 {
        (limit.ceil() as usize).clamp(1, host)
    } else {
        host.min(2)
    }
}

/// The pod's CPU: its requests (a container's limit when it requests
/// nothing, as Kubernetes defaults them) and its limit when every container
/// has one, in millicores.
fn pod_cpu(spec: &PodSpec) -> crate::cgroup::PodCpu {
    let millis = |c: &Container, kind: &str| {
        resource(c, kind, "cpu")
            .and_then(quantity)
            .map(|q| (q * 1000.0).round().max(0.0) as u64)
    };
    let limit_millis = spec
        .containers
        .iter()
        .map(|c| millis(c, "limits"))
        .sum::<Option<u64>>();
    let request_millis = spec
        .containers
        .iter()
        .filter_map(|c| millis(c, "requests").or_else(|| millis(c, "limits")))
        .sum();
    crate::cgroup::PodCpu {
        request_millis,
        limit_millis,
    }
}

/// Tells the node's statistics when the pod is Ready, from the status the
/// agent is about to write.
struct LocalReady {
    stats: Arc<crate::stats::Stats>,
    uid: String,
    namespace: String,
    labels: std::collections::BTreeMap<String, String>,
    ports: Vec<(String, u16, String)>,
}

impl LocalReady {
    fn new(ctx: &NodeCtx, info: &PodInfo) -> LocalReady {
        let labels = info.metadata.labels.clone().unwrap_or_default();
        let ports = info
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.container_port).ok()?,
                    p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                ))
            })
            .collect();
        LocalReady {
            stats: ctx.stats.clone(),
            uid: info.uid.clone(),
            namespace: info.namespace.clone(),
            labels,
            ports,
        }
    }

    /// Follow the pod's computed status until its sender is dropped (as soon
    /// as it changes, not after the previous status write), then forget the pod.
    async fn follow(self, mut rx: watch::Receiver<Arc<Computed>>) {
        loop {
            let c = rx.borrow_and_update().clone();
            self.update(c.ready, c.pod_ip.as_deref());
            if rx.changed().await.is_err() {
                self.stats.forget_ready(&self.uid);
                return;
            }
        }
    }

    fn update(&self, ready: bool, ip: Option<&str>) {
        let pod = ip
            .and_then(|ip| ip.parse().ok())
            .filter(|_| ready)
            .map(|ip| crate::stats::ReadyPod {
                namespace: self.namespace.clone(),
                labels: self.labels.clone(),
                ip,
                ports: self.ports.clone(),
            });
        self.stats.set_ready(&self.uid, pod);
    }
}

/// A pod's status as computed from its view: what the status writer sends
/// and what the node's readiness view (the activator's) reads.
#[derive(Debug)]
struct Computed {
    status: Value,
    /// The status's `Ready` condition.
    ready: bool,
    pod_ip: Option<String>,
    phase: &'static str,
}

impl Computed {
    fn of(view: &PodView, transitions: &mut Transitions) -> Computed {
        Computed {
            status: view.status(transitions),
            ready: view.ready(),
            pod_ip: view.pod_ip.clone(),
            phase: view.phase(),
        }
    }
}

/// Compute the pod's status once per change of its view; the channel closes
/// when the view's sender is dropped.
fn statuses(mut view: watch::Receiver<PodView>) -> watch::Receiver<Arc<Computed>> {
    let mut transitions = Transitions::default();
    let first = Computed::of(&view.borrow_and_update(), &mut transitions);
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            let c = Computed::of(&view.borrow_and_update(), &mut transitions);
            tx.send_replace(Arc::new(c));
        }
    });
    rx
}

/// Write the pod's status whenever it changes, until its sender is dropped.
async fn write_status(api: Api<Pod>, name: String, mut rx: watch::Receiver<Arc<Computed>>) {
    let mut last = Value::Null;
    loop {
        let c = rx.borrow_and_update().clone();
        if c.status != last {
            let t = std::time::Instant::now();
            let result = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": c.status})),
                )
                .await;
            tracing::debug!(
                ms = t.elapsed().as_millis() as u64,
                phase = c.phase,
                "status written"
            );
            match result {
                Ok(_) => last = c.status.clone(),
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    tracing::debug!(pod = %name, error = %e, "status write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The reason a pod cannot run on this node's Wasm runtime, if any.
async fn runtime_problem(ctx: &NodeCtx, spec: &PodSpec) -> Option<String> {
    let class = spec.runtime_class_name.as_deref()?;
    let api: Api<RuntimeClass> = Api::all(ctx.client.clone());
    match api.get_opt(class).await {
        Ok(Some(rc)) if rc.handler == WASM_HANDLER && ctx.offers(WASM_HANDLER) => None,
        Ok(Some(rc)) if rc.handler == RUNC_HANDLER && ctx.offers(RUNC_HANDLER) => None,
        Ok(Some(rc)) => Some(format!(
            "RuntimeClass {class:?} needs handler {:?}, which this node does not offer (it runs {})",
            rc.handler,
            if ctx.offers(RUNC_HANDLER) {
                "wasmtime and runc"
            } else {
                "wasmtime"
            }
        )),
        Ok(None) => Some(format!("RuntimeClass {class:?} not found")),
        Err(e) => Some(format!("cannot read RuntimeClass {class:?}: {e}")),
    }
}

/// Drive one pod from bound to deleted. `pod` carries the latest object
/// (`None` once it is gone from the API).
pub async fn run(ctx: Arc<NodeCtx>, mut pod: watch::Receiver<Option<Pod>>) {
    let Some(first) = pod.borrow().clone() else {
        return;
    };
    let info = Arc::new(PodInfo::of(&first));
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &info.namespace);
    let spec = &info.spec;
    let (inits, containers) = (
        spec.init_containers.as_deref().unwrap_or_default(),
        &spec.containers,
    );
    let observed = first.status.unwrap_or_default();
    let phase = observed.phase.clone().unwrap_or_default();
    // An agent restart keeps counting where the status left off, and does not
    // run init containers again once they all succeeded.
    let previous = |init: bool, name: &str| {
        let list = if init {
            &observed.init_container_statuses
        } else {
            &observed.container_statuses
        };
        list.iter().flatten().find(|s| s.name == name)
    };
    let initialized_before = !inits.is_empty()
        && observed
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Initialized" && c.status == "True");
    let state_of = |c: &Container, init: bool| {
        let name = c.name.as_str();
        let mut st = ContainerState::new(name, c.image.as_deref().unwrap_or_default());
        st.sidecar = init && is_sidecar(c);
        let prev = previous(init, name);
        st.restarts = prev.map_or(0, |s| u32::try_from(s.restart_count).unwrap_or(0));
        if init && initialized_before && !st.sidecar {
            let terminated = prev
                .and_then(|s| s.state.as_ref())
                .and_then(|s| s.terminated.as_ref());
            let t = |at: fn(&ContainerStateTerminated) -> Option<&Time>| {
                terminated.and_then(at).map_or_else(now, status::rfc3339)
            };
            st.state = status::State::Terminated(status::Ended {
                exit_code: 0,
                reason: status::EndReason::Completed,
                message: None,
                started_at: t(|t| t.started_at.as_ref()),
                finished_at: t(|t| t.finished_at.as_ref()),
            });
            st.done = true;
        } else if init || (!inits.is_empty() && !initialized_before) {
            st.state = status::State::Waiting {
                reason: Waiting::PodInitializing,
                message: None,
            };
        }
        st
    };
    let view = PodView {
        uid: info.uid.clone(),
        host_ip: ctx.host_ip.clone(),
        pod_ip: None,
        start_time: observed
            .start_time
            .as_ref()
            .map_or_else(now, status::rfc3339),
        qos: qos_class(spec),
        init_containers: inits.iter().map(|c| state_of(c, true)).collect(),
        containers: containers.iter().map(|c| state_of(c, false)).collect(),
        init_done: initialized_before,
        sandbox_error: None,
        evicted: None,
    };
    let (view_tx, view_rx) = watch::channel(view);
    let finished = matches!(phase.as_str(), "Succeeded" | "Failed");
    if !finished {
        // One status, computed once per change, for the API and for the node.
        let computed = statuses(view_rx);
        // The node hears of readiness first (the activator forwards at once).
        tokio::spawn(LocalReady::new(&ctx, &info).follow(computed.clone()));
        let writer = tokio::spawn(write_status(api.clone(), info.name.clone(), computed));
        // A node under pressure turns new pods away, as the kubelet's
        // admission does (a pod that already started here keeps its place).
        let admitted = match observed.start_time {
            None => ctx.pressure.borrow().admit(spec),
            Some(_) => Ok(()),
        };
        match admitted {
            Err(message) => {
                tracing::warn!(%message, "pod rejected: the node is under pressure");
                ctx.events
                    .record(&info.subject(), true, "Evicted", &message)
                    .await;
                view_tx.send_modify(|v| v.evicted = Some((message, false)));
            }
            Ok(()) => {
                let evicted = ctx.evictions.register(info.clone());
                if let Some(started) = start(&ctx, &info, &view_tx, &mut pod).await {
                    let grace = run_until_done(&mut pod, &view_tx, evicted, &info).await;
                    let ip = view_tx.borrow().pod_ip.clone();
                    stop(started, &ctx, &info, grace, ip).await;
                }
                ctx.evictions.forget(&info.uid);
            }
        }
        drop(view_tx);
        let _ = writer.await;
    }
    ctx.host_ports.release(&info.uid);
    // A finished pod keeps its status (and its logs) until it is deleted.
    // A failed clean-up keeps the address on record; try again before giving
    // up (the agent's start-up sweep releases what is left).
    for attempt in 1..=3 {
        match ctx.net.detach(&info.uid).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "pod network clean-up failed");
                tokio::time::sleep(Duration::from_secs(attempt)).await;
            }
        }
    }
    // A pod that ran its course gives its volumes back at once, as the
    // kubelet tears down a terminated pod's volumes (an evicted pod's disk
    // and memory are what the node needed); its logs stay until it is
    // deleted.
    ctx.pod_dir(&info.uid).remove(&*ctx.volume_media);
    let _ = pod.wait_for(deleting).await;
    ctx.logs.remove(&info.namespace, &info.name, &info.uid);
    ctx.tokens.forget(&info.uid);
    if pod.borrow().is_some() {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(info.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = api.delete(&info.name, &dp).await {
            tracing::debug!(error = %e, "final pod delete");
        }
    }
    tracing::info!(pod = %format!("{}/{}", info.namespace, info.name), "pod cleaned up");
}

/// Run until the pod is deleted, is done for good or is evicted; the grace
/// period its containers then get (an eviction's is short).
async fn run_until_done(
    pod: &mut watch::Receiver<Option<Pod>>,
    view: &watch::Sender<PodView>,
    mut evicted: watch::Receiver<Option<String>>,
    info: &PodInfo,
) -> Duration {
    let mut done = view.subscribe();
    tokio::select! {
        _ = pod.wait_for(deleting) => info.grace,
        _ = done.wait_for(PodView::finished) => info.grace,
        r = evicted.wait_for(Option::is_some) => {
            let message = r.ok().and_then(|m| m.clone()).unwrap_or_default();
            view.send_modify(|v| v.evicted = Some((message, true)));
            crate::eviction::EVICTION_GRACE.min(info.grace)
        }
    }
}

/// Longest a stopping pod waits for this node's Services to stop routing to
/// it before its containers are told to stop.
const UNROUTE_WAIT: Duration = Duration::from_secs(5);

/// Wait (at most `within`) until no Service of this node's proxy routes to
/// `ip`; how long that took.
async fn unrouted(
    mut routes: watch::Receiver<Arc<Vec<crate::proxy::ServiceView>>>,
    ip: std::net::Ipv4Addr,
    within: Duration,
) -> Duration {
    let t = tokio::time::Instant::now();
    let routed = |views: &Arc<Vec<crate::proxy::ServiceView>>| {
        views.iter().any(|v| {
            v.ports
                .iter()
                .any(|p| p.endpoints.iter().any(|(a, _)| *a == ip))
        })
    };
    if !routed(&routes.borrow_and_update()) {
        return Duration::ZERO;
    }
    let _ = tokio::time::timeout(within, routes.wait_for(|v| !routed(v))).await;
    t.elapsed()
}

/// Stop the containers (each with what is left of `grace` between SIGTERM
/// and SIGKILL), then the pod's threads, then remove its cgroup. A pod
/// behind a Service first waits for the node's proxy to stop sending it new
/// connections (the endpoint's removal takes a moment to reach the rules),
/// so no client is refused by a server that already closed.
async fn stop(
    (stop_tx, runners, sandbox, cgroup): Started,
    ctx: &NodeCtx,
    info: &PodInfo,
    grace: Duration,
    ip: Option<String>,
) {
    ctx.stats.stopping(&info.uid);
    let waited = match ip.and_then(|ip| ip.parse().ok()) {
        Some(ip) => unrouted(ctx.routes.clone(), ip, grace.min(UNROUTE_WAIT)).await,
        None => Duration::ZERO,
    };
    let grace = grace.saturating_sub(waited);
    let _ = stop_tx.send(Some(grace));
    for r in runners {
        let abort = r.abort_handle();
        if tokio::time::timeout(grace + Duration::from_secs(10), r)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    sandbox.stop().await;
    ctx.stats.remove_pod(&info.uid);
    if let Some(cg) = cgroup {
        cg.delete();
    }
    if ctx.offers(RUNC_HANDLER) {
        let (node, uid, host) = (ctx.node.clone(), info.uid.clone(), ctx.host_cgroups.clone());
        let _ = tokio::task::spawn_blocking(move || host.remove_pod_dirs(&node, &uid)).await;
    }
}

type Started = (
    watch::Sender<Option<Duration>>,
    Vec<tokio::task::JoinHandle<()>>,
    sandbox::Sandbox,
    Option<PodCgroup>,
);

/// How often a running pod's ConfigMap, Secret and downward API volumes are
/// brought up to date.
pub const VOLUME_SYNC_PERIOD: Duration = Duration::from_secs(10);

/// Aborts a task when dropped.
struct AbortOnDrop<T = ()>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Write the pod's volumes from the current ConfigMaps and Secrets.
async fn sync_volumes(
    ctx: &NodeCtx,
    info: &PodInfo,
    view: &watch::Sender<PodView>,
    latest: &watch::Receiver<Option<Pod>>,
) -> Result<(), String> {
    // The downward API follows label and annotation edits.
    let metadata = match &*latest.borrow() {
        Some(p) => p.metadata.clone(),
        None => info.metadata.clone(),
    };
    let facts = env::PodFacts {
        metadata,
        spec: info.spec.clone(),
        pod_ip: view.borrow().pod_ip.clone(),
        host_ip: ctx.host_ip.clone(),
        node_cpu_millis: ctx.node_cpu_millis,
        node_memory: ctx.node_memory,
        api_service: ctx.api_service.clone(),
    };
    let refs = volumes::refs(&info.spec);
    let mut sources = env::Sources::fetch(&ctx.client, &info.namespace, &refs)
        .await
        .map_err(|e| e.to_string())?;
    let holder = tokens::Holder {
        namespace: &info.namespace,
        pod: &info.name,
        uid: &info.uid,
        account: info
            .spec
            .service_account_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("default"),
    };
    for r in &refs.tokens {
        let token = ctx.tokens.get(&ctx.client, &holder, r).await?;
        sources.tokens.insert(r.clone(), token);
    }
    let dir = ctx.pod_dir(&info.uid);
    let media = ctx.volume_media.clone();
    tokio::task::spawn_blocking(move || {
        volumes::materialise(&dir, &facts.spec, &facts, &sources, &*media)
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))
}

/// Set up the pod's volumes (retried until they can be), run its init
/// containers one by one to success, then run its containers until the pod
/// stops.
async fn supervise(
    ctx: Arc<NodeCtx>,
    info: Arc<PodInfo>,
    view: watch::Sender<PodView>,
    (sandbox, netns): (tokio::runtime::Handle, std::path::PathBuf),
    mut stop: watch::Receiver<Option<Duration>>,
    latest: watch::Receiver<Option<Pod>>,
) {
    let mut failures = 0u32;
    loop {
        let result = sync_volumes(&ctx, &info, &view, &latest).await;
        let Err(message) = result else { break };
        ctx.events
            .record(&info.subject(), true, "FailedMount", &message)
            .await;
        view.send_modify(|v| {
            for c in v.init_containers.iter_mut().chain(v.containers.iter_mut()) {
                c.state = status::State::Waiting {
                    reason: Waiting::ContainerCreating,
                    message: Some(message.clone()),
                };
            }
        });
        let delay = ctx.backoff(failures).min(Duration::from_secs(10));
        failures += 1;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(Option::is_some) => return,
        }
    }
    // Keep ConfigMap, Secret and downward API volumes up to date, as the
    // kubelet does, while the pod runs.
    let _refresh = AbortOnDrop(tokio::spawn({
        let (ctx, info, view, latest) = (ctx.clone(), info.clone(), view.clone(), latest.clone());
        async move {
            loop {
                tokio::time::sleep(VOLUME_SYNC_PERIOD).await;
                if !ctx.pod_dir(&info.uid).0.exists() {
                    return;
                }
                if let Err(e) = sync_volumes(&ctx, &info, &view, &latest).await {
                    tracing::debug!(pod = %info.name, error = %e, "volumes keep their last contents");
                }
            }
        }
    }));
    let runner = |init: bool, index: usize, c: &Container| container::Runner {
        ctx: ctx.clone(),
        pod: info.clone(),
        init,
        index,
        spec: c.clone(),
        view: view.clone(),
        sandbox: sandbox.clone(),
        netns: netns.clone(),
        stop: stop.clone(),
    };
    let (inits, containers) = (
        info.spec.init_containers.as_deref().unwrap_or_default(),
        &info.spec.containers,
    );
    if failures > 0 {
        // Volumes are there now: back to the states before they were.
        let initialized = view.borrow().initialized();
        view.send_modify(|v| {
            for c in &mut v.init_containers {
                if !c.done {
                    c.state = status::State::Waiting {
                        reason: Waiting::PodInitializing,
                        message: None,
                    };
                }
            }
            for c in &mut v.containers {
                c.state = status::State::Waiting {
                    reason: if initialized {
                        Waiting::ContainerCreating
                    } else {
                        Waiting::PodInitializing
                    },
                    message: None,
                };
            }
        });
    }
    // Sidecars run beside everything after them until the pod stops.
    let mut sidecars = Vec::new();
    for (i, c) in inits.iter().enumerate() {
        if view.borrow().init_containers[i].done {
            continue;
        }
        tracing::info!(pod = %info.name, container = %c.name, "init container");
        if is_sidecar(c) {
            sidecars.push(tokio::spawn(runner(true, i, c).run()));
            let (mut seen, mut stopping) = (view.subscribe(), stop.clone());
            tokio::select! {
                _ = seen.wait_for(|v| v.init_completed(i)) => {}
                _ = stopping.wait_for(Option::is_some) => return,
            }
            continue;
        }
        runner(true, i, c).run().await;
        if !view.borrow().init_completed(i) {
            // Stopped, or failed for good (the pod is Failed).
            return;
        }
    }
    view.send_modify(|v| v.init_done = true);
    if !inits.is_empty() {
        view.send_modify(|v| {
            for c in &mut v.containers {
                if matches!(&c.state, status::State::Waiting { reason, .. } if *reason == Waiting::PodInitializing) {
                    c.state = status::State::Waiting {
                        reason: Waiting::ContainerCreating,
                        message: None,
                    };
                }
            }
        });
    }
    let runners: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(runner(false, i, c).run()))
        .collect();
    for r in runners.into_iter().chain(sidecars) {
        let _ = r.await;
    }
}

/// Attach the network, start the sandbox and the pod's supervisor. Returns
/// `None` when the pod was deleted before it could start.
async fn start(
    ctx: &Arc<NodeCtx>,
    info: &Arc<PodInfo>,
    view: &watch::Sender<PodView>,
    pod: &mut watch::Receiver<Option<Pod>>,
) -> Option<Started> {
    let spec = &info.spec;
    let mut failures = 0u32;
    loop {
        if deleting(&pod.borrow()) {
            return None;
        }
        match prepare(ctx, info, spec).await {
            Ok((ip, sandbox, cgroup, netns)) => {
                let names = spec
                    .init_containers
                    .iter()
                    .flatten()
                    .chain(&spec.containers)
                    .map(|c| c.name.clone())
                    .collect();
                ctx.stats.add_pod(
                    &info.namespace,
                    &info.name,
                    &info.uid,
                    names,
                    cgroup.clone(),
                );
                view.send_modify(|v| {
                    v.pod_ip = Some(ip);
                    v.sandbox_error = None;
                });
                let (stop_tx, stop_rx) = watch::channel(None);
                let runners = vec![tokio::spawn(supervise(
                    ctx.clone(),
                    info.clone(),
                    view.clone(),
                    (sandbox.handle(), netns),
                    stop_rx,
                    pod.clone(),
                ))];
                return Some((stop_tx, runners, sandbox, cgroup));
            }
            Err((reason, message)) => {
                ctx.events
                    .record(&info.subject(), true, reason, &message)
                    .await;
                view.send_modify(|v| {
                    for c in v.init_containers.iter_mut().chain(v.containers.iter_mut()) {
                        c.state = status::State::Waiting {
                            reason: if reason == "CreateContainerConfigError" {
                                Waiting::CreateContainerConfigError
                            } else {
                                Waiting::ContainerCreating
                            },
                            message: Some(message.clone()),
                        };
                    }
                });
                let delay = ctx.backoff(failures).max(Duration::from_secs(1));
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = pod.wait_for(deleting) => return None,
                }
            }
        }
    }
}

/// The node's network namespace as a path other processes (runc) can
/// open: the agent's own.
pub fn host_netns() -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))
}

async fn prepare(
    ctx: &NodeCtx,
    info: &PodInfo,
    spec: &PodSpec,
) -> Result<
    (
        String,
        sandbox::Sandbox,
        Option<PodCgroup>,
        std::path::PathBuf,
    ),
    (&'static str, String),
> {
    let t = std::time::Instant::now();
    if let Some(problem) = runtime_problem(ctx, spec).await {
        return Err(("CreateContainerConfigError", problem));
    }
    let host_network = spec.host_network == Some(true);
    let attached = if host_network {
        // The node's own network: its namespace (the agent's) and address.
        crate::net::Attachment {
            netns: host_netns(),
            ip: ctx.host_ip.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST),
        }
    } else {
        ctx.net
            .attach(&info.uid)
            .await
            .map_err(|e| ("FailedCreatePodSandBox", format!("pod network: {e}")))?
    };
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "pod network attached");
    let pod = format!("{}/{}", info.namespace, info.name);
    let ports = crate::proxy::hostports::of(spec, &pod, (!host_network).then_some(attached.ip));
    ctx.host_ports
        .claim(&info.uid, ports)
        .map_err(|e| ("FailedCreatePodSandBox", e))?;
    if let (Some(ns_name), false) = (attached.netns.file_name(), host_network) {
        let text = crate::net::resolv::render(&info.namespace, spec, &ctx.resolv_sources(false));
        ctx.net
            .host()
            .write_resolv(&ns_name.to_string_lossy(), &text)
            .map_err(|e| ("FailedCreatePodSandBox", format!("pod dns: {e}")))?;
    }
    let cgroup_t = std::time::Instant::now();
    let cgroup = if ctx.cgroups {
        let (node, uid, cpu) = (ctx.node.clone(), info.uid.clone(), pod_cpu(spec));
        let host = ctx.host_cgroups.clone();
        let made = tokio::task::spawn_blocking(move || host.create(&node, &uid, cpu))
            .await
            .unwrap_or_else(|e| {
                Err(crate::cgroup::CgroupError {
                    path: String::new(),
                    reason: e.to_string(),
                })
            });
        match made {
            Ok(cg) => Some(cg),
            Err(e) => {
                tracing::warn!(error = %e, "no cgroup for this pod; its CPU is accounted to the agent");
                None
            }
        }
    } else {
        None
    };
    tracing::debug!(
        ms = cgroup_t.elapsed().as_millis() as u64,
        "pod cgroup made"
    );
    let warm = ctx
        .warm_sandboxes
        .lock()
        .expect("warm sandboxes")
        .remove(&attached.netns);
    let sandbox = match warm {
        Some(sb) if sb.threads() >= threads(spec) && sb.check().is_ok() => {
            if let Some(cg) = &cgroup {
                sb.assign_cgroup(cg.clone());
            }
            sb
        }
        other => {
            if let Some(sb) = other {
                sb.stop().await;
            }
            sandbox::Sandbox::start(
                &info.name,
                attached.netns.clone(),
                cgroup.clone(),
                threads(spec),
                ctx.net.host(),
            )
            .await
            .map_err(|e| {
                // The cgroup made for these threads goes with them.
                if let Some(cg) = &cgroup {
                    cg.delete();
                }
                ("FailedCreatePodSandBox", e.to_string())
            })?
        }
    };
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "pod sandbox started");
    Ok((attached.ip.to_string(), sandbox, cgroup, attached.netns))
}
