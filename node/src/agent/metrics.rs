//! The node's Prometheus metrics (`GET /metrics` on the agent API): pods by
//! phase of what the agent runs, per-pod CPU, memory and HTTP requests, Service
//! connections, and the activator's cold starts and wake-up latencies.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use skiff_common::prom::{Registry, Samples};

use crate::activator::{ActivatorStats, LATENCY_BUCKETS};
use crate::stats::Stats;

/// The agent's registry and the activator counters it renders.
pub struct AgentMetrics {
    registry: Registry,
    pub activator: Arc<ActivatorStats>,
}

impl AgentMetrics {
    pub fn new(stats: Arc<Stats>) -> Arc<AgentMetrics> {
        let registry = Registry::new();
        let latency = registry.histogram(
            "skiff_activator_wakeup_seconds",
            "Time from a held request's arrival to its connection to a ready pod (cold start).",
            LATENCY_BUCKETS,
        );
        let activator = Arc::new(ActivatorStats::new(latency));
        let a = activator.clone();
        registry.counter_fn(
            "skiff_activator_requests_total",
            "Connections the activator held, by result.",
            &["result"],
            move || {
                vec![
                    (
                        vec!["forwarded".into()],
                        a.forwarded.load(Ordering::Relaxed) as f64,
                    ),
                    (
                        vec!["rejected".into()],
                        a.rejected.load(Ordering::Relaxed) as f64,
                    ),
                ]
            },
        );
        let a = activator.clone();
        registry.counter_fn(
            "skiff_cold_starts_total",
            "Deployments the activator scaled from zero.",
            &[],
            move || vec![(vec![], a.wakeups.load(Ordering::Relaxed) as f64)],
        );
        let per_pod = |f: fn(&skiff_common::stats::PodUsage) -> f64| {
            let stats = stats.clone();
            move || -> Samples {
                stats
                    .summary()
                    .pods
                    .iter()
                    .map(|p| (vec![p.namespace.clone(), p.name.clone()], f(p)))
                    .collect()
            }
        };
        let labels = ["namespace", "pod"];
        registry.gauge_fn("skiff_pods_running", "Pods running on this node.", &[], {
            let stats = stats.clone();
            move || vec![(vec![], stats.summary().pods.len() as f64)]
        });
        registry.gauge_fn(
            "skiff_pod_cpu_cores",
            "CPU use of each pod over the sampling window, in cores.",
            &labels,
            per_pod(|p| p.cpu_nanocores as f64 / 1e9),
        );
        registry.gauge_fn(
            "skiff_pod_memory_bytes",
            "Memory in use by each pod (Wasm linear memory plus containers' working set).",
            &labels,
            per_pod(|p| p.memory_bytes as f64),
        );
        registry.counter_fn(
            "skiff_pod_http_requests_total",
            "HTTP requests the agent served for each pod's Wasm apps.",
            &labels,
            per_pod(|p| p.http.as_ref().map_or(0.0, |h| h.requests_total as f64)),
        );
        registry.gauge_fn(
            "skiff_pod_http_in_flight",
            "HTTP requests in flight per pod.",
            &labels,
            per_pod(|p| p.http.as_ref().map_or(0.0, |h| h.in_flight as f64)),
        );
        registry.counter_fn(
            "skiff_service_connections_total",
            "New connections to each Service seen by this node's proxy.",
            &["namespace", "service"],
            move || {
                stats
                    .summary()
                    .services
                    .iter()
                    .map(|s| {
                        (
                            vec![s.namespace.clone(), s.name.clone()],
                            s.connections_total as f64,
                        )
                    })
                    .collect()
            },
        );
        Arc::new(AgentMetrics {
            registry,
            activator,
        })
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}
