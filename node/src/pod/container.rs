//! One container of a Wasm pod, from image to exit: pull, compile (cached),
//! run as an HTTP app or a command inside the pod's sandbox, and restart by the
//! pod's `restartPolicy` with capped exponential back-off.
//!
//! **Every failure becomes a Waiting or Terminated state with a reason and a
//! message naming the cause, and an event; nothing here panics the agent.**

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use skiff_runtimes::{Content, RunRequest, Running};
use tokio::sync::watch;

use super::env::{self, ConfigError, Env, PodFacts, Refs, Sources};
use super::events::Subject;
use super::probes::{self, Probe, ProbeKind, Report};
use super::status::{EndReason, Ended, PodView, State, Waiting, now};
use super::{NodeCtx, PodInfo, volumes};

mod oci;
mod wasm;

/// Longest wait between retries of a container whose configuration is missing
/// (a ConfigMap or Secret created later is picked up within this).
const CONFIG_RETRY_MAX: Duration = Duration::from_secs(10);
/// A container that ran this long starts its restart back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Port a Wasm HTTP container listens on when it declares none.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Longest a request may take unless the pod says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Resolve once the pod is told to stop.
async fn stopped(rx: &mut watch::Receiver<Option<Duration>>) {
    let _ = rx.wait_for(Option::is_some).await;
}

/// What one container needs to run.
pub struct Runner {
    pub ctx: Arc<NodeCtx>,
    pub pod: Arc<PodInfo>,
    /// An init container (index into `init_containers`) or an app container.
    pub init: bool,
    pub index: usize,
    pub spec: Container,
    pub view: watch::Sender<PodView>,
    pub sandbox: tokio::runtime::Handle,
    /// The pod's network namespace (containers of every runtime share it).
    pub netns: std::path::PathBuf,
    /// `Some(grace)` once the pod is told to stop: the grace period its
    /// containers get (the pod's own, or an eviction's).
    pub stop: watch::Receiver<Option<Duration>>,
}

enum Outcome {
    /// The container ended this way.
    Ended(Ended),
    /// Could not start: (reason, message); retried with back-off.
    Failed(Waiting, String),
    /// The pod is stopping.
    Stopped,
}

impl Runner {
    fn name(&self) -> String {
        self.spec.name.clone()
    }

    fn subject(&self) -> Subject {
        Subject {
            namespace: self.pod.namespace.clone(),
            name: self.pod.name.clone(),
            uid: self.pod.uid.clone(),
            container: Some(self.name()),
        }
    }

    fn update(&self, f: impl FnOnce(&mut super::status::ContainerState)) {
        let (i, init) = (self.index, self.init);
        self.view.send_modify(|v| {
            let list = if init {
                &mut v.init_containers
            } else {
                &mut v.containers
            };
            if let Some(c) = list.get_mut(i) {
                f(c);
            }
        });
    }

    /// An init container with `restartPolicy: Always`.
    fn sidecar(&self) -> bool {
        self.init && super::is_sidecar(&self.spec)
    }

    fn restarts(&self) -> u32 {
        let v = self.view.borrow();
        let list = if self.init {
            &v.init_containers
        } else {
            &v.containers
        };
        list.get(self.index).map_or(0, |c| c.restarts)
    }

    fn facts(&self) -> PodFacts {
        PodFacts {
            metadata: self.pod.metadata.clone(),
            spec: self.pod.spec.clone(),
            pod_ip: self.view.borrow().pod_ip.clone(),
            host_ip: self.ctx.host_ip.clone(),
            node_cpu_millis: self.ctx.node_cpu_millis,
            node_memory: self.ctx.node_memory,
            api_service: self.ctx.api_service.clone(),
        }
    }

    /// The container's environment and mounts, from the objects it refers to.
    async fn config(&self) -> Result<(Env, Vec<skiff_runtimes::Mount>), ConfigError> {
        // The name becomes part of host paths (logs, container ids).
        let name = self.name();
        volumes::plain_name(&name)
            .map_err(|why| ConfigError::Invalid(format!("container name {name:?} {why}")))?;
        let refs = Refs::of_container(&self.spec);
        let sources = Sources::fetch(&self.ctx.client, &self.pod.namespace, &refs).await?;
        let env = env::resolve(&self.spec, &self.facts(), &sources)?;
        let mounts = volumes::mounts(
            &self.ctx.pod_dir(&self.pod.uid),
            &self.pod.spec,
            &self.spec,
            self.ctx.volume_media.as_ref(),
        )?;
        Ok((env, mounts))
    }

    fn set_waiting(&self, reason: Waiting, message: Option<String>) {
        self.update(|c| {
            c.state = State::Waiting { reason, message };
        });
    }

    fn stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// The grace period the containers get now that the pod stops.
    fn stop_grace(&self) -> Duration {
        self.stop.borrow().unwrap_or(self.pod.grace)
    }

    /// Sleep, or return false early when the pod stops.
    async fn wait(&mut self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        let stopped = tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = stopped(&mut stop) => true,
        };
        !stopped && !self.stopping()
    }

    /// Run the container until the pod stops or it is done for good.
    pub async fn run(mut self) {
        let mut failures: u32 = 0;
        // Restarts in a row; a run of 10 minutes resets it, as the kubelet's
        // back-off does.
        let mut crashes: u32 = 0;
        loop {
            if self.stopping() {
                return;
            }
            let began = std::time::Instant::now();
            let outcome = self.attempt().await;
            let (delay, waiting) = match outcome {
                Outcome::Stopped => return,
                Outcome::Failed(reason, message) => {
                    failures += 1;
                    self.ctx
                        .events
                        .record(&self.subject(), true, "Failed", &message)
                        .await;
                    self.set_waiting(reason, Some(message.clone()));
                    let backoff_reason = reason.backing_off();
                    let d = self.ctx.backoff(failures - 1);
                    if reason == Waiting::CreateContainerConfigError {
                        // The kubelet keeps the error itself as the message
                        // while it retries.
                        let d = d.min(CONFIG_RETRY_MAX);
                        if !self.wait(d).await {
                            return;
                        }
                        continue;
                    }
                    // Show the error first, then the back-off.
                    if !self.wait(Duration::from_millis(500).min(d)).await {
                        return;
                    }
                    let message = if reason == Waiting::ErrImagePull {
                        let image = self.spec.image.clone().unwrap_or_default();
                        self.ctx
                            .events
                            .record(
                                &self.subject(),
                                false,
                                "BackOff",
                                &format!("Back-off pulling image {image:?}"),
                            )
                            .await;
                        format!("Back-off pulling image {image:?}: ErrImagePull: {message}")
                    } else {
                        format!("Back-off {}s: {message}", d.as_secs().max(1))
                    };
                    (d, Some((backoff_reason, message)))
                }
                Outcome::Ended(e) => {
                    failures = 0;
                    let again = match self.pod.restart_policy.as_str() {
                        // A sidecar restarts whatever the pod's policy.
                        _ if self.sidecar() => true,
                        "Never" => false,
                        // An init container that succeeded is done for good.
                        _ if self.init => e.exit_code != 0,
                        "OnFailure" => e.exit_code != 0,
                        _ => true,
                    };
                    if !again {
                        self.update(|c| {
                            c.state = State::Terminated(e);
                            c.done = true;
                        });
                        return;
                    }
                    if began.elapsed() >= BACKOFF_RESET {
                        crashes = 0;
                    }
                    let d = self.ctx.backoff(crashes);
                    crashes += 1;
                    let msg = format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        d.as_secs().max(1),
                        self.name(),
                        self.pod.name,
                        self.pod.namespace,
                        self.pod.uid
                    );
                    self.update(|c| {
                        c.last = Some(e);
                        c.restarts += 1;
                    });
                    self.ctx
                        .events
                        .record(
                            &self.subject(),
                            true,
                            "BackOff",
                            "Back-off restarting failed container",
                        )
                        .await;
                    (d, Some((Waiting::CrashLoopBackOff, msg)))
                }
            };
            if let Some((reason, message)) = waiting {
                self.set_waiting(reason, Some(message));
            }
            if !self.wait(delay).await {
                return;
            }
        }
    }

    /// One run: configure, pull, pick the runtime, start, and wait for the
    /// end or the stop.
    async fn attempt(&mut self) -> Outcome {
        let t = std::time::Instant::now();
        let (env, mounts) = match self.config().await {
            Ok(x) => x,
            Err(e) => return Outcome::Failed(Waiting::CreateContainerConfigError, e.to_string()),
        };
        if !env.skipped.is_empty() {
            let msg = format!(
                "Keys [{}] from the EnvFrom of container {} were skipped since they are invalid environment variable names",
                env.skipped.join(", "),
                self.name()
            );
            self.ctx
                .events
                .record(
                    &self.subject(),
                    true,
                    "InvalidEnvironmentVariableNames",
                    &msg,
                )
                .await;
        }
        let probes = match [
            ProbeKind::Startup,
            ProbeKind::Liveness,
            ProbeKind::Readiness,
        ]
        .into_iter()
        .filter_map(|k| Probe::of(&self.spec, k))
        .collect::<Result<Vec<Probe>, String>>()
        {
            // Init containers have no probes (the API refuses them).
            Ok(_) if self.init && !self.sidecar() => Vec::new(),
            Ok(p) => p,
            Err(e) => return Outcome::Failed(Waiting::CreateContainerConfigError, e),
        };
        let image = self.spec.image.clone().unwrap_or_default();
        let policy = self.spec.image_pull_policy.clone();
        let keyring = self.pull_secrets().await;
        let (events, subject) = (self.ctx.events.clone(), self.subject());
        let notify = move |reason: &'static str, message: String| {
            let (events, subject) = (events.clone(), subject.clone());
            tokio::spawn(async move { events.record(&subject, false, reason, &message).await });
        };
        let pulled = match self
            .ctx
            .images
            .pull(&image, policy.as_deref(), &keyring, &notify)
            .await
        {
            Ok(p) => p,
            Err(e @ super::pull::ImageError::NotAnImage { .. }) => {
                return Outcome::Failed(Waiting::CreateContainerError, e.to_string());
            }
            Err(e @ super::pull::ImageError::NeverPull { .. }) => {
                return Outcome::Failed(Waiting::ErrImageNeverPull, e.to_string());
            }
            Err(e) => return Outcome::Failed(Waiting::ErrImagePull, e.to_string()),
        };
        self.update(|c| c.image_id = pulled.image_id.clone());
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "image ready");
        let runtime = match skiff_runtimes::runtime::pick(&self.ctx.runtimes, &pulled.content) {
            Ok(rt) => rt.clone(),
            Err(_) => {
                let why = match pulled.content {
                    Content::Oci(_) => format!(
                        "image {image:?} is a container image, and this node has no container runtime (containerd is not available)"
                    ),
                    Content::Wasm { .. } => {
                        format!(
                            "image {image:?} is a Wasm component, and this node has no Wasm runtime"
                        )
                    }
                };
                return Outcome::Failed(Waiting::CreateContainerError, why);
            }
        };
        if matches!(pulled.content, Content::Wasm { .. })
            && let Some(m) = mounts.iter().find(|m| !m.host_path.is_dir())
        {
            return Outcome::Failed(
                Waiting::CreateContainerConfigError,
                format!(
                    "the mount at {} is not a directory; a Wasm component can only be given directories",
                    m.guest_path
                ),
            );
        }
        let req = self.request(env, mounts);
        let memory = req.spec.memory_limit;
        let run = match runtime.start(&pulled.content, req).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(Waiting::from(&e), e.to_string()),
        };
        if run.serves_http()
            && let Some(e) = self.ctx.stats.pod(&self.pod.uid)
        {
            e.serves_http.store(true, Ordering::Relaxed);
        }
        let key = self.task_key();
        if run.can_exec() {
            self.ctx
                .tasks
                .lock()
                .expect("tasks")
                .insert(key.clone(), run.clone());
        }
        let outcome = self.supervise(&run, &probes, memory).await;
        if run.can_exec() {
            self.ctx.tasks.lock().expect("tasks").remove(&key);
        }
        run.remove().await;
        outcome
    }

    /// The credentials of the pod's `imagePullSecrets`; one that cannot be
    /// read or used is an event, and the pull goes on without it (as the
    /// kubelet's does).
    async fn pull_secrets(&self) -> super::pull::creds::Keyring {
        let mut ring = super::pull::creds::Keyring::default();
        let names: Vec<String> = self
            .pod
            .spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return ring;
        }
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.ctx.client.clone(), &self.pod.namespace);
        let mut problems = Vec::new();
        for name in names {
            match api.get_opt(&name).await {
                Ok(Some(sec)) => {
                    let data = sec
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    let kind = sec.type_.unwrap_or_default();
                    if let Err(e) = ring.add_secret(&kind, &data) {
                        problems.push(format!("{name}: {e}"));
                    }
                }
                Ok(None) => problems.push(format!("{name}: not found")),
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        if !problems.is_empty() {
            self.ctx
                .events
                .record(
                    &self.subject(),
                    true,
                    "FailedToRetrieveImagePullSecret",
                    &format!(
                        "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                        problems.join("; ")
                    ),
                )
                .await;
        }
        ring
    }

    /// `namespace/pod/container`, the key exec finds a running container by.
    fn task_key(&self) -> String {
        format!("{}/{}/{}", self.pod.namespace, self.pod.name, self.name())
    }

    /// What the runtime is asked to run.
    fn request(&self, env: Env, mounts: Vec<skiff_runtimes::Mount>) -> RunRequest {
        let spec = self.container_spec(&env, mounts.clone());
        let log = self.ctx.logs.path(
            &self.pod.namespace,
            &self.pod.name,
            &self.pod.uid,
            &self.name(),
            self.restarts(),
        );
        let http_stats = self
            .ctx
            .stats
            .pod(&self.pod.uid)
            .map(|e| e.http.clone())
            .unwrap_or_default();
        RunRequest {
            container: self.name(),
            spec,
            ports: self.ports(),
            request_timeout: self.pod.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            deadline: self.pod.active_deadline,
            log,
            sandbox: self.sandbox.clone(),
            http_stats,
            resolve: Arc::new(oci::OciSpecOf {
                ctx: self.ctx.clone(),
                pod: self.pod.clone(),
                container: self.spec.clone(),
                name: self.name(),
                env,
                mounts,
                netns: self.netns.clone(),
                pod_ip: self.view.borrow().pod_ip.clone(),
            }),
        }
    }

    /// Wait for the run's end, its probes' verdict or the pod's stop; report
    /// what the run's counters say as events.
    async fn supervise(
        &mut self,
        run: &Arc<dyn Running>,
        probes: &[Probe],
        memory: Option<u64>,
    ) -> Outcome {
        let checker = Arc::new(self.run_checker(run));
        let (started_at, mut probing, liveness, readiness) =
            self.start_probed(probes, checker).await;
        let (mut oom_seen, mut timeouts_seen) = (0, 0);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => {
                    let grace = self.stop_grace();
                    run.stop(grace, Box::pin(self.pre_stop(run, grace))).await;
                    return Outcome::Stopped;
                }
                r = run.wait() => {
                    let t = match r {
                        Ok(t) => t,
                        Err(e) => return Outcome::Failed(Waiting::from(&e), e.to_string()),
                    };
                    if let Some(ev) = &t.event {
                        self.ctx.events.record(&self.subject(), true, ev.reason, &ev.message).await;
                    }
                    return Outcome::Ended(Ended {
                        exit_code: t.exit_code,
                        reason: t.reason,
                        message: t.message,
                        started_at,
                        finished_at: now(),
                    });
                }
                Some(report) = probing.rx.recv() => {
                    if let Some(why) = self.probed(&report, &mut probing, &liveness, &readiness).await {
                        run.stop(self.pod.grace, Box::pin(self.pre_stop(run, self.pod.grace))).await;
                        return killed_by_probe(why, started_at);
                    }
                }
                _ = tick.tick() => {
                    let stats = run.stats();
                    let oom = stats.out_of_memory;
                    if oom > oom_seen {
                        oom_seen = oom;
                        let limit = memory.map(|m| format!(" of {m} bytes")).unwrap_or_default();
                        self.ctx.events.record(&self.subject(), true, "OOMKilling",
                            &format!("a request to container {} was stopped at its memory limit{limit} ({oom} so far); the container keeps serving", self.name())).await;
                    }
                    let t = stats.timeouts;
                    if t > timeouts_seen {
                        timeouts_seen = t;
                        self.ctx.events.record(&self.subject(), true, "RequestTimeout",
                            &format!("a request to container {} ran past its time limit and was stopped ({t} so far)", self.name())).await;
                    }
                }
            }
        }
    }

    /// Mark the container running and record the event; `started` and `ready`
    /// unless probes still have to say so.
    async fn started(&self, started: bool, ready: bool) -> String {
        let at = now();
        let a = at.clone();
        self.update(|c| {
            c.state = State::Running {
                started_at: a,
                started,
                ready,
            };
        });
        self.ctx
            .events
            .record(
                &self.subject(),
                false,
                "Started",
                &format!("Started container {}", self.name()),
            )
            .await;
        at
    }

    /// Mark the container running and start its probes: the startup probe
    /// first, liveness and readiness at once when there is none.
    async fn start_probed(
        &self,
        probes: &[Probe],
        checker: Arc<dyn probes::Checker>,
    ) -> (String, Prober, Option<Probe>, Option<Probe>) {
        let find = |k: ProbeKind| probes.iter().find(|p| p.kind == k).cloned();
        let (startup, liveness, readiness) = (
            find(ProbeKind::Startup),
            find(ProbeKind::Liveness),
            find(ProbeKind::Readiness),
        );
        let started_at = self
            .started(startup.is_none(), startup.is_none() && readiness.is_none())
            .await;
        let mut probing = Prober::new(self.view.borrow().pod_ip.clone(), checker);
        match &startup {
            Some(p) => probing.spawn(p.clone()),
            None => liveness
                .iter()
                .chain(&readiness)
                .for_each(|p| probing.spawn(p.clone())),
        }
        (started_at, probing, liveness, readiness)
    }

    /// Act on one probe report: events, startup, readiness. Returns why the
    /// container must be killed, when a liveness or startup probe failed.
    async fn probed(
        &self,
        report: &Report,
        probing: &mut Prober,
        liveness: &Option<Probe>,
        readiness: &Option<Probe>,
    ) -> Option<String> {
        let kind = report.kind.title();
        if let Some(msg) = &report.failure {
            let verb = if msg.starts_with("exec probes") {
                "errored"
            } else {
                "failed"
            };
            self.ctx
                .events
                .record(
                    &self.subject(),
                    true,
                    "Unhealthy",
                    &format!("{kind} probe {verb}: {msg}"),
                )
                .await;
        }
        match (report.kind, report.settled?) {
            (ProbeKind::Startup, true) => {
                let no_readiness = readiness.is_none();
                self.update(|c| {
                    if let State::Running { started, ready, .. } = &mut c.state {
                        *started = true;
                        *ready = no_readiness;
                    }
                });
                probing.stop(ProbeKind::Startup);
                liveness
                    .iter()
                    .chain(readiness)
                    .for_each(|p| probing.spawn(p.clone()));
                None
            }
            (ProbeKind::Readiness, ok) => {
                self.update(|c| {
                    if let State::Running {
                        started: true,
                        ready,
                        ..
                    } = &mut c.state
                    {
                        *ready = ok;
                    }
                });
                None
            }
            (ProbeKind::Liveness | ProbeKind::Startup, false) => {
                let why = format!(
                    "Container {} failed {} probe, will be restarted",
                    self.name(),
                    kind.to_lowercase()
                );
                self.ctx
                    .events
                    .record(&self.subject(), false, "Killing", &why)
                    .await;
                Some(why)
            }
            (ProbeKind::Liveness, true) => None,
        }
    }
}

/// The probe workers of one container run; dropping it stops them.
struct Prober {
    ip: Option<std::net::IpAddr>,
    checker: Arc<dyn probes::Checker>,
    tx: tokio::sync::mpsc::Sender<Report>,
    rx: tokio::sync::mpsc::Receiver<Report>,
    tasks: Vec<(ProbeKind, tokio::task::JoinHandle<()>)>,
}

impl Prober {
    fn new(ip: Option<String>, checker: Arc<dyn probes::Checker>) -> Prober {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        Prober {
            ip: ip.and_then(|i| i.parse().ok()),
            checker,
            tx,
            rx,
            tasks: Vec::new(),
        }
    }

    fn spawn(&mut self, p: Probe) {
        let Some(ip) = self.ip else {
            tracing::warn!("no pod IP to probe");
            return;
        };
        let kind = p.kind;
        let task = tokio::spawn(probes::run(p, ip, self.checker.clone(), self.tx.clone()));
        self.tasks.push((kind, task));
    }

    fn stop(&mut self, kind: ProbeKind) {
        self.tasks.retain(|(k, t)| {
            if *k == kind {
                t.abort();
            }
            *k != kind
        });
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        for (_, t) in &self.tasks {
            t.abort();
        }
    }
}

/// A run ended because a liveness or startup probe gave up on it: exit code
/// 137, as the kubelet reports a container it killed.
fn killed_by_probe(why: String, started_at: String) -> Outcome {
    Outcome::Ended(Ended {
        exit_code: 137,
        reason: EndReason::Error,
        message: Some(why),
        started_at,
        finished_at: now(),
    })
}
