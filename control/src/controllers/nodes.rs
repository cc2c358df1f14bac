//! Node controllers: pod CIDR allocation (one block of the cluster CIDR per node,
//! /24 by default)
//! and lifecycle (a node whose Lease stopped being renewed turns `Ready=Unknown`
//! and gets the `unreachable` taint).
//!
//! **A pod CIDR, once assigned, never changes and is never given to two nodes.
//! Only nodes that heartbeat through a Lease are judged by it.**

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::objects::{Objects, WriteOptions, now_rfc3339};
use crate::api::status::ApiResult;

use super::support::{leader_loop, list_all, s, writer};

/// How long a Lease may go unrenewed before its node is Unknown.
pub const GRACE: Duration = Duration::from_secs(40);

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
pub async fn run(objects: Objects, cidrs: PodCidrs) {
    leader_loop(
        objects,
        "nodes",
        &["/core/nodes/"],
        Duration::from_secs(5),
        move |o| async move { pass(&o, cidrs).await },
    )
    .await;
}

async fn pass(o: &Objects, cidrs: PodCidrs) -> ApiResult<()> {
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
        lifecycle(o, n).await?;
    }
    Ok(())
}

/// Mark a node Unknown/unreachable when its Lease is stale.
async fn lifecycle(o: &Objects, node: &Value) -> ApiResult<()> {
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
    let stale = match renewed.parse::<jiff::Timestamp>() {
        Ok(t) => jiff::Timestamp::now().as_second() - t.as_second() > GRACE.as_secs() as i64,
        Err(_) => true,
    };
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
    if !stale || ready_status == "Unknown" {
        return Ok(());
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
    let fresh = o.get(&nt, None, name).await?;
    let mut tainted = fresh.clone();
    let mut taints = fresh
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !taints
        .iter()
        .any(|t| s(t, "/key") == "node.kubernetes.io/unreachable")
    {
        taints.push(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now_rfc3339()}));
        tainted["spec"]["taints"] = Value::Array(taints);
        o.update(&nt, None, name, tainted, None, &wo()).await?;
    }
    tracing::warn!(node = name, "node lease expired: Ready=Unknown");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
