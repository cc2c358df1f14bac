//! What the node measures about its pods and Services, for `kubectl top`, the
//! autoscalers and scale to zero: per-pod CPU (the pod's cgroup, which holds
//! its Wasm threads and its containers), memory (the Wasm guests' linear
//! memory in use plus the containers' working set), the HTTP requests the agent
//! served for the pod's Wasm apps, and new connections to Services seen by the
//! node's proxy.
//!
//! Cumulative counters are sampled once a second; rates are taken over the
//! last `WINDOW`. **Nothing here blocks a pod: a pod's counters are atomics its
//! containers bump, and the sampler only reads them.**

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_common::stats::{
    ContainerUsage, HttpUsage, NodeUsage, PodUsage, ServiceActivity, Summary,
};
use skiff_runtimes::wasm::HttpStats;

use crate::cgroup::PodCgroup;

/// The window rates are measured over.
pub const WINDOW: Duration = Duration::from_secs(5);
/// How often counters are sampled.
const PERIOD: Duration = Duration::from_secs(1);

/// One sample of a pod's cumulative counters.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_ns: u64,
    requests: u64,
    busy_ns: u64,
}

/// What the node keeps for one running pod.
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub containers: Vec<String>,
    cgroup: Option<PodCgroup>,
    /// Linear memory in use by the pod's Wasm guests.
    pub memory: Arc<AtomicU64>,
    /// Requests served by the pod's Wasm HTTP apps (shared by them).
    pub http: Arc<HttpStats>,
    /// Whether any container serves HTTP through the agent.
    pub serves_http: AtomicBool,
    /// Whether the pod may have OCI containers (their memory is in cgroups).
    has_oci: bool,
    started: Instant,
    samples: Mutex<VecDeque<Sample>>,
    /// The containers' working set at the last sample.
    oci_memory: AtomicU64,
}

/// A Service's connection counter.
#[derive(Debug, Clone, Copy)]
struct ServiceCount {
    total: u64,
    last: Instant,
}

/// A pod of this node the moment its agent finds it Ready (before the API
/// and the EndpointSlices hear of it): what the activator needs to forward to
/// it at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyPod {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ip: std::net::Ipv4Addr,
    /// Container ports: name ("" when unnamed), number, protocol.
    pub ports: Vec<(String, u16, String)>,
}

impl ReadyPod {
    /// The pod's port for a Service's `targetPort` (a number, or a port name).
    pub fn target(&self, by_name: Option<&str>, number: u16) -> Option<u16> {
        match by_name {
            Some(n) => self
                .ports
                .iter()
                .find(|(name, _, proto)| name == n && proto == "TCP")
                .map(|p| p.1),
            None => Some(number),
        }
    }
}

/// The node's statistics.
pub struct Stats {
    node: String,
    oci_node: bool,
    pods: Mutex<HashMap<String, Arc<PodEntry>>>,
    ready: Mutex<HashMap<String, ReadyPod>>,
    /// Pods being stopped: never Ready again (Kubernetes takes terminating
    /// pods out of the ready endpoints).
    stopping: Mutex<std::collections::HashSet<String>>,
    ready_changed: tokio::sync::watch::Sender<u64>,
    services: Mutex<BTreeMap<(String, String), ServiceCount>>,
    cpu: Mutex<VecDeque<(Instant, u64)>>,
}

impl Stats {
    pub fn new(node: &str, oci_node: bool) -> Arc<Stats> {
        Arc::new(Stats {
            node: node.to_string(),
            oci_node,
            pods: Mutex::default(),
            ready: Mutex::default(),
            stopping: Mutex::default(),
            ready_changed: tokio::sync::watch::Sender::new(0),
            services: Mutex::default(),
            cpu: Mutex::default(),
        })
    }

    /// Note whether pod `uid` is Ready now (`None`: not, or gone).
    pub fn set_ready(&self, uid: &str, pod: Option<ReadyPod>) {
        let pod = pod.filter(|_| !self.stopping.lock().expect("stopping").contains(uid));
        let mut ready = self.ready.lock().expect("ready pods");
        let changed = match pod {
            Some(p) => ready.insert(uid.to_string(), p.clone()).as_ref() != Some(&p),
            None => ready.remove(uid).is_some(),
        };
        drop(ready);
        if changed {
            self.ready_changed.send_modify(|n| *n += 1);
        }
    }

    /// The pod is being stopped: it is not Ready from now on.
    pub fn stopping(&self, uid: &str) {
        self.stopping
            .lock()
            .expect("stopping")
            .insert(uid.to_string());
        self.set_ready(uid, None);
    }

    /// The pod's worker is gone: forget its readiness for good.
    pub fn forget_ready(&self, uid: &str) {
        self.set_ready(uid, None);
        self.stopping.lock().expect("stopping").remove(uid);
    }

    /// The pods of this node that are Ready now.
    pub fn ready_pods(&self) -> Vec<ReadyPod> {
        self.ready
            .lock()
            .expect("ready pods")
            .values()
            .cloned()
            .collect()
    }

    /// Changes whenever a pod of this node becomes Ready or stops being so.
    pub fn watch_ready(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ready_changed.subscribe()
    }

    /// Start keeping a pod's figures (again, after a restart of its sandbox:
    /// the counters of an entry already there are kept).
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        containers: Vec<String>,
        cgroup: Option<PodCgroup>,
    ) -> Arc<PodEntry> {
        let mut pods = self.pods.lock().expect("stats");
        pods.entry(uid.to_string())
            .or_insert_with(|| {
                Arc::new(PodEntry {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    uid: uid.to_string(),
                    containers,
                    cgroup,
                    memory: Arc::default(),
                    http: Arc::default(),
                    serves_http: AtomicBool::new(false),
                    has_oci: self.oci_node,
                    started: Instant::now(),
                    samples: Mutex::default(),
                    oci_memory: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// The entry of a running pod.
    pub fn pod(&self, uid: &str) -> Option<Arc<PodEntry>> {
        self.pods.lock().expect("stats").get(uid).cloned()
    }

    /// Forget a pod (it stopped).
    pub fn remove_pod(&self, uid: &str) {
        self.pods.lock().expect("stats").remove(uid);
        self.set_ready(uid, None);
    }

    /// Set the connection totals the proxy counted per Service since it
    /// started; a total that grew marks the Service active now.
    pub fn count_connections(&self, totals: &BTreeMap<(String, String), u64>) {
        let now = Instant::now();
        let mut services = self.services.lock().expect("stats");
        services.retain(|k, _| totals.contains_key(k));
        for (k, total) in totals {
            let e = services.entry(k.clone()).or_insert(ServiceCount {
                total: *total,
                last: now,
            });
            if *total > e.total {
                e.last = now;
            }
            e.total = *total;
        }
    }

    /// Mark a Service active now (a connection held by the activator).
    pub fn touch_service(&self, namespace: &str, name: &str) {
        if let Some(e) = self
            .services
            .lock()
            .expect("stats")
            .get_mut(&(namespace.to_string(), name.to_string()))
        {
            e.last = Instant::now();
        }
    }

    /// Take one sample of every pod and of the node (blocking reads of cgroup
    /// and /proc files).
    pub fn sample(&self) {
        let now = Instant::now();
        let pods: Vec<Arc<PodEntry>> = self.pods.lock().expect("stats").values().cloned().collect();
        for p in pods {
            let cpu_ns = p.cgroup.as_ref().and_then(PodCgroup::usage_ns).unwrap_or(0);
            if p.has_oci
                && let Some(ws) = crate::cgroup::containers_working_set(&self.node, &p.uid)
            {
                p.oci_memory.store(ws, Ordering::Relaxed);
            }
            let s = Sample {
                at: now,
                cpu_ns,
                requests: p.http.requests.load(Ordering::Relaxed),
                busy_ns: p.http.busy_now_ns(),
            };
            push(&mut p.samples.lock().expect("samples"), s, now);
        }
        if let Some(busy) = host_cpu_busy_ns() {
            let mut cpu = self.cpu.lock().expect("stats");
            cpu.push_back((now, busy));
            while cpu.len() > 2 && now.duration_since(cpu[1].0) >= WINDOW {
                cpu.pop_front();
            }
        }
    }

    /// Sample every second until dropped.
    pub async fn run_sampler(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.sample()).await;
        }
    }

    /// The node's report.
    pub fn summary(&self) -> Summary {
        let now = Instant::now();
        let node_cpu = {
            let cpu = self.cpu.lock().expect("stats");
            match (cpu.front(), cpu.back()) {
                (Some(a), Some(b)) if b.0 > a.0 => {
                    rate(b.1.saturating_sub(a.1), b.0.duration_since(a.0)) as u64
                }
                _ => 0,
            }
        };
        let pods: Vec<Arc<PodEntry>> = self.pods.lock().expect("stats").values().cloned().collect();
        let pods = pods.iter().map(|p| p.usage(now)).collect();
        let services = self
            .services
            .lock()
            .expect("stats")
            .iter()
            .map(|((ns, name), c)| ServiceActivity {
                namespace: ns.clone(),
                name: name.clone(),
                connections_total: c.total,
                idle_seconds: now.duration_since(c.last).as_secs_f64(),
            })
            .collect();
        Summary {
            node: NodeUsage {
                name: self.node.clone(),
                cpu_nanocores: node_cpu,
                memory_bytes: host_memory_working_set().unwrap_or(0),
            },
            pods,
            services,
            window_seconds: WINDOW.as_secs_f64(),
            timestamp: jiff::Timestamp::now().to_string(),
        }
    }
}

/// Keep the samples of one window (plus the one just before it).
fn push(samples: &mut VecDeque<Sample>, s: Sample, now: Instant) {
    samples.push_back(s);
    while samples.len() > 2 && now.duration_since(samples[1].at) >= WINDOW {
        samples.pop_front();
    }
}

/// `amount` nanoseconds (or events, ×1e9) per second over `d`.
fn rate(amount: u64, d: Duration) -> f64 {
    amount as f64 / d.as_secs_f64().max(1e-9)
}

impl PodEntry {
    fn usage(&self, now: Instant) -> PodUsage {
        let samples = self.samples.lock().expect("samples");
        let (first, last) = (samples.front().copied(), samples.back().copied());
        drop(samples);
        let (cpu, rps, concurrency) = match (first, last) {
            (Some(a), Some(b)) if b.at > a.at => {
                let d = b.at.duration_since(a.at);
                (
                    rate(b.cpu_ns.saturating_sub(a.cpu_ns), d) as u64,
                    rate(b.requests.saturating_sub(a.requests), d),
                    rate(b.busy_ns.saturating_sub(a.busy_ns), d) / 1e9,
                )
            }
            _ => (0, 0.0, 0.0),
        };
        let memory = self.memory.load(Ordering::Relaxed) + self.oci_memory.load(Ordering::Relaxed);
        let running = now.duration_since(self.started).as_secs_f64();
        let http = self.serves_http.load(Ordering::Relaxed).then(|| {
            let in_flight = self.http.in_flight.load(Ordering::Relaxed);
            let last_end = self.http.last_end_ns.load(Ordering::Relaxed);
            let idle = if in_flight > 0 {
                0.0
            } else if last_end > 0 {
                (self.http.now_ns().saturating_sub(last_end)) as f64 / 1e9
            } else {
                running
            };
            HttpUsage {
                requests_total: self.http.requests.load(Ordering::Relaxed),
                requests_per_second: rps,
                concurrency,
                in_flight,
                idle_seconds: idle.min(running),
            }
        });
        // The pod's cgroup is shared by its containers: figures are split
        // evenly between them.
        let n = self.containers.len().max(1) as u64;
        let containers = self
            .containers
            .iter()
            .map(|c| ContainerUsage {
                name: c.clone(),
                cpu_nanocores: cpu / n,
                memory_bytes: memory / n,
            })
            .collect();
        PodUsage {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            cpu_nanocores: cpu,
            memory_bytes: memory,
            containers,
            http,
            running_seconds: running,
        }
    }
}

/// CPU time the host spent not idle, in nanoseconds (from `/proc/stat`).
fn host_cpu_busy_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    // /proc/stat counts in USER_HZ, which Linux fixes at 100.
    Some(busy * 10_000_000)
}

/// Total minus available memory of the host.
fn host_memory_working_set() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(kib("MemTotal:")?.saturating_sub(kib("MemAvailable:")?) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_window() {
        let stats = Stats::new("n", false);
        let p = stats.add_pod("d", "p", "u1", vec!["a".into(), "b".into()], None);
        let t0 = Instant::now();
        let mut s = p.samples.lock().unwrap();
        push(
            &mut s,
            Sample {
                at: t0,
                cpu_ns: 0,
                requests: 0,
                busy_ns: 0,
            },
            t0,
        );
        let t1 = t0 + Duration::from_secs(2);
        push(
            &mut s,
            Sample {
                at: t1,
                cpu_ns: 1_000_000_000,
                requests: 10,
                busy_ns: 3_000_000_000,
            },
            t1,
        );
        drop(s);
        p.serves_http.store(true, Ordering::Relaxed);
        let u = p.usage(t1);
        assert_eq!(u.cpu_nanocores, 500_000_000);
        assert_eq!(u.containers[0].cpu_nanocores, 250_000_000);
        let h = u.http.unwrap();
        assert!((h.requests_per_second - 5.0).abs() < 1e-9);
        assert!((h.concurrency - 1.5).abs() < 1e-9);
    }

    #[test]
    fn service_activity_follows_growing_totals() {
        let stats = Stats::new("n", false);
        let k = ("d".to_string(), "s".to_string());
        stats.count_connections(&BTreeMap::from([(k.clone(), 0)]));
        std::thread::sleep(Duration::from_millis(20));
        stats.count_connections(&BTreeMap::from([(k.clone(), 0)]));
        let idle = stats.summary().services[0].idle_seconds;
        assert!(idle >= 0.02, "{idle}");
        stats.count_connections(&BTreeMap::from([(k, 3)]));
        let s = &stats.summary().services[0];
        assert_eq!(s.connections_total, 3);
        // New connections restart the idle clock: less idle than before the
        // 20 ms sleep ended, however slow the machine is.
        assert!(s.idle_seconds < idle, "{} after {idle}", s.idle_seconds);
    }

    #[test]
    fn a_stopping_pod_is_not_ready_again() {
        let stats = Stats::new("n", false);
        let pod = ReadyPod {
            namespace: "d".into(),
            labels: BTreeMap::new(),
            ip: "10.88.0.5".parse().unwrap(),
            ports: vec![("http".into(), 8080, "TCP".into())],
        };
        let mut changed = stats.watch_ready();
        stats.set_ready("u1", Some(pod.clone()));
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        assert_eq!(stats.ready_pods()[0].target(Some("http"), 0), Some(8080));
        stats.stopping("u1");
        assert!(stats.ready_pods().is_empty());
        stats.set_ready("u1", Some(pod.clone()));
        assert!(stats.ready_pods().is_empty(), "still stopping");
        stats.forget_ready("u1");
        stats.set_ready("u1", Some(pod));
        assert_eq!(stats.ready_pods().len(), 1, "a new run of the uid");
    }

    #[test]
    fn host_figures_are_read() {
        assert!(host_cpu_busy_ns().unwrap() > 0);
        assert!(host_memory_working_set().unwrap() > 0);
    }
}
