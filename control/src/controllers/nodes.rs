//! Node controllers: pod CIDR allocation (one block of the cluster CIDR per node,
//! /24 by default), lifecycle (a node whose Lease goes unrenewed for the grace
//! period turns `Ready=Unknown` and gets the `unreachable` NoSchedule and
//! NoExecute taints, removed when it comes back) and eviction (pods on a node
//! with a NoExecute taint go once their toleration of it runs out).
//!
//! **A pod CIDR, once assigned, never changes and is never given to two nodes.
//! Only nodes that heartbeat through a Lease are judged by it.**

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::model::meta::now_rfc3339;
use crate::model::status::ApiResult;
use crate::storage::{Objects, WriteOptions};

use super::support::{leader_loop, list_all, s, writer};

/// How long a Lease may go unrenewed before its node is Unknown (default).
pub const GRACE: Duration = Duration::from_secs(10);

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn wo() -> WriteOptions {
    writer("node-controller")
}

/// The cluster CIDR and the size of the block each node gets from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCidrs {
    base: u32,
    prefix: u8,
    node_prefix: u8,
}

impl Default for PodCidrs {
    fn default() -> Self {
        PodCidrs::new("10.88.0.0/16", 24).expect("the default cluster CIDR is valid")
    }
}

impl PodCidrs {
    /// `cluster` like `10.88.0.0/16`; each node gets a `/node_prefix` of it.
    pub fn new(cluster: &str, node_prefix: u8) -> Result<PodCidrs, String> {
        let (addr, len) = cluster
            .split_once('/')
            .ok_or_else(|| format!("cluster CIDR {cluster:?}: expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|e| format!("cluster CIDR {cluster:?}: {e}"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= 30)
            .ok_or_else(|| format!("cluster CIDR {cluster:?}: prefix must be 0..=30"))?;
        // Strictly smaller than the cluster CIDR: a node's block is routed onto its
        // bridge more specifically than the cluster's unreachable route.
        if node_prefix <= prefix || node_prefix > 30 {
            return Err(format!(
                "node CIDR mask /{node_prefix} must be longer than the cluster's /{prefix} and at most /30"
            ));
        }
        let base = u32::from(addr) & mask(prefix);
        Ok(PodCidrs {
            base,
            prefix,
            node_prefix,
        })
    }

    /// The cluster CIDR in text form.
    pub fn cluster(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    fn blocks(&self) -> u64 {
        1u64 << (self.node_prefix - self.prefix)
    }

    fn block(&self, i: u64) -> String {
        let start = self.base + ((i as u32) << (32 - self.node_prefix));
        format!("{}/{}", Ipv4Addr::from(start), self.node_prefix)
    }

    /// The index of a node CIDR in this cluster CIDR, if it is one of its blocks.
    fn index_of(&self, cidr: &str) -> Option<u64> {
        let (addr, len) = cidr.split_once('/')?;
        let addr = u32::from(addr.parse::<Ipv4Addr>().ok()?);
        (len.parse::<u8>().ok()? == self.node_prefix && addr & mask(self.prefix) == self.base)
            .then(|| u64::from((addr - self.base) >> (32 - self.node_prefix)))
    }

    /// The lowest free block, given the ones in use.
    pub fn next(&self, used: &BTreeSet<u64>) -> Option<String> {
        (0..self.blocks())
            .find(|i| !used.contains(i))
            .map(|i| self.block(i))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// Run the node controllers until the process ends.
pub async fn run(objects: Objects, cidrs: PodCidrs, grace: Duration) {
    let probes = Probes::default();
    leader_loop(
        objects,
        "nodes",
        &["/core/nodes/"],
        Duration::from_secs(1),
        move |o| {
            let probes = probes.clone();
            async move { pass(&o, cidrs, grace, &probes).await }
        },
    )
    .await;
}

/// When this controller last saw each node's Lease renewed, by its own clock
/// (Kubernetes' `probeTimestamp`): a node is judged on how long ago the
/// controller saw its renewTime change, so a controller that starts (a server
/// restart, a new leader) gives every node a full grace period, and clock skew
/// between hosts does not matter.
#[derive(Clone, Default)]
struct Probes(
    std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
    >,
);

impl Probes {
    /// How long ago `node`'s lease was first seen with `renewed`.
    fn age(&self, node: &str, renewed: &str) -> Duration {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let e = map
            .entry(node.to_string())
            .or_insert_with(|| (renewed.to_string(), now));
        if e.0 != renewed {
            *e = (renewed.to_string(), now);
        }
        now - e.1
    }
}

async fn pass(o: &Objects, cidrs: PodCidrs, grace: Duration, probes: &Probes) -> ApiResult<()> {
    let Some(nt) = o.registry.by_kind("v1", "Node").cloned() else {
        return Ok(());
    };
    let nodes = list_all(o, "v1", "Node").await?;
    let mut used: BTreeSet<u64> = nodes
        .iter()
        .filter_map(|n| cidrs.index_of(s(n, "/spec/podCIDR")))
        .collect();
    for n in &nodes {
        let name = s(n, "/metadata/name");
        if s(n, "/spec/podCIDR").is_empty() {
            let Some(cidr) = cidrs.next(&used) else {
                tracing::warn!(node = name, "cluster CIDR exhausted");
                continue;
            };
            let mut new = n.clone();
            new["spec"]["podCIDR"] = json!(cidr);
            new["spec"]["podCIDRs"] = json!([cidr]);
            if o.update(&nt, None, name, new, None, &wo()).await.is_ok()
                && let Some(i) = cidrs.index_of(&cidr)
            {
                used.insert(i);
                tracing::info!(node = name, cidr, "allocated pod CIDR");
            }
        }
        lifecycle(o, n, grace, probes).await?;
    }
    evict(o).await
}

/// Mark a node Unknown/unreachable when its Lease is stale.
async fn lifecycle(o: &Objects, node: &Value, grace: Duration, probes: &Probes) -> ApiResult<()> {
    let (Some(nt), Some(lt)) = (
        o.registry.by_kind("v1", "Node").cloned(),
        o.registry
            .by_kind("coordination.k8s.io/v1", "Lease")
            .cloned(),
    ) else {
        return Ok(());
    };
    let name = s(node, "/metadata/name");
    let lease = match o.get(&lt, Some("kube-node-lease"), name).await {
        Ok(l) => l,
        Err(_) => return Ok(()), // not heartbeating through a Lease: not judged
    };
    let renewed = s(&lease, "/spec/renewTime");
    let stale = probes.age(name, renewed) > grace;
    let conds = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready_status = conds
        .iter()
        .find(|c| s(c, "/type") == "Ready")
        .map(|c| s(c, "/status").to_string())
        .unwrap_or_default();
    if !stale {
        if ready_status == "True" {
            set_unreachable(o, &nt, name, false).await?;
        }
        return Ok(());
    }
    if ready_status == "Unknown" {
        return set_unreachable(o, &nt, name, true).await;
    }
    let mut new = node.clone();
    let mut list: Vec<Value> = conds
        .into_iter()
        .filter(|c| s(c, "/type") != "Ready")
        .collect();
    list.push(json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.", "lastTransitionTime": now_rfc3339(), "lastHeartbeatTime": renewed}));
    new["status"]["conditions"] = Value::Array(list);
    o.update(&nt, None, name, new, Some("status"), &wo())
        .await?;
    set_unreachable(o, &nt, name, true).await?;
    tracing::warn!(node = name, "node lease expired: Ready=Unknown");
    Ok(())
}

/// Add (or remove) the `unreachable` NoSchedule and NoExecute taints.
async fn set_unreachable(
    o: &Objects,
    nt: &crate::model::kinds::ResourceType,
    name: &str,
    on: bool,
) -> ApiResult<()> {
    let node = o.get(nt, None, name).await?;
    let taints: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut kept: Vec<Value> = taints
        .iter()
        .filter(|t| s(t, "/key") != UNREACHABLE)
        .cloned()
        .collect();
    if on {
        for effect in ["NoSchedule", "NoExecute"] {
            let existing = taints
                .iter()
                .find(|t| s(t, "/key") == UNREACHABLE && s(t, "/effect") == effect);
            kept.push(existing.cloned().unwrap_or_else(
                || json!({"key": UNREACHABLE, "effect": effect, "timeAdded": now_rfc3339()}),
            ));
        }
    }
    let same = |a: &Vec<Value>| {
        let mut k: Vec<String> = a
            .iter()
            .map(|t| format!("{}:{}", s(t, "/key"), s(t, "/effect")))
            .collect();
        k.sort();
        k
    };
    if same(&kept) == same(&taints) {
        return Ok(());
    }
    let mut new = node.clone();
    new["spec"]["taints"] = Value::Array(kept);
    o.update(nt, None, name, new, None, &wo()).await?;
    tracing::info!(node = name, unreachable = on, "node taints updated");
    Ok(())
}

/// When a pod must leave a node with these NoExecute taints: `None` to stay,
/// `Some(at)` (Unix seconds) to go then.
pub fn eviction_time(pod: &Value, taints: &[Value]) -> Option<i64> {
    let tolerations: Vec<Value> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut at: Option<i64> = None;
    for taint in taints.iter().filter(|t| s(t, "/effect") == "NoExecute") {
        let added = s(taint, "/timeAdded")
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .unwrap_or_else(|_| jiff::Timestamp::now().as_second());
        let matching: Vec<&Value> = tolerations
            .iter()
            .filter(|t| {
                crate::model::scheduling::toleration_matches(
                    (
                        s(t, "/key"),
                        s(t, "/operator"),
                        s(t, "/value"),
                        s(t, "/effect"),
                    ),
                    (s(taint, "/key"), s(taint, "/value"), "NoExecute"),
                )
            })
            .collect();
        let deadline = if matching.is_empty() {
            Some(added)
        } else {
            // The shortest bound among the tolerations that match; unbounded
            // if any of them is.
            let secs: Vec<Option<i64>> = matching
                .iter()
                .map(|t| t.get("tolerationSeconds").and_then(Value::as_i64))
                .collect();
            if secs.iter().any(Option::is_none) {
                None
            } else {
                secs.into_iter().flatten().min().map(|s| added + s.max(0))
            }
        };
        if let Some(d) = deadline {
            at = Some(at.map_or(d, |a| a.min(d)));
        }
    }
    at
}

/// Delete the pods whose toleration of their node's NoExecute taints ran out.
async fn evict(o: &Objects) -> ApiResult<()> {
    let nodes = list_all(o, "v1", "Node").await?;
    let tainted: Vec<(String, Vec<Value>)> = nodes
        .iter()
        .filter_map(|n| {
            let ts: Vec<Value> = n
                .pointer("/spec/taints")
                .and_then(Value::as_array)?
                .iter()
                .filter(|t| s(t, "/effect") == "NoExecute")
                .cloned()
                .collect();
            (!ts.is_empty()).then(|| (s(n, "/metadata/name").to_string(), ts))
        })
        .collect();
    if tainted.is_empty() {
        return Ok(());
    }
    let Some(pt) = o.registry.by_kind("v1", "Pod").cloned() else {
        return Ok(());
    };
    let now = jiff::Timestamp::now().as_second();
    for p in list_all(o, "v1", "Pod").await? {
        if p.pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            continue;
        }
        let Some((node, taints)) = tainted.iter().find(|(n, _)| n == s(&p, "/spec/nodeName"))
        else {
            continue;
        };
        if let Some(at) = eviction_time(&p, taints)
            && at <= now
        {
            let (ns, name) = (s(&p, "/metadata/namespace"), s(&p, "/metadata/name"));
            tracing::info!(pod = %format!("{ns}/{name}"), node = %node, "evicting: NoExecute taint not tolerated");
            let opts = crate::storage::DeleteOptions {
                uid: Some(s(&p, "/metadata/uid").to_string()),
                ..Default::default()
            };
            if let Err(e) = o.delete(&pt, Some(ns), name, &opts).await {
                tracing::debug!(pod = name, error = %e.message, "eviction failed; retried");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_follows_tolerations() {
        let taint =
            json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"});
        let t0 = "2026-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        let pod = |tols: Value| json!({"spec": {"tolerations": tols}});
        assert_eq!(
            eviction_time(&pod(json!([])), std::slice::from_ref(&taint)),
            Some(t0)
        );
        let bounded = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]),
        );
        assert_eq!(
            eviction_time(&bounded, std::slice::from_ref(&taint)),
            Some(t0 + 30)
        );
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, std::slice::from_ref(&taint)), None);
        let other = pod(json!([{"key": "x", "operator": "Exists", "effect": "NoExecute"}]));
        assert_eq!(eviction_time(&other, &[taint]), Some(t0));
    }

    #[test]
    fn cidrs_table() {
        let c = PodCidrs::default();
        assert_eq!(c.next(&BTreeSet::new()).unwrap(), "10.88.0.0/24");
        assert_eq!(c.next(&BTreeSet::from([0, 1, 3])).unwrap(), "10.88.2.0/24");
        assert_eq!(c.next(&(0..=255).collect()), None);
        assert_eq!(c.index_of("10.88.7.0/24"), Some(7));
        assert_eq!(c.index_of("10.99.7.0/24"), None);
        let small = PodCidrs::new("10.88.130.0/24", 26).unwrap();
        assert_eq!(small.next(&BTreeSet::from([0])).unwrap(), "10.88.130.64/26");
        assert_eq!(small.index_of("10.88.130.192/26"), Some(3));
        assert_eq!(small.cluster(), "10.88.130.0/24");
        for (cluster, node) in [
            ("10.88.0.0", 24),
            ("10.88.0.0/16", 12),
            ("x/16", 24),
            ("10.0.0.0/16", 31),
        ] {
            assert!(PodCidrs::new(cluster, node).is_err(), "{cluster} /{node}");
        }
    }
}
