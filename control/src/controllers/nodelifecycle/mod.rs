//! Node lifecycle: a node whose Lease goes unrenewed for the grace period
//! turns `Ready=Unknown` and gets the `unreachable` NoSchedule and NoExecute
//! taints, removed when it comes back; a node reporting `MemoryPressure`,
//! `DiskPressure` or `PIDPressure` gets the matching NoSchedule taint while
//! it does (Kubernetes' TaintNodesByCondition). Nodes and their Leases are read from
//! informer caches; a node is looked at on every change of either, and again
//! when its grace period would run out.
//!
//! **Only nodes that heartbeat through a Lease are judged by it; a node is
//! judged on how long ago this controller saw its Lease renewed, by its own
//! clock.**

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::controllers::framework::{
    Action, Controller, Informer, Key, Queue, Reconciler, Result, enqueue_self,
};
use crate::controllers::nodeipam::MANAGER;
use crate::controllers::registration::{Ctx, all_keys};

/// How long a Lease may go unrenewed before its node is Unknown (default).
pub const GRACE: Duration = Duration::from_secs(10);

/// The taint key of a node that stopped heartbeating.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Where node Leases live.
const LEASE_NS: &str = "kube-node-lease";

/// When this controller last saw each node's Lease renewed, by its own clock
/// (Kubernetes' `probeTimestamp`): a node is judged on how long ago the
/// controller saw its renewTime change, so a controller that starts (a server
/// restart, a new leader) gives every node a full grace period, and clock skew
/// between hosts does not matter.
#[derive(Default)]
pub struct Probes(Mutex<HashMap<String, (String, Instant)>>);

impl Probes {
    /// How long ago, at `now`, `node`'s lease was first seen with `renewed`.
    pub fn age(&self, node: &str, renewed: &str, now: Instant) -> Duration {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = map
            .entry(node.to_string())
            .or_insert_with(|| (renewed.to_string(), now));
        if e.0 != renewed {
            *e = (renewed.to_string(), now);
        }
        now - e.1
    }
}

pub struct NodeLifecycle {
    pub client: Client,
    pub nodes: Arc<Informer<Node>>,
    pub leases: Arc<Informer<Lease>>,
    pub grace: Duration,
    pub probes: Probes,
}

fn ready_status(n: &Node) -> String {
    condition_status(n, "Ready")
}

fn taints(n: &Node) -> Vec<Taint> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

/// Node conditions that taint a node NoSchedule while they are True.
const PRESSURE_TAINTS: [(&str, &str); 3] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];

fn condition_status(n: &Node, ty: &str) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == ty))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// The taints (key, effect) this controller wants on `node`: `unreachable`
/// ones while it is unreachable, else one per pressure condition that is on.
pub fn wanted_taints(node: &Node, unreachable: bool) -> Vec<(&'static str, &'static str)> {
    if unreachable {
        return vec![(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")];
    }
    PRESSURE_TAINTS
        .iter()
        .filter(|(ty, _)| condition_status(node, ty) == "True")
        .map(|(_, key)| (*key, "NoSchedule"))
        .collect()
}

/// The taints `current` becomes when the ones this controller manages are
/// exactly `wanted` (those already there keep their timeAdded; others'
/// taints are kept as they are); `None` when that is what it is already.
pub fn managed_taints(
    current: &[Taint],
    wanted: &[(&str, &str)],
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let managed = |key: &str| key == UNREACHABLE || PRESSURE_TAINTS.iter().any(|(_, k)| *k == key);
    let mut kept: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(&t.key))
        .cloned()
        .collect();
    for (key, effect) in wanted {
        let existing = current
            .iter()
            .find(|t| t.key == *key && t.effect == *effect);
        kept.push(existing.cloned().unwrap_or_else(|| Taint {
            key: key.to_string(),
            effect: effect.to_string(),
            time_added: Some(Time(now)),
            value: None,
        }));
    }
    let sig = |a: &[Taint]| {
        let mut k: Vec<String> = a
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        k.sort();
        k
    };
    (sig(&kept) != sig(current)).then_some(kept)
}

impl NodeLifecycle {
    pub fn watch(&self, queue: &Arc<Queue>) {
        self.nodes.on(enqueue_self(queue));
        let q = queue.clone();
        self.leases.on(move |_, l| {
            if l.metadata.namespace.as_deref() == Some(LEASE_NS) {
                q.add(Key::new("", l.metadata.name.as_deref().unwrap_or_default()));
            }
        });
    }

    fn api(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn pp() -> PostParams {
        PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        }
    }

    /// Put on the taints the node's state calls for (`unreachable`, or its
    /// pressure conditions'), on the node as the API has it now.
    async fn set_taints(&self, name: &str, unreachable: bool) -> Result<()> {
        let node = self.api().get(name).await?;
        let wanted = wanted_taints(&node, unreachable);
        let Some(kept) = managed_taints(&taints(&node), &wanted, Timestamp::now()) else {
            return Ok(());
        };
        let mut new = node.clone();
        new.spec.get_or_insert_with(Default::default).taints = Some(kept);
        self.api().replace(name, &Self::pp(), &new).await?;
        tracing::info!(node = name, unreachable, taints = ?wanted, "node taints updated");
        Ok(())
    }
}

impl Reconciler for NodeLifecycle {
    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(node) = self.nodes.get(key) else {
            return Ok(Action::await_change());
        };
        let name = key.name.as_str();
        let Some(lease) = self.leases.get(&Key::new(LEASE_NS, name)) else {
            // Not heartbeating through a Lease: not judged.
            return Ok(Action::await_change());
        };
        let renew = lease.spec.as_ref().and_then(|s| s.renew_time.clone());
        let renewed = renew.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
        let age = self.probes.age(name, &renewed, Instant::now());
        let ready = ready_status(&node);
        if age <= self.grace {
            // The cache says whether a taint is there to change; a node keeps
            // `unreachable` until it reports Ready again.
            let current = taints(&node);
            let unreachable = ready != "True" && current.iter().any(|t| t.key == UNREACHABLE);
            let wanted = wanted_taints(&node, unreachable);
            if managed_taints(&current, &wanted, Timestamp::now()).is_some() {
                self.set_taints(name, unreachable).await?;
            }
            // Look again when the grace period would run out.
            return Ok(Action::requeue(
                self.grace - age + Duration::from_millis(100),
            ));
        }
        if ready == "Unknown" {
            self.set_taints(name, true).await?;
            return Ok(Action::await_change());
        }
        let mut new = (*node).clone();
        let status = new.status.get_or_insert_with(Default::default);
        let mut list: Vec<NodeCondition> = status
            .conditions
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "Ready")
            .collect();
        list.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusUnknown".into()),
            message: Some("Kubelet stopped posting node status.".into()),
            last_transition_time: Some(Time(Timestamp::now())),
            last_heartbeat_time: renew.map(|t| Time(t.0)),
        });
        status.conditions = Some(list);
        self.api().replace_status(name, &Self::pp(), &new).await?;
        self.set_taints(name, true).await?;
        tracing::warn!(node = name, "node lease expired: Ready=Unknown");
        Ok(Action::await_change())
    }
}

/// Start node lifecycle (one worker).
pub fn start(ctx: &mut Ctx<'_>) {
    let nodes = ctx.informer::<Node>();
    let leases = ctx.informer::<Lease>();
    let c = Arc::new(NodeLifecycle {
        client: ctx.client.clone(),
        nodes: nodes.clone(),
        leases: leases.clone(),
        grace: ctx.settings.node_grace,
        probes: Probes::default(),
    });
    let q = Queue::new();
    c.watch(&q);
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![(&nodes).into(), (&leases).into()])
            .resync(all_keys(&nodes)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: None,
            value: None,
        }
    }

    #[test]
    fn managed_taints_table() {
        let now = Timestamp::now();
        let other = taint("x", "NoSchedule");
        let unreachable = [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")];
        let both = vec![
            other.clone(),
            taint(UNREACHABLE, "NoSchedule"),
            taint(UNREACHABLE, "NoExecute"),
        ];
        // (current, wanted) -> keys:effects after, or None for no change
        let sig = |ts: &[Taint]| -> Vec<String> {
            ts.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        };
        assert_eq!(
            managed_taints(std::slice::from_ref(&other), &unreachable, now).map(|t| sig(&t)),
            Some(vec![
                "x:NoSchedule".to_string(),
                format!("{UNREACHABLE}:NoSchedule"),
                format!("{UNREACHABLE}:NoExecute"),
            ])
        );
        assert_eq!(managed_taints(&both, &unreachable, now), None);
        assert_eq!(
            managed_taints(&both, &[], now).map(|t| sig(&t)),
            Some(vec!["x:NoSchedule".to_string()])
        );
        assert_eq!(managed_taints(std::slice::from_ref(&other), &[], now), None);
        let added = managed_taints(&[], &unreachable, now).unwrap();
        assert!(added.iter().all(|t| t.time_added == Some(Time(now))));
        // Pressure replaces unreachable once the node is back.
        let disk = [("node.kubernetes.io/disk-pressure", "NoSchedule")];
        assert_eq!(
            managed_taints(&both, &disk, now).map(|t| sig(&t)),
            Some(vec![
                "x:NoSchedule".to_string(),
                "node.kubernetes.io/disk-pressure:NoSchedule".to_string()
            ])
        );
    }

    #[test]
    fn pressure_conditions_ask_for_taints() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "PIDPressure", "status": "True"}
            ]}
        }))
        .unwrap();
        assert_eq!(
            wanted_taints(&node, false),
            [
                ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                ("node.kubernetes.io/pid-pressure", "NoSchedule")
            ]
        );
        assert_eq!(wanted_taints(&node, true).len(), 2);
    }

    #[test]
    fn probe_age_restarts_on_renewal() {
        let p = Probes::default();
        let t0 = Instant::now();
        assert_eq!(p.age("n", "r1", t0), Duration::ZERO);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(p.age("n", "r1", t1), Duration::from_secs(5));
        assert_eq!(p.age("n", "r2", t1), Duration::ZERO);
        assert_eq!(p.age("m", "r1", t1), Duration::ZERO);
    }
}
