//! Node-pressure eviction, as the kubelet's eviction manager does it: the
//! node measures its signals (memory, the pod and image filesystems, process
//! ids) every `interval`, reports `MemoryPressure`, `DiskPressure` and
//! `PIDPressure` conditions, and while a hard threshold is met evicts one pod
//! at a time in the kubelet's order (pods above their requests, then lower
//! priority, then larger use). Pods whose `emptyDir` outgrows its
//! `sizeLimit`, or whose disk use outgrows their `ephemeral-storage` limits,
//! are evicted whatever the node's state. A node under pressure turns away
//! new pods as the kubelet's admission does.
//!
//! **An evicted pod is `Failed` with reason `Evicted`, a message naming the
//! resource, a `DisruptionTarget` condition and a Warning event; critical
//! pods (priority at or above `system-cluster-critical`) are never evicted.**

pub mod local;
pub mod rank;
pub mod signals;
pub mod thresholds;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::pod::{NodeCtx, PodInfo};
use rank::{Candidate, Usage};
use thresholds::{Condition, Observed, Threshold};

/// How the node evicts.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--eviction-hard`.
    pub hard: Vec<Threshold>,
    /// How long a pressure condition stays on after its threshold was last
    /// met (`--eviction-pressure-transition-period`).
    pub transition: Duration,
    /// How often the signals are measured.
    pub interval: Duration,
    pub filesystems: signals::Filesystems,
}

/// The kubelet's grace period for a pod evicted by a hard threshold.
pub const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// How long the manager waits for an evicted pod's clean-up before it looks
/// again (the kubelet's `podCleanupTimeout`).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's pressure conditions and when each last changed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pressure {
    pub on: BTreeSet<Condition>,
    since: BTreeMap<Condition, String>,
}

impl Pressure {
    /// Set the conditions that are on; whether anything changed.
    fn set(&mut self, on: BTreeSet<Condition>, now: &str) -> bool {
        if on == self.on && !self.since.is_empty() {
            return false;
        }
        for c in Condition::ALL {
            let was = self.on.contains(&c);
            if was != on.contains(&c) || !self.since.contains_key(&c) {
                self.since.insert(c, now.to_string());
            }
        }
        self.on = on;
        true
    }

    /// The three conditions as Node status conditions.
    pub fn conditions(&self, heartbeat: &str) -> Vec<Value> {
        Condition::ALL
            .iter()
            .map(|&c| {
                let on = self.on.contains(&c);
                let (reason, message) = c.words(on);
                let since = self.since.get(&c).map_or(heartbeat, String::as_str);
                json!({"type": c.type_name(), "status": if on { "True" } else { "False" },
                    "reason": reason, "message": message,
                    "lastHeartbeatTime": heartbeat, "lastTransitionTime": since})
            })
            .collect()
    }

    /// The kubelet's admission under pressure: with memory pressure only
    /// BestEffort pods are turned away (unless they tolerate the
    /// memory-pressure taint), with disk or PID pressure every pod; critical
    /// pods always start. The error is the pod's message.
    pub fn admit(&self, spec: &PodSpec) -> Result<(), String> {
        if self.on.is_empty() || spec.priority.unwrap_or(0) >= rank::CRITICAL_PRIORITY {
            return Ok(());
        }
        if self.on.len() == 1 && self.on.contains(&Condition::MemoryPressure) {
            let best_effort = crate::pod::status::qos_class(spec) == "BestEffort";
            let tolerates = spec.tolerations.iter().flatten().any(|t| {
                (t.key.as_deref() == Some(Condition::MemoryPressure.taint())
                    || (t.key.is_none() && t.operator.as_deref() == Some("Exists")))
                    && matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"))
            });
            if !best_effort || tolerates {
                return Ok(());
            }
        }
        let names: Vec<&str> = self.on.iter().map(|c| c.type_name()).collect();
        Err(format!("The node had condition: [{}]. ", names.join(", ")))
    }
}

/// A running pod's eviction handle.
struct Registered {
    info: Arc<PodInfo>,
    tx: watch::Sender<Option<String>>,
}

/// The pods running on this node, each with a way to evict it.
#[derive(Default)]
pub struct Evictions(Mutex<HashMap<String, Registered>>);

impl Evictions {
    /// A running pod; the receiver gets the eviction message, if it comes.
    pub fn register(&self, info: Arc<PodInfo>) -> watch::Receiver<Option<String>> {
        let (tx, rx) = watch::channel(None);
        self.0
            .lock()
            .expect("evictions")
            .insert(info.uid.clone(), Registered { info, tx });
        rx
    }

    /// The pod stopped.
    pub fn forget(&self, uid: &str) {
        self.0.lock().expect("evictions").remove(uid);
    }

    fn pods(&self) -> Vec<Arc<PodInfo>> {
        self.0
            .lock()
            .expect("evictions")
            .values()
            .map(|r| r.info.clone())
            .collect()
    }

    fn running(&self, uid: &str) -> bool {
        self.0.lock().expect("evictions").contains_key(uid)
    }

    /// Tell the pod's worker to evict it; false when it is not running.
    fn evict(&self, uid: &str, message: &str) -> bool {
        self.0
            .lock()
            .expect("evictions")
            .get(uid)
            .is_some_and(|r| r.tx.send(Some(message.to_string())).is_ok())
    }
}

/// A container's request for resource `name` (its limit when it requests
/// none, as Kubernetes defaults requests), in the resource's units.
pub(crate) fn request_of(c: &k8s_openapi::api::core::v1::Container, name: &str) -> u64 {
    crate::pod::resource(c, "requests", name)
        .or_else(|| crate::pod::resource(c, "limits", name))
        .and_then(skiff_common::quantity::parse)
        .map_or(0, |v| v.max(0.0).ceil() as u64)
}

/// The memory requests of a pod (the sum over its containers).
fn memory_requested(spec: &PodSpec) -> u64 {
    spec.containers
        .iter()
        .map(|c| request_of(c, "memory"))
        .sum()
}

fn container_memory_request(spec: &PodSpec, name: &str) -> u64 {
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .map_or(0, |c| request_of(c, "memory"))
}

/// The eviction message of a pod chosen for `threshold`, in the kubelet's
/// words.
pub fn pressure_message(threshold: &Threshold, seen: Observed, pod: &Candidate) -> String {
    let resource = threshold.signal.resource_name();
    let mut m = format!(
        "The node was low on resource: {resource}. Threshold quantity: {}, available: {}. ",
        threshold.show(threshold.amount(seen.capacity)),
        threshold.show(seen.available),
    );
    if threshold.signal.resource() == thresholds::Resource::Memory {
        let mut containers = pod.containers.clone();
        containers.sort_by_key(|c| std::cmp::Reverse(c.1.saturating_sub(c.2)));
        for (name, used, requested) in containers.into_iter().filter(|c| c.1 > c.2) {
            m.push_str(&format!(
                "Container {name} was using {}, request is {}, has larger consumption of {resource}. ",
                thresholds::bytes(used),
                thresholds::bytes(requested)
            ));
        }
    }
    m
}

/// Which conditions are on at `now`: those whose threshold is met now or
/// was met within the transition period.
fn conditions_on(
    last_met: &BTreeMap<Condition, Instant>,
    now: Instant,
    transition: Duration,
) -> BTreeSet<Condition> {
    last_met
        .iter()
        .filter(|(_, at)| now.duration_since(**at) <= transition)
        .map(|(c, _)| *c)
        .collect()
}

/// Measure every running pod's disk use (blocking).
fn measure_all(ctx: &NodeCtx, pods: &[Arc<PodInfo>]) -> Vec<local::Measured> {
    pods.iter()
        .map(|p| {
            local::measure(
                &p.spec,
                &ctx.pod_dir(&p.uid).0.join("volumes"),
                &ctx.logs.pod_dir(&p.namespace, &p.name, &p.uid),
            )
        })
        .collect()
}

/// Run the eviction manager for as long as the agent runs.
pub async fn run(ctx: Arc<NodeCtx>, cfg: Config, pressure: watch::Sender<Pressure>) {
    tracing::info!(
        thresholds = %cfg.hard.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "eviction manager started"
    );
    let mut last_met: BTreeMap<Condition, Instant> = BTreeMap::new();
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(cfg.interval).await;
        }
        first = false;
        let fs = cfg.filesystems.clone();
        let seen = tokio::task::spawn_blocking(move || signals::observe(&fs))
            .await
            .unwrap_or_default();
        let met: Vec<(Threshold, Observed)> = cfg
            .hard
            .iter()
            .filter_map(|t| seen.get(&t.signal).filter(|o| t.met(**o)).map(|o| (*t, *o)))
            .collect();
        let now = Instant::now();
        for (t, o) in &met {
            last_met.insert(t.signal.condition(), now);
            tracing::debug!(threshold = %t, available = o.available, "eviction threshold met");
        }
        let on = conditions_on(&last_met, now, cfg.transition);
        let stamp = crate::pod::status::now();
        pressure.send_if_modified(|p| {
            let changed = p.set(on.clone(), &stamp);
            if changed {
                tracing::warn!(conditions = ?on, "node pressure conditions changed");
            }
            changed
        });
        let pods = ctx.evictions.pods();
        let measured = {
            let (ctx2, pods2) = (ctx.clone(), pods.clone());
            tokio::task::spawn_blocking(move || measure_all(&ctx2, &pods2))
                .await
                .unwrap_or_default()
        };
        // Local storage limits first, whatever the node's state.
        let mut evicted = Vec::new();
        for (p, m) in pods.iter().zip(&measured) {
            if let Some(message) = local::violation(&p.spec, m) {
                evict(&ctx, p, &message).await;
                evicted.push(p.uid.clone());
            }
        }
        if !evicted.is_empty() {
            continue;
        }
        let Some((threshold, observed)) = met.first() else {
            continue;
        };
        let usage: HashMap<String, skiff_common::stats::PodUsage> = ctx
            .stats
            .summary()
            .pods
            .into_iter()
            .map(|u| (u.uid.clone(), u))
            .collect();
        let candidates: Vec<Candidate> = pods
            .iter()
            .zip(&measured)
            .map(|(p, m)| {
                let u = usage.get(&p.uid);
                Candidate {
                    uid: p.uid.clone(),
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    priority: p.spec.priority.unwrap_or(0),
                    memory: Usage {
                        used: u.map_or(0, |u| u.memory_bytes),
                        requested: memory_requested(&p.spec),
                    },
                    storage: Usage {
                        used: m.total(),
                        requested: local::requested(&p.spec),
                    },
                    pids: 0,
                    containers: u
                        .map(|u| {
                            u.containers
                                .iter()
                                .map(|c| {
                                    let req = container_memory_request(&p.spec, &c.name);
                                    (c.name.clone(), c.memory_bytes, req)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        let ranked = rank::rank(&candidates, threshold.signal.resource());
        let Some(victim) = ranked.first() else {
            tracing::warn!(threshold = %threshold, "eviction threshold met, but no pod can be evicted");
            continue;
        };
        let Some(info) = pods.iter().find(|p| p.uid == victim.uid) else {
            continue;
        };
        evict(&ctx, info, &pressure_message(threshold, *observed, victim)).await;
        // One pod at a time: let it go before judging again.
        let t = Instant::now();
        while ctx.evictions.running(&victim.uid) && t.elapsed() < CLEANUP_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn evict(ctx: &NodeCtx, pod: &PodInfo, message: &str) {
    if !ctx.evictions.evict(&pod.uid, message) {
        return;
    }
    tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), message, "evicting pod");
    ctx.events
        .record(&pod.subject(), true, "Evicted", message)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn admission_under_pressure() {
        let best_effort = spec(json!({"containers": [{"name": "a"}]}));
        let burstable = spec(json!({"containers": [{"name": "a",
            "resources": {"requests": {"memory": "10Mi"}}}]}));
        let tolerant = spec(json!({"containers": [{"name": "a"}], "tolerations": [
            {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}]}));
        let critical = spec(json!({"containers": [{"name": "a"}], "priority": 2000001000}));
        let mut p = Pressure::default();
        assert!(p.admit(&best_effort).is_ok());
        p.set([Condition::MemoryPressure].into(), "t0");
        assert_eq!(
            p.admit(&best_effort).unwrap_err(),
            "The node had condition: [MemoryPressure]. "
        );
        assert!(p.admit(&burstable).is_ok());
        assert!(p.admit(&tolerant).is_ok());
        p.set(
            [Condition::MemoryPressure, Condition::DiskPressure].into(),
            "t1",
        );
        assert_eq!(
            p.admit(&burstable).unwrap_err(),
            "The node had condition: [MemoryPressure, DiskPressure]. "
        );
        assert!(p.admit(&critical).is_ok());
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut p = Pressure::default();
        assert!(p.set(BTreeSet::new(), "t0"));
        assert!(!p.set(BTreeSet::new(), "t1"));
        assert!(p.set([Condition::DiskPressure].into(), "t2"));
        let c = p.conditions("hb");
        let disk = c.iter().find(|c| c["type"] == "DiskPressure").unwrap();
        assert_eq!(disk["status"], "True");
        assert_eq!(disk["reason"], "KubeletHasDiskPressure");
        assert_eq!(disk["lastTransitionTime"], "t2");
        let mem = c.iter().find(|c| c["type"] == "MemoryPressure").unwrap();
        assert_eq!(mem["status"], "False");
        assert_eq!(mem["lastTransitionTime"], "t0");
        assert_eq!(mem["lastHeartbeatTime"], "hb");
    }

    #[test]
    fn a_condition_outlives_its_threshold_by_the_transition_period() {
        let t0 = Instant::now();
        let met = BTreeMap::from([(Condition::MemoryPressure, t0)]);
        let period = Duration::from_secs(5);
        assert!(
            conditions_on(&met, t0 + Duration::from_secs(4), period)
                .contains(&Condition::MemoryPressure)
        );
        assert!(conditions_on(&met, t0 + Duration::from_secs(6), period).is_empty());
    }

    #[test]
    fn the_message_names_the_resource_and_the_hungry_container() {
        let t = thresholds::parse("memory.available<100Mi").unwrap()[0];
        let pod = Candidate {
            containers: vec![
                ("app".into(), 300 << 20, 100 << 20),
                ("side".into(), 1 << 20, 2 << 20),
            ],
            ..Default::default()
        };
        let seen = Observed {
            available: 50 << 20,
            capacity: 1 << 30,
        };
        assert_eq!(
            pressure_message(&t, seen, &pod),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container app was using 300Mi, request is 100Mi, has larger consumption of memory. "
        );
    }
}
