//! The metrics collector: asks every node agent for its `GET /stats/summary`
//! (`skiff_common::stats::Summary`) and merges the answers, for the API's
//! `metrics.k8s.io` and `custom.metrics.k8s.io` groups and for anything in
//! the process that needs usage (autoscalers).
//!
//! Agents are called in parallel, each with a 2 s timeout; a node that does
//! not answer (or publishes no agent endpoint) is left out and logged at
//! debug level. **A collected round is kept for about a second and shared:
//! callers that arrive while a round is under way wait for it rather than
//! start their own**, so many clients never multiply the calls to agents.

pub mod quantity;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_common::stats::{PodUsage, ServiceActivity, Summary};

use crate::model::status::ApiResult;
use crate::storage::Objects;

/// How long one agent may take to answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a collected round is served again.
const FRESH: Duration = Duration::from_secs(1);

/// One node's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    /// The Node's name in the store.
    pub node: String,
    pub summary: Summary,
}

/// One round of reports from every node that answered.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken: Instant,
    pub reports: Vec<NodeReport>,
}

/// A node's use.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMetrics {
    pub name: String,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
    /// RFC 3339 time of the sample.
    pub timestamp: String,
    pub window_seconds: f64,
}

/// A pod's use as its node reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetrics {
    /// The node that reported it.
    pub node: String,
    pub usage: PodUsage,
    pub timestamp: String,
    pub window_seconds: f64,
}

/// A pod's custom metric.
#[derive(Debug, Clone, PartialEq)]
pub struct PodValue {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub value: f64,
    pub timestamp: String,
    pub window_seconds: f64,
}

/// A Service's activity merged over the nodes that saw it: connections
/// summed, `idle_seconds` the least of them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceMetrics {
    pub activity: ServiceActivity,
    /// The newest sample among the nodes.
    pub timestamp: String,
    pub window_seconds: f64,
}

/// The custom metrics of a pod (`custom.metrics.k8s.io` `pods/*/{metric}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodMetric {
    RequestsPerSecond,
    Concurrency,
    InFlight,
    IdleSeconds,
}

impl PodMetric {
    pub const ALL: [PodMetric; 4] = [
        PodMetric::RequestsPerSecond,
        PodMetric::Concurrency,
        PodMetric::InFlight,
        PodMetric::IdleSeconds,
    ];

    /// The metric's name (`requests_per_second`); `-` spellings are aliases.
    pub fn parse(name: &str) -> Option<PodMetric> {
        let name = name.replace('-', "_");
        PodMetric::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            PodMetric::RequestsPerSecond => "requests_per_second",
            PodMetric::Concurrency => "concurrency",
            PodMetric::InFlight => "in_flight",
            PodMetric::IdleSeconds => "idle_seconds",
        }
    }

    /// The value for a pod; a pod without HTTP stats has served nothing and
    /// has been idle since it started.
    pub fn value(self, p: &PodUsage) -> f64 {
        match (&p.http, self) {
            (Some(h), PodMetric::RequestsPerSecond) => h.requests_per_second,
            (Some(h), PodMetric::Concurrency) => h.concurrency,
            (Some(h), PodMetric::InFlight) => h.in_flight as f64,
            (Some(h), PodMetric::IdleSeconds) => h.idle_seconds,
            (None, PodMetric::IdleSeconds) => p.running_seconds,
            (None, _) => 0.0,
        }
    }
}

/// The custom metrics of a Service (`services/{name}/{metric}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceMetric {
    ConnectionsTotal,
    IdleSeconds,
}

impl ServiceMetric {
    pub const ALL: [ServiceMetric; 2] =
        [ServiceMetric::ConnectionsTotal, ServiceMetric::IdleSeconds];

    /// The metric's name (`connections_total`); `-` spellings are aliases.
    pub fn parse(name: &str) -> Option<ServiceMetric> {
        let name = name.replace('-', "_");
        ServiceMetric::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ServiceMetric::ConnectionsTotal => "connections_total",
            ServiceMetric::IdleSeconds => "idle_seconds",
        }
    }

    pub fn value(self, a: &ServiceActivity) -> f64 {
        match self {
            ServiceMetric::ConnectionsTotal => a.connections_total as f64,
            ServiceMetric::IdleSeconds => a.idle_seconds,
        }
    }
}

fn timestamp_of(s: &Summary) -> String {
    if s.timestamp.is_empty() {
        crate::model::meta::now_rfc3339()
    } else {
        s.timestamp.clone()
    }
}

impl Snapshot {
    /// Every reporting node's use.
    pub fn nodes(&self) -> Vec<NodeMetrics> {
        self.reports
            .iter()
            .map(|r| NodeMetrics {
                name: r.node.clone(),
                cpu_nanocores: r.summary.node.cpu_nanocores,
                memory_bytes: r.summary.node.memory_bytes,
                timestamp: timestamp_of(&r.summary),
                window_seconds: r.summary.window_seconds,
            })
            .collect()
    }

    /// The pods reported in a namespace (all namespaces with `None`). The
    /// same pod reported by two nodes is kept once (the first report).
    pub fn pods(&self, namespace: Option<&str>) -> Vec<PodMetrics> {
        let mut out: Vec<PodMetrics> = Vec::new();
        for r in &self.reports {
            for p in &r.summary.pods {
                if namespace.is_some_and(|ns| ns != p.namespace) {
                    continue;
                }
                let seen = out.iter().any(|o| {
                    o.usage.namespace == p.namespace
                        && o.usage.name == p.name
                        && o.usage.uid == p.uid
                });
                if !seen {
                    out.push(PodMetrics {
                        node: r.node.clone(),
                        usage: p.clone(),
                        timestamp: timestamp_of(&r.summary),
                        window_seconds: r.summary.window_seconds,
                    });
                }
            }
        }
        out
    }

    /// One custom metric of every pod reported in a namespace.
    pub fn pod_values(&self, namespace: &str, metric: PodMetric) -> Vec<PodValue> {
        self.pods(Some(namespace))
            .into_iter()
            .map(|p| PodValue {
                value: metric.value(&p.usage),
                namespace: p.usage.namespace,
                name: p.usage.name,
                uid: p.usage.uid,
                timestamp: p.timestamp,
                window_seconds: p.window_seconds,
            })
            .collect()
    }

    /// Every Service some node reported, merged over the nodes, in order of
    /// first report.
    pub fn services(&self) -> Vec<ServiceMetrics> {
        let mut out: Vec<ServiceMetrics> = Vec::new();
        for r in &self.reports {
            let ts = timestamp_of(&r.summary);
            for a in &r.summary.services {
                match out
                    .iter_mut()
                    .find(|o| o.activity.namespace == a.namespace && o.activity.name == a.name)
                {
                    Some(o) => {
                        o.activity.connections_total += a.connections_total;
                        o.activity.idle_seconds = o.activity.idle_seconds.min(a.idle_seconds);
                        if ts > o.timestamp {
                            o.timestamp = ts.clone();
                        }
                        o.window_seconds = o.window_seconds.max(r.summary.window_seconds);
                    }
                    None => out.push(ServiceMetrics {
                        activity: a.clone(),
                        timestamp: ts.clone(),
                        window_seconds: r.summary.window_seconds,
                    }),
                }
            }
        }
        out
    }

    /// One Service's merged activity, `None` when no node reported it.
    pub fn service(&self, namespace: &str, name: &str) -> Option<ServiceMetrics> {
        self.services()
            .into_iter()
            .find(|s| s.activity.namespace == namespace && s.activity.name == name)
    }
}

struct Inner {
    objects: Objects,
    agent_token: String,
    /// The last round; its lock is held while a round is collected.
    last: tokio::sync::Mutex<Option<Arc<Snapshot>>>,
}

/// The collector; cheap to clone, clones share the cached round.
#[derive(Clone)]
pub struct Collector {
    inner: Arc<Inner>,
}

impl Collector {
    /// A collector listing Nodes through `objects` and showing agents
    /// `agent_token` (the join token).
    pub fn new(objects: Objects, agent_token: impl Into<String>) -> Collector {
        Collector {
            inner: Arc::new(Inner {
                objects,
                agent_token: agent_token.into(),
                last: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The current round: the cached one while it is fresh, else a new one
    /// (shared with every caller waiting meanwhile). Fails only when the
    /// Nodes cannot be listed.
    pub async fn snapshot(&self) -> ApiResult<Arc<Snapshot>> {
        let mut last = self.inner.last.lock().await;
        if let Some(s) = last.as_ref()
            && s.taken.elapsed() < FRESH
        {
            return Ok(s.clone());
        }
        let s = Arc::new(self.collect().await?);
        *last = Some(s.clone());
        Ok(s)
    }

    /// Every reporting node's use.
    pub async fn node_metrics(&self) -> ApiResult<Vec<NodeMetrics>> {
        Ok(self.snapshot().await?.nodes())
    }

    /// The pods reported in a namespace (all with `None`).
    pub async fn pod_metrics(&self, namespace: Option<&str>) -> ApiResult<Vec<PodMetrics>> {
        Ok(self.snapshot().await?.pods(namespace))
    }

    /// One custom metric of every pod reported in a namespace.
    pub async fn pod_custom_metrics(
        &self,
        namespace: &str,
        metric: PodMetric,
    ) -> ApiResult<Vec<PodValue>> {
        Ok(self.snapshot().await?.pod_values(namespace, metric))
    }

    /// A Service's activity merged over the nodes; `None` when no node saw it.
    pub async fn service_activity(
        &self,
        namespace: &str,
        name: &str,
    ) -> ApiResult<Option<ServiceMetrics>> {
        Ok(self.snapshot().await?.service(namespace, name))
    }

    async fn collect(&self) -> ApiResult<Snapshot> {
        let nodes = self.inner.objects.list_all("v1", "Node").await?;
        let calls = nodes.iter().map(|n| {
            let name = n
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let base = crate::agents::base_url(n);
            async move {
                let Some(base) = base else {
                    tracing::debug!(node = %name, "node publishes no agent endpoint; no metrics");
                    return None;
                };
                match self.fetch(&base).await {
                    Ok(summary) => Some(NodeReport {
                        node: name,
                        summary,
                    }),
                    Err(e) => {
                        tracing::debug!(node = %name, error = %e, "no stats from node");
                        None
                    }
                }
            }
        });
        let reports = futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect();
        Ok(Snapshot {
            taken: Instant::now(),
            reports,
        })
    }

    async fn fetch(&self, base: &str) -> Result<Summary, String> {
        let resp = crate::agents::client()
            .get(format!("{base}/stats/summary"))
            .bearer_auth(&self.inner.agent_token)
            .timeout(AGENT_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let code = resp.status();
        if !code.is_success() {
            return Err(format!("agent answered {code}"));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| format!("bad summary: {e}"))
    }
}

/// A Go duration string (`"10s"`, `"1m0s"`, `"10.5s"`, `"500ms"`) for a
/// window in seconds, to the millisecond, as metrics-server writes `window`.
pub fn go_duration(secs: f64) -> String {
    let ms = if secs.is_finite() && secs > 0.0 {
        (secs * 1000.0).round() as u64
    } else {
        0
    };
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    if frac > 0 {
        let f = format!("{frac:03}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_common::stats::{HttpUsage, NodeUsage};

    fn pod(ns: &str, name: &str, uid: &str, http: Option<HttpUsage>) -> PodUsage {
        PodUsage {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
            cpu_nanocores: 1_000_000,
            memory_bytes: 1 << 20,
            containers: vec![],
            http,
            running_seconds: 42.0,
        }
    }

    fn svc(name: &str, conns: u64, idle: f64) -> ServiceActivity {
        ServiceActivity {
            namespace: "d".into(),
            name: name.into(),
            connections_total: conns,
            idle_seconds: idle,
        }
    }

    fn snapshot() -> Snapshot {
        let http = HttpUsage {
            requests_total: 100,
            requests_per_second: 2.5,
            concurrency: 0.75,
            in_flight: 1,
            idle_seconds: 0.0,
        };
        Snapshot {
            taken: Instant::now(),
            reports: vec![
                NodeReport {
                    node: "n1".into(),
                    summary: Summary {
                        node: NodeUsage {
                            name: "n1".into(),
                            cpu_nanocores: 5,
                            memory_bytes: 7,
                        },
                        pods: vec![
                            pod("d", "web", "u1", Some(http)),
                            pod("e", "other", "u2", None),
                        ],
                        services: vec![svc("s", 3, 10.0), svc("t", 1, 1.0)],
                        window_seconds: 10.0,
                        timestamp: "2026-01-01T00:00:01Z".into(),
                    },
                },
                NodeReport {
                    node: "n2".into(),
                    summary: Summary {
                        pods: vec![pod("d", "web", "u1", None), pod("d", "job", "u3", None)],
                        services: vec![svc("s", 4, 2.5)],
                        window_seconds: 12.0,
                        timestamp: "2026-01-01T00:00:02Z".into(),
                        ..Summary::default()
                    },
                },
            ],
        }
    }

    #[test]
    fn merges_nodes_pods_and_services() {
        let s = snapshot();
        let nodes = s.nodes();
        assert_eq!(nodes.len(), 2);
        assert_eq!((nodes[0].cpu_nanocores, nodes[0].memory_bytes), (5, 7));
        let pods = s.pods(Some("d"));
        let names: Vec<_> = pods.iter().map(|p| p.usage.name.as_str()).collect();
        assert_eq!(names, ["web", "job"]);
        assert_eq!(pods[0].node, "n1");
        assert_eq!(s.pods(None).len(), 3);
        let merged = s.service("d", "s").unwrap();
        assert_eq!(merged.activity.connections_total, 7);
        assert_eq!(merged.activity.idle_seconds, 2.5);
        assert_eq!(merged.timestamp, "2026-01-01T00:00:02Z");
        assert_eq!(s.service("d", "t").unwrap().activity.connections_total, 1);
        assert!(s.service("d", "none").is_none());
    }

    #[test]
    fn pod_custom_values() {
        let s = snapshot();
        let rps = s.pod_values("d", PodMetric::RequestsPerSecond);
        assert_eq!(rps[0].value, 2.5);
        assert_eq!(rps[1].value, 0.0);
        let idle = s.pod_values("d", PodMetric::IdleSeconds);
        assert_eq!(idle[0].value, 0.0);
        // No HTTP stats: idle since it started.
        assert_eq!(idle[1].value, 42.0);
        assert_eq!(s.pod_values("d", PodMetric::InFlight)[0].value, 1.0);
        assert_eq!(s.pod_values("d", PodMetric::Concurrency)[0].value, 0.75);
    }

    #[test]
    fn metric_names_and_aliases() {
        assert_eq!(
            PodMetric::parse("requests-per-second"),
            Some(PodMetric::RequestsPerSecond)
        );
        assert_eq!(PodMetric::parse("in_flight"), Some(PodMetric::InFlight));
        assert_eq!(PodMetric::parse("cpu"), None);
        assert_eq!(
            ServiceMetric::parse("connections-total"),
            Some(ServiceMetric::ConnectionsTotal)
        );
        assert_eq!(ServiceMetric::parse("concurrency"), None);
    }

    #[test]
    fn windows_as_go_durations() {
        let cases = [
            (10.0, "10s"),
            (10.5, "10.5s"),
            (10.036, "10.036s"),
            (0.5, "500ms"),
            (60.0, "1m0s"),
            (3661.0, "1h1m1s"),
            (0.0, "0s"),
            (f64::NAN, "0s"),
        ];
        for (secs, want) in cases {
            assert_eq!(go_duration(secs), want, "{secs}");
        }
    }
}
