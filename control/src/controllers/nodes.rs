//! Node controllers: pod CIDR allocation (one /24 of the cluster CIDR per node)
//! and lifecycle (a node whose Lease stopped being renewed turns `Ready=Unknown`
//! and gets the `unreachable` taint).
//!
//! **A pod CIDR, once assigned, never changes and is never given to two nodes.
//! Only nodes that heartbeat through a Lease are judged by it.**

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::objects::{Objects, WriteOptions, now_rfc3339};
use crate::api::status::ApiResult;

use super::support::{leader_loop, list_all, s, writer};

/// The cluster CIDR's /24s: 10.88.<n>.0/24.
pub const CLUSTER_PREFIX: &str = "10.88";
/// How long a Lease may go unrenewed before its node is Unknown.
pub const GRACE: Duration = Duration::from_secs(40);

fn wo() -> WriteOptions {
    writer("node-controller")
}

/// The lowest free /24 index, given the ones in use.
pub fn next_cidr(used: &BTreeSet<u8>) -> Option<String> {
    (0..=255u8)
        .find(|i| !used.contains(i))
        .map(|i| format!("{CLUSTER_PREFIX}.{i}.0/24"))
}

fn index_of(cidr: &str) -> Option<u8> {
    cidr.strip_prefix(&format!("{CLUSTER_PREFIX}."))?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Run the node controllers until the process ends.
pub async fn run(objects: Objects) {
    leader_loop(
        objects,
        "nodes",
        &["/core/nodes/"],
        Duration::from_secs(5),
        |o| async move { pass(&o).await },
    )
    .await;
}

async fn pass(o: &Objects) -> ApiResult<()> {
    let Some(nt) = o.registry.by_kind("v1", "Node").cloned() else {
        return Ok(());
    };
    let nodes = list_all(o, "v1", "Node").await?;
    let mut used: BTreeSet<u8> = nodes
        .iter()
        .filter_map(|n| index_of(s(n, "/spec/podCIDR")))
        .collect();
    for n in &nodes {
        let name = s(n, "/metadata/name");
        if s(n, "/spec/podCIDR").is_empty() {
            let Some(cidr) = next_cidr(&used) else {
                tracing::warn!(node = name, "cluster CIDR exhausted");
                continue;
            };
            let mut new = n.clone();
            new["spec"]["podCIDR"] = json!(cidr);
            new["spec"]["podCIDRs"] = json!([cidr]);
            if o.update(&nt, None, name, new, None, &wo()).await.is_ok()
                && let Some(i) = index_of(&cidr)
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
        assert_eq!(next_cidr(&BTreeSet::new()).unwrap(), "10.88.0.0/24");
        assert_eq!(
            next_cidr(&BTreeSet::from([0, 1, 3])).unwrap(),
            "10.88.2.0/24"
        );
        assert_eq!(next_cidr(&(0..=255).collect()), None);
        assert_eq!(index_of("10.88.7.0/24"), Some(7));
        assert_eq!(index_of("10.99.7.0/24"), None);
    }
}
