//! Unit tests of the pod lifecycle, without root: a real pod worker over the
//! recording fakes of the host (network, cgroups), a scripted runtime and an
//! in-memory API server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{NodeCtx, events::Recorder, logs::LogDir, pull::Images};
use crate::fakes::{FakeApi, FakeCgroups, FakeChecker, FakeNet, FakeRuntime, Fault, Journal};
use crate::net::{NetConfig, PodNetwork};

const BRIDGE: &str = "skt0";
const WAIT: Duration = Duration::from_secs(15);

/// One node's worth of fakes and the context pod workers share.
struct Harness {
    api: FakeApi,
    journal: Journal,
    net: FakeNet,
    cgroups: FakeCgroups,
    runtime: FakeRuntime,
    checker: Arc<FakeChecker>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let journal = Journal::default();
        let api = FakeApi::default();
        for (repo, script) in [
            ("fake/serve", "serve"),
            ("fake/stubborn", "stubborn"),
            ("fake/ok", "exit 0 20"),
            ("fake/crash", "exit 1 20"),
            ("fake/norun", "fail run"),
        ] {
            api.image(repo, script.as_bytes());
        }
        Harness {
            api,
            net: FakeNet::new(journal.clone()),
            cgroups: FakeCgroups::new(journal.clone()),
            journal,
            runtime: FakeRuntime::default(),
            checker: Arc::default(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A fresh agent (as after a restart) on the same host and data dir.
    async fn ctx(&self) -> Arc<NodeCtx> {
        let data = self.dir.path();
        let cfg = NetConfig {
            bridge: BRIDGE.into(),
            node_cidr: "10.88.7.0/24".parse().expect("cidr"),
            cluster_cidr: "10.88.0.0/16".parse().expect("cidr"),
            service_cidr: "10.96.0.0/16".parse().expect("cidr"),
            state_dir: data.join("ipam"),
            netns_prefix: "sktest-".into(),
        };
        let net = PodNetwork::prepare_on(cfg, Arc::new(self.net.clone()))
            .await
            .expect("pod network");
        let client = self.api.client();
        Arc::new(NodeCtx {
            client: client.clone(),
            node: "n1".into(),
            host_ip: "192.0.2.10".into(),
            net,
            runtimes: vec![Arc::new(self.runtime.clone())],
            images: Images::new(client.clone(), data.join("images")).expect("images"),
            logs: LogDir(data.join("logs")),
            events: Recorder::new(client, "n1".into()),
            cgroups: true,
            host_cgroups: Arc::new(self.cgroups.clone()),
            volume_media: Arc::new(crate::pod::volumes::Disk),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            warm_sandboxes: Default::default(),
            pods_dir: data.join("pods"),
            seccomp_dir: data.join("seccomp"),
            probes: self.checker.clone(),
            node_cpu_millis: 2000,
            node_memory: 1 << 30,
            allow_privileged: false,
            tasks: Default::default(),
            stats: crate::stats::Stats::new("n1", false),
            tokens: Default::default(),
            api_service: None,
            evictions: Default::default(),
            host_ports: Default::default(),
            routes: tokio::sync::watch::channel(Default::default()).1,
            node_resolv: String::new(),
            dns: crate::dns::ClusterDns::new("cluster.local"),
            cluster_ca: String::new(),
            pressure: tokio::sync::watch::channel(Default::default()).1,
        })
    }

    /// Start a pod worker for `pod` (as the watch hands it over: typed).
    fn spawn(
        ctx: &Arc<NodeCtx>,
        pod: Value,
    ) -> (watch::Sender<Option<Pod>>, tokio::task::JoinHandle<()>) {
        let pod: Pod = serde_json::from_value(pod).expect("a pod");
        let (tx, rx) = watch::channel(Some(pod));
        (tx, tokio::spawn(super::run(ctx.clone(), rx)))
    }

    /// The latest status written, once `ok` holds for it.
    async fn until(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            if let Some(s) = self.api.statuses().last()
                && ok(s)
            {
                return s.clone();
            }
            assert!(
                t.elapsed() < WAIT,
                "timed out waiting for {what}; statuses: {:#?}\nevents: {:?}\nhost calls: {:?}",
                self.api.statuses().last(),
                self.api.event_reasons(),
                self.journal.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether any status written so far satisfies `ok`.
    fn ever(&self, ok: impl Fn(&Value) -> bool) -> bool {
        self.api.statuses().iter().any(ok)
    }

    /// What pods left on the host: namespaces, veths, resolv.conf files,
    /// cgroups and address records.
    fn leftovers(&self) -> Vec<String> {
        let mut left = self.net.pod_leftovers(BRIDGE);
        left.extend(
            self.cgroups
                .live()
                .into_iter()
                .map(|c| format!("cgroup {c}")),
        );
        let ipam = self.dir.path().join("ipam");
        for e in walk(&ipam) {
            left.push(format!("address record {}", e.display()));
        }
        left
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn pod(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": spec,
        "status": {},
    })
}

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": format!("fake/{image}:v1")})
}

fn deleted(mut p: Pod) -> Pod {
    p.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().expect("a time")));
    p
}

fn phase(s: &Value) -> &str {
    s["phase"].as_str().unwrap_or("")
}

fn condition(s: &Value, ty: &str) -> bool {
    s["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == ty && c["status"] == "True")
}

fn state<'a>(s: &'a Value, key: &str, i: usize) -> &'a Value {
    &s[key][i]["state"]
}

/// Delete the pod and wait for its worker to finish.
async fn delete(tx: &watch::Sender<Option<Pod>>, worker: tokio::task::JoinHandle<()>) -> Duration {
    let t = Instant::now();
    let p = tx.borrow().clone().expect("pod");
    let _ = tx.send(Some(deleted(p)));
    tokio::time::timeout(WAIT, worker)
        .await
        .expect("the worker ends after deletion")
        .expect("the worker does not panic");
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_a_pod_and_cleans_up_after_deletion() {
    let h = Harness::new();
    let ctx = h.ctx().await;
    let (tx, worker) = Harness::spawn(
        &ctx,
        pod("web", json!({"containers": [container("app", "serve")]})),
    );
    let s = h
        .until("Running and Ready", |s| {
            phase(s) == "Running" && condition(s, "Ready")
        })
        .await;
    assert_eq!(s["podIP"], "10.88.7.2", "{s:#}");
    assert!(
        state(&s, "containerStatuses", 0)["running"].is_object(),
        "{s:#}"
    );
    assert_eq!(h.runtime.order(), vec!["app"]);
    let ops = h.journal.ops();
    for op in [
        "create_netns",
        "add_veth",
        "configure_pod",
        "write_resolv",
        "create_cgroup",
        "enter_netns",
    ] {
        assert!(ops.contains(&op.to_string()), "{op} not in {ops:?}");
    }
    assert!(h.api.event_reasons().contains(&"Started".to_string()));
    assert!(!h.leftovers().is_empty());
    delete(&tx, worker).await;
    assert_eq!(h.runtime.stops.lock().expect("stops").len(), 1);
    assert_eq!(h.leftovers(), Vec::<String>::new());
    let deletes: Vec<_> = h
        .api
        .calls()
        .into_iter()
        .filter(|c| c.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "the API is told to forget the pod");
    assert_eq!(deletes[0].body["gracePeriodSeconds"], 0);
    assert_eq!(deletes[0].body["preconditions"]["uid"], "uid-web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_and_sidecars_keep_running() {
    let h = Harness::new();
    let ctx = h.ctx().await;
    let mut sidecar = container("proxy", "serve");
    sidecar["restartPolicy"] = json!("Always");
    let spec = json!({
        "initContainers": [container("setup", "ok"), sidecar, container("migrate", "ok")],
        "containers": [container("app", "serve")],
    });
    let (tx, worker) = Harness::spawn(&ctx, pod("init", spec));
    let s = h
        .until("Running", |s| {
            phase(s) == "Running" && condition(s, "Ready")
        })
        .await;
    assert_eq!(h.runtime.order(), vec!["setup", "proxy", "migrate", "app"]);
    assert_eq!(
        state(&s, "initContainerStatuses", 0)["terminated"]["reason"],
        "Completed"
    );
    assert!(
        state(&s, "initContainerStatuses", 1)["running"].is_object(),
        "{s:#}"
    );
    assert_eq!(
        state(&s, "initContainerStatuses", 2)["terminated"]["reason"],
        "Completed"
    );
    assert!(condition(&s, "Initialized"));
    // Before the init containers were done, the app waited for them.
    assert!(h.ever(|s| state(s, "containerStatuses", 0)["waiting"]["reason"] == "PodInitializing"));
    delete(&tx, worker).await;
    let stops: Vec<String> = h
        .runtime
        .stops
        .lock()
        .expect("stops")
        .iter()
        .map(|s| s.0.clone())
        .collect();
    assert!(
        stops.contains(&"proxy".to_string()) && stops.contains(&"app".to_string()),
        "{stops:?}"
    );
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_init_container_fails_the_pod_when_it_may_not_restart() {
    let h = Harness::new();
    let ctx = h.ctx().await;
    let spec = json!({
        "restartPolicy": "Never",
        "initContainers": [container("setup", "crash")],
        "containers": [container("app", "serve")],
    });
    let (tx, worker) = Harness::spawn(&ctx, pod("badinit", spec));
    let s = h.until("Failed", |s| phase(s) == "Failed").await;
    assert_eq!(
        state(&s, "initContainerStatuses", 0)["terminated"]["exitCode"],
        1
    );
    assert_eq!(h.runtime.starts_of("app"), 0, "the app never starts");
    delete(&tx, worker).await;
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_restarts_with_growing_back_off() {
    let h = Harness::new();
    let ctx = h.ctx().await;
    let (tx, worker) = Harness::spawn(
        &ctx,
        pod("crash", json!({"containers": [container("app", "crash")]})),
    );
    h.until("four restarts", |s| {
        s["containerStatuses"][0]["restartCount"].as_u64() >= Some(4)
    })
    .await;
    assert!(
        h.ever(|s| state(s, "containerStatuses", 0)["waiting"]["reason"] == "CrashLoopBackOff")
    );
    assert!(h.ever(|s| s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1));
    let starts: Vec<Instant> = h
        .runtime
        .starts
        .lock()
        .expect("starts")
        .iter()
        .map(|s| s.at)
        .collect();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // back-off 100 ms, 200 ms, 400 ms (the cap) after each 20 ms run
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(400), "{gaps:?}");
    assert!(h.api.event_reasons().contains(&"BackOff".to_string()));
    delete(&tx, worker).await;
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_decides_the_end_of_a_pod() {
    // (restartPolicy, image, phase, runs)
    let cases = [
        ("Never", "crash", "Failed", 1),
        ("Never", "ok", "Succeeded", 1),
        ("OnFailure", "ok", "Succeeded", 1),
    ];
    for (policy, image, want, runs) in cases {
        let h = Harness::new();
        let ctx = h.ctx().await;
        let spec = json!({"restartPolicy": policy, "containers": [container("app", image)]});
        let (tx, worker) = Harness::spawn(&ctx, pod("once", spec));
        h.until(want, |s| phase(s) == want).await;
        assert_eq!(h.runtime.starts_of("app"), runs, "{policy} {image}");
        // A finished pod gives its network back at once; its logs stay until deletion.
        tokio::time::timeout(WAIT, async {
            while !h.net.pod_leftovers(BRIDGE).is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the finished pod's network is removed");
        delete(&tx, worker).await;
        assert_eq!(h.leftovers(), Vec::<String>::new(), "{policy} {image}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_cannot_start_waits_with_the_runtime_reason() {
    let h = Harness::new();
    let ctx = h.ctx().await;
    let spec = json!({"containers": [container("app", "norun"), container("missing", "nosuch")]});
    let (tx, worker) = Harness::spawn(&ctx, pod("broken", spec));
    h.until("waiting reasons", |s| {
        state(s, "containerStatuses", 0)["waiting"]["reason"]
            .as_str()
            .is_some_and(|r| r == "RunContainerError" || r == "RunContainerErrorBackOff")
            && state(s, "containerStatuses", 1)["waiting"]["reason"]
                .as_str()
                .is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
    })
    .await;
    delete(&tx, worker).await;
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_container() {
    let h = Harness::new();
    let ctx = h.ctx().await;
    let mut c = container("app", "serve");
    c["livenessProbe"] =
        json!({"tcpSocket": {"port": 81}, "periodSeconds": 1, "failureThreshold": 1});
    h.checker.set(81, false);
    let (tx, worker) = Harness::spawn(&ctx, pod("live", json!({"containers": [c]})));
    let s = h
        .until("a restart", |s| {
            s["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(
        s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 137,
        "{s:#}"
    );
    let reasons = h.api.event_reasons();
    assert!(reasons.contains(&"Unhealthy".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"Killing".to_string()), "{reasons:?}");
    assert!(
        !h.runtime.stops.lock().expect("stops").is_empty(),
        "the run was stopped"
    );
    // Healthy again: it stays up.
    h.checker.set(81, true);
    delete(&tx, worker).await;
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_readiness_probe() {
    let h = Harness::new();
    let ctx = h.ctx().await;
    let mut c = container("app", "serve");
    c["readinessProbe"] = json!({"tcpSocket": {"port": 82}, "periodSeconds": 1});
    h.checker.set(82, false);
    let (tx, worker) = Harness::spawn(&ctx, pod("ready", json!({"containers": [c]})));
    let s = h
        .until("running, not ready", |s| {
            state(s, "containerStatuses", 0)["running"].is_object()
        })
        .await;
    assert!(!condition(&s, "Ready"), "{s:#}");
    h.checker.set(82, true);
    h.until("Ready", |s| condition(s, "Ready")).await;
    assert_eq!(
        ctx.stats.ready_pods().len(),
        1,
        "the node's own view is ready too"
    );
    h.checker.set(82, false);
    h.until("not Ready again", |s| {
        !condition(s, "Ready") && phase(s) == "Running"
    })
    .await;
    assert_eq!(h.runtime.starts_of("app"), 1, "readiness never restarts");
    delete(&tx, worker).await;
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_stops_containers_within_the_grace_period() {
    let h = Harness::new();
    let ctx = h.ctx().await;
    let spec =
        json!({"terminationGracePeriodSeconds": 1, "containers": [container("app", "stubborn")]});
    let (tx, worker) = Harness::spawn(&ctx, pod("slow", spec));
    h.until("Running", |s| phase(s) == "Running").await;
    let took = delete(&tx, worker).await;
    let stops = h.runtime.stops.lock().expect("stops").clone();
    assert_eq!(stops, vec![("app".to_string(), Duration::from_secs(1))]);
    assert!(
        took >= Duration::from_secs(1),
        "it had its grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "and not much more: {took:?}");
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_adopts_the_pod_after_an_agent_restart() {
    let h = Harness::new();
    let ctx = h.ctx().await;
    let spec = json!({
        "initContainers": [container("setup", "ok")],
        "containers": [container("app", "crash")],
    });
    let p = pod("adopt", spec);
    let (tx, worker) = Harness::spawn(&ctx, p.clone());
    let s = h
        .until("a restart after init", |s| {
            condition(s, "Initialized")
                && s["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)
        })
        .await;
    // The agent dies: its worker is gone, the host keeps what it made.
    worker.abort();
    let _ = worker.await;
    drop(tx);
    drop(ctx);
    let before = h.net.state();
    let calls_before = h.journal.calls().len();
    let restarts_before = s["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0);
    // The new agent gets the pod with the status the old one wrote.
    let ctx = h.ctx().await;
    let mut p = p;
    p["status"] = s.clone();
    let (tx, worker) = Harness::spawn(&ctx, p);
    let s2 = h
        .until("running again", |s| {
            s["containerStatuses"][0]["restartCount"].as_u64() > Some(restarts_before)
        })
        .await;
    assert_eq!(s2["podIP"], s["podIP"], "the same address");
    assert_eq!(
        h.runtime.starts_of("setup"),
        1,
        "init containers do not run again"
    );
    let after: Vec<String> = h.journal.calls()[calls_before..].to_vec();
    assert!(
        !after
            .iter()
            .any(|c| c.starts_with("add_veth") || c.starts_with("configure_pod")),
        "the namespace and veth are adopted, not rebuilt: {after:?}"
    );
    assert_eq!(h.net.state().namespaces, before.namespaces);
    delete(&tx, worker).await;
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

/// Start a pod with the host failing as `fault` says, check it, delete it,
/// and return what it left.
async fn run_with_fault(fault: Fault, expect_running: bool) -> (Vec<String>, Vec<String>) {
    let h = Harness::new();
    let ctx = h.ctx().await;
    h.journal.arm(fault.clone());
    let (tx, worker) = Harness::spawn(
        &ctx,
        pod("faulty", json!({"containers": [container("app", "serve")]})),
    );
    if expect_running {
        h.until("Running despite the fault", |s| phase(s) == "Running")
            .await;
    } else {
        let t = Instant::now();
        while h.journal.failed().is_empty() {
            assert!(
                t.elapsed() < WAIT,
                "{fault:?} was never hit: {:?}",
                h.journal.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Give the worker time to act on the failure.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delete(&tx, worker).await;
    (h.leftovers(), h.journal.failed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_step_that_fails_once_is_retried_and_cleaned_up() {
    // How many counted host calls one pod start makes.
    let h = Harness::new();
    let ctx = h.ctx().await;
    h.journal.arm(Fault::None);
    let (tx, worker) = Harness::spawn(
        &ctx,
        pod("count", json!({"containers": [container("app", "serve")]})),
    );
    h.until("Running", |s| phase(s) == "Running").await;
    let n = h.journal.counted();
    delete(&tx, worker).await;
    assert!(
        n >= 5,
        "a start makes several host calls: {:?}",
        h.journal.calls()
    );
    for i in 0..n {
        let (left, failed) = run_with_fault(Fault::Once(i), true).await;
        assert_eq!(failed.len(), 1, "call {i} failed once");
        assert_eq!(left, Vec::<String>::new(), "after failing {:?}", failed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_step_that_always_fails_leaves_nothing_behind() {
    // (operation, whether the pod still runs without it)
    let cases = [
        ("forget_neighbour", false),
        ("create_netns", false),
        ("add_veth", false),
        ("configure_pod", false),
        ("write_resolv", false),
        ("enter_netns", false),
        // A pod without its cgroup runs, accounted to the agent.
        ("create_cgroup", true),
        ("add_thread", true),
    ];
    for (op, runs) in cases {
        let (left, failed) = run_with_fault(Fault::Always(op), runs).await;
        assert!(!failed.is_empty(), "{op} was called");
        assert_eq!(
            left,
            Vec::<String>::new(),
            "{op} failing left things behind"
        );
    }
}
