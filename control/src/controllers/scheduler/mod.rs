//! The scheduler: filter nodes (ready, schedulable, resources, nodeSelector,
//! required node affinity, taints and tolerations, the runtime the pod needs),
//! score the rest (least allocated plus spread) and bind through `pods/binding`.
//! Pods that fit nowhere get `PodScheduled=False` and a `FailedScheduling` event
//! that says why, node by node.
//!
//! **Filtering and scoring are pure functions of the pod and the nodes' state;
//! the controller around them (`controller.rs`) reads informer caches and only
//! runs on the Raft leader.**

pub use skiff_common::quantity;
mod controller;
mod image_runtime;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::api::node::v1::Scheduling;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::model::scheduling::{requirement_matches, toleration_matches};

pub use controller::start;

/// Label a node carries for each runtime handler it offers
/// (`runtime.skiff.dev/wasmtime: "true"`). A node with no such label does not
/// restrict runtimes.
pub const RUNTIME_LABEL_PREFIX: &str = "runtime.skiff.dev/";

/// What the scheduler knows about a node.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<(String, String, String)>,
    /// Allocatable cpu (cores), memory (bytes), pods.
    pub cpu: f64,
    pub memory: f64,
    pub pods: f64,
    /// Already requested by pods bound to it.
    pub used_cpu: f64,
    pub used_memory: f64,
    pub used_pods: f64,
    /// Host ports of the pods bound to it.
    pub used_ports: Vec<HostPort>,
}

/// A `hostPort`: protocol, `hostIP` ("" for every address), port.
pub type HostPort = (String, String, i32);

/// The `hostPort`s a pod asks for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            let ip = text(&p.host_ip);
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                if ip == "0.0.0.0" { String::new() } else { ip },
                port,
            ))
        })
        .collect()
}

fn ports_conflict(a: &HostPort, b: &HostPort) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1.is_empty() || b.1.is_empty() || a.1 == b.1)
}

/// What the scheduler needs of a pod.
#[derive(Debug, Clone, Default)]
pub struct PodNeeds {
    pub cpu: f64,
    pub memory: f64,
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: OR of terms, each an AND of (key, operator, values).
    pub affinity: Vec<Vec<(String, String, Vec<String>)>>,
    pub tolerations: Vec<(String, String, String, String)>,
    /// The runtime handler (from the pod's RuntimeClass), if any.
    pub handler: Option<String>,
    pub host_ports: Vec<HostPort>,
}

/// A quantity's value, 0 when it does not parse.
fn qty(q: &Quantity) -> f64 {
    quantity::parse(&q.0).unwrap_or(0.0)
}

fn text(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// (key, operator, value, effect) of a toleration, "" when unset.
fn toleration(t: &Toleration) -> (String, String, String, String) {
    (
        text(&t.key),
        text(&t.operator),
        text(&t.value),
        text(&t.effect),
    )
}

/// The cpu and memory a pod requests (requests, else limits), summed over its containers.
pub fn pod_requests(pod: &Pod) -> (f64, f64) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0.0, 0.0);
    };
    // A container's request, or its limit when it gives none.
    let wants = |c: &k8s_openapi::api::core::v1::Container| -> (f64, f64) {
        let r = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let l = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        let want = |k: &str| {
            r.and_then(|r| r.get(k))
                .or(l.and_then(|l| l.get(k)))
                .map_or(0.0, qty)
        };
        (want("cpu"), want("memory"))
    };
    let add = |a: (f64, f64), b: (f64, f64)| (a.0 + b.0, a.1 + b.1);
    let max = |a: (f64, f64), b: (f64, f64)| (a.0.max(b.0), a.1.max(b.1));
    // Kubernetes' effective requests: the app containers and the sidecars
    // together, or the largest init step (an init container beside the
    // sidecars started before it), whichever is more; plus the pod overhead.
    let apps = spec.containers.iter().map(wants).fold((0.0, 0.0), add);
    let (mut sidecars, mut init_peak) = ((0.0, 0.0), (0.0, 0.0));
    for c in spec.init_containers.iter().flatten() {
        let step = if c.restart_policy.as_deref() == Some("Always") {
            sidecars = add(sidecars, wants(c));
            sidecars
        } else {
            add(wants(c), sidecars)
        };
        init_peak = max(init_peak, step);
    }
    let overhead = spec.overhead.as_ref().map_or((0.0, 0.0), |o| {
        (
            o.get("cpu").map_or(0.0, qty),
            o.get("memory").map_or(0.0, qty),
        )
    });
    add(max(add(apps, sidecars), init_peak), overhead)
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> NodeInfo {
        let status = node.status.as_ref();
        let spec = node.spec.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let alloc = |k: &str| {
            status
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(k))
                .or(status
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get(k)))
        };
        NodeInfo {
            name: text(&node.metadata.name),
            ready,
            unschedulable: spec.and_then(|s| s.unschedulable) == Some(true),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .map(|ts| {
                    ts.iter()
                        .map(|t| (t.key.clone(), text(&t.value), t.effect.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            cpu: alloc("cpu").map_or(0.0, qty),
            memory: alloc("memory").map_or(0.0, qty),
            pods: alloc("pods").map_or(110.0, qty),
            ..NodeInfo::default()
        }
    }

    /// Count a pod bound to this node.
    pub fn add(&mut self, pod: &Pod) {
        let (c, m) = pod_requests(pod);
        self.used_cpu += c;
        self.used_memory += m;
        self.used_pods += 1.0;
        self.used_ports.extend(host_ports(pod));
    }
}

impl PodNeeds {
    pub fn from_pod(
        pod: &Pod,
        handler: Option<String>,
        class_scheduling: Option<&Scheduling>,
    ) -> PodNeeds {
        let (cpu, memory) = pod_requests(pod);
        let spec = pod.spec.as_ref();
        let mut node_selector = spec
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default();
        let mut tolerations: Vec<(String, String, String, String)> = spec
            .and_then(|s| s.tolerations.as_ref())
            .map(|ts| ts.iter().map(toleration).collect())
            .unwrap_or_default();
        if let Some(sched) = class_scheduling {
            node_selector.extend(sched.node_selector.clone().unwrap_or_default());
            tolerations.extend(sched.tolerations.iter().flatten().map(toleration));
        }
        let affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|required| {
                required
                    .node_selector_terms
                    .iter()
                    .map(|t| {
                        t.match_expressions
                            .iter()
                            .flatten()
                            .map(|e| {
                                (
                                    e.key.clone(),
                                    e.operator.clone(),
                                    e.values.clone().unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default();
        PodNeeds {
            cpu,
            memory,
            node_selector,
            affinity,
            tolerations,
            handler,
            host_ports: host_ports(pod),
        }
    }
}

fn tolerates(tols: &[(String, String, String, String)], taint: &(String, String, String)) -> bool {
    tols.iter().any(|(key, op, value, effect)| {
        toleration_matches((key, op, value, effect), (&taint.0, &taint.1, &taint.2))
    })
}

fn expr_matches(
    labels: &BTreeMap<String, String>,
    (key, op, vals): &(String, String, Vec<String>),
) -> bool {
    requirement_matches(labels.get(key).map(String::as_str), op, vals)
}

/// Why a pod cannot go on a node, or Ok.
pub fn filter(pod: &PodNeeds, node: &NodeInfo) -> Result<(), String> {
    if !node.ready {
        return Err("node(s) were not ready".into());
    }
    if node.unschedulable {
        return Err("node(s) were unschedulable".into());
    }
    for (k, v) in &pod.node_selector {
        if node.labels.get(k) != Some(v) {
            return Err("node(s) didn't match Pod's node affinity/selector".into());
        }
    }
    if !pod.affinity.is_empty()
        && !pod
            .affinity
            .iter()
            .any(|term| term.iter().all(|e| expr_matches(&node.labels, e)))
    {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    if pod.host_ports.iter().any(|want| {
        node.used_ports
            .iter()
            .any(|have| ports_conflict(want, have))
    }) {
        return Err("node(s) didn't have free ports for the requested pod ports".into());
    }
    for t in &node.taints {
        if (t.2 == "NoSchedule" || t.2 == "NoExecute") && !tolerates(&pod.tolerations, t) {
            return Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.0, t.1
            ));
        }
    }
    if let Some(h) = &pod.handler {
        let offers: Vec<&str> = node
            .labels
            .iter()
            .filter(|(k, v)| k.starts_with(RUNTIME_LABEL_PREFIX) && v.as_str() == "true")
            .map(|(k, _)| &k[RUNTIME_LABEL_PREFIX.len()..])
            .collect();
        if !offers.is_empty() && !offers.contains(&h.as_str()) {
            return Err(format!("node(s) do not offer runtime handler {h:?}"));
        }
    }
    if node.used_pods + 1.0 > node.pods {
        return Err("Too many pods".into());
    }
    if pod.cpu > 0.0 && node.used_cpu + pod.cpu > node.cpu {
        return Err("Insufficient cpu".into());
    }
    if pod.memory > 0.0 && node.used_memory + pod.memory > node.memory {
        return Err("Insufficient memory".into());
    }
    Ok(())
}

/// Higher is better: the free fraction left after placing the pod (least
/// allocated), plus a spread term favouring nodes with fewer pods.
pub fn score(pod: &PodNeeds, node: &NodeInfo) -> f64 {
    let free = |cap: f64, used: f64, want: f64| {
        if cap > 0.0 {
            ((cap - used - want) / cap).max(0.0)
        } else {
            0.0
        }
    };
    let least = (free(node.cpu, node.used_cpu, pod.cpu)
        + free(node.memory, node.used_memory, pod.memory))
        / 2.0;
    let spread = 1.0 / (1.0 + node.used_pods);
    least * 100.0 + spread * 50.0
}

/// The best node for the pod, or the reasons, grouped, as Kubernetes words them.
pub fn pick(pod: &PodNeeds, nodes: &[NodeInfo]) -> Result<String, String> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(f64, &NodeInfo)> = None;
    for n in nodes {
        match filter(pod, n) {
            Ok(()) => {
                let sc = score(pod, n);
                if best.is_none_or(|(b, bn)| sc > b || (sc == b && n.name < bn.name)) {
                    best = Some((sc, n));
                }
            }
            Err(r) => *reasons.entry(r).or_default() += 1,
        }
    }
    match best {
        Some((_, n)) => Ok(n.name.clone()),
        None => {
            let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            let detail = if parts.is_empty() {
                String::new()
            } else {
                format!(" {}.", parts.join(", "))
            };
            Err(format!("0/{} nodes are available:{detail}", nodes.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(name: &str, extra: Value) -> NodeInfo {
        let mut n = json!({"metadata": {"name": name, "labels": {}}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}});
        json_patch::merge(&mut n, &extra);
        NodeInfo::from_node(&serde_json::from_value(n).expect("a node"))
    }

    fn pod(spec: Value) -> PodNeeds {
        let p: Pod = serde_json::from_value(json!({"spec": spec})).expect("a pod");
        PodNeeds::from_pod(&p, None, None)
    }

    #[test]
    fn effective_requests_table() {
        let c = |name: &str, cpu: &str, mem: &str| json!({"name": name, "resources": {"requests": {"cpu": cpu, "memory": mem}}});
        let sidecar = |name: &str, cpu: &str, mem: &str| {
            let mut v = c(name, cpu, mem);
            v["restartPolicy"] = json!("Always");
            v
        };
        let cases: Vec<(&str, Value, (f64, f64))> = vec![
            (
                "apps add up",
                json!({"containers": [c("a", "100m", "1Mi"), c("b", "200m", "2Mi")]}),
                (0.3, 3.0 * 1048576.0),
            ),
            (
                "a limit stands in for a missing request",
                json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Mi"}}}]}),
                (1.0, 1048576.0),
            ),
            (
                "a big init container wins",
                json!({"initContainers": [c("i", "2", "8Mi")], "containers": [c("a", "100m", "1Mi")]}),
                (2.0, 8.0 * 1048576.0),
            ),
            (
                "init containers run one at a time",
                json!({"initContainers": [c("i", "500m", "1Mi"), c("j", "300m", "4Mi")], "containers": [c("a", "100m", "1Mi")]}),
                (0.5, 4.0 * 1048576.0),
            ),
            (
                "sidecars run beside the apps and later init containers",
                json!({"initContainers": [sidecar("s", "200m", "2Mi"), c("i", "1", "1Mi")], "containers": [c("a", "100m", "1Mi")]}),
                (1.2, 3.0 * 1048576.0),
            ),
            (
                "overhead is added",
                json!({"overhead": {"cpu": "250m", "memory": "1Mi"}, "containers": [c("a", "100m", "1Mi")]}),
                (0.35, 2.0 * 1048576.0),
            ),
        ];
        for (name, spec, (cpu, mem)) in cases {
            let p: Pod = serde_json::from_value(json!({"spec": spec})).expect("a pod");
            let (got_cpu, got_mem) = pod_requests(&p);
            assert!(
                (got_cpu - cpu).abs() < 1e-9 && (got_mem - mem).abs() < 1e-3,
                "{name}: {got_cpu} {got_mem}"
            );
        }
    }

    #[test]
    fn filter_table() {
        let base = json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]});
        let cases: Vec<(&str, Value, Value, Result<(), &str>)> = vec![
            ("fits", json!({}), base.clone(), Ok(())),
            (
                "not ready",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                base.clone(),
                Err("node(s) were not ready"),
            ),
            (
                "cordoned",
                json!({"spec": {"unschedulable": true}}),
                base.clone(),
                Err("node(s) were unschedulable"),
            ),
            (
                "selector miss",
                json!({}),
                json!({"containers": [], "nodeSelector": {"disk": "ssd"}}),
                Err("node(s) didn't match Pod's node affinity/selector"),
            ),
            (
                "selector hit",
                json!({"metadata": {"labels": {"disk": "ssd"}}}),
                json!({"containers": [], "nodeSelector": {"disk": "ssd"}}),
                Ok(()),
            ),
            (
                "too much cpu",
                json!({}),
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}),
                Err("Insufficient cpu"),
            ),
            (
                "too much memory",
                json!({}),
                json!({"containers": [{"name": "c", "resources": {"limits": {"memory": "5Gi"}}}]}),
                Err("Insufficient memory"),
            ),
            (
                "taint",
                json!({"spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}}),
                base.clone(),
                Err("node(s) had untolerated taint {gpu: yes}"),
            ),
            (
                "tolerated",
                json!({"spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}}),
                json!({"containers": [], "tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]}),
                Ok(()),
            ),
            (
                "tolerate all",
                json!({"spec": {"taints": [{"key": "x", "effect": "NoExecute"}]}}),
                json!({"containers": [], "tolerations": [{"operator": "Exists"}]}),
                Ok(()),
            ),
            (
                "affinity in",
                json!({"metadata": {"labels": {"zone": "a"}}}),
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}}}),
                Ok(()),
            ),
            (
                "affinity notin",
                json!({"metadata": {"labels": {"zone": "a"}}}),
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]}}}}),
                Err("node(s) didn't match Pod's node affinity/selector"),
            ),
        ];
        for (what, n, p, want) in cases {
            let got = filter(&pod(p), &node("n", n));
            assert_eq!(got, want.map_err(str::to_string), "{what}");
        }
    }

    #[test]
    fn host_ports_are_one_pod_each() {
        let with = |ports: Value| pod(json!({"containers": [{"name": "c", "ports": ports}]}));
        let mut n = node("n", json!({}));
        let bound: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c",
            "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]}]}}))
        .unwrap();
        n.add(&bound);
        let busy = Err("node(s) didn't have free ports for the requested pod ports".to_string());
        assert_eq!(
            filter(
                &with(json!([{"containerPort": 1, "hostPort": 8080, "protocol": "TCP"}])),
                &n
            ),
            busy
        );
        assert_eq!(
            filter(
                &with(
                    json!([{"containerPort": 1, "hostPort": 8080, "protocol": "TCP", "hostIP": "10.0.0.1"}])
                ),
                &n
            ),
            busy,
            "an unset hostIP holds every address"
        );
        assert_eq!(
            filter(
                &with(json!([{"containerPort": 1, "hostPort": 8080, "protocol": "UDP"}])),
                &n
            ),
            Ok(())
        );
        assert_eq!(
            filter(
                &with(json!([{"containerPort": 8080, "protocol": "TCP"}])),
                &n
            ),
            Ok(())
        );
    }

    #[test]
    fn runtime_handler_and_scoring() {
        let wasm_only = node(
            "w",
            json!({"metadata": {"labels": {"runtime.skiff.dev/wasmtime": "true"}}}),
        );
        let mut p = pod(json!({"containers": []}));
        p.handler = Some("runc".into());
        assert!(filter(&p, &wasm_only).unwrap_err().contains("runc"));
        p.handler = Some("wasmtime".into());
        assert!(filter(&p, &wasm_only).is_ok());
        // Spread: the emptier node wins; ties go to the smaller name.
        let mut busy = node("a", json!({}));
        busy.used_pods = 3.0;
        let idle = node("b", json!({}));
        assert_eq!(pick(&p, &[busy.clone(), idle.clone()]).unwrap(), "b");
        assert_eq!(
            pick(&p, &[node("z", json!({})), node("y", json!({}))]).unwrap(),
            "y"
        );
        let none = pick(
            &p,
            &[
                node("x", json!({"spec": {"unschedulable": true}})),
                node("q", json!({"status": {"conditions": []}})),
            ],
        )
        .unwrap_err();
        assert_eq!(
            none,
            "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
        );
    }
}
