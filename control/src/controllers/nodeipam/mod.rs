//! Node IPAM: gives every node a pod CIDR, one block of the cluster CIDR
//! (/24 by default), the lowest one free.
//!
//! **A pod CIDR, once assigned, never changes and is never given to two
//! nodes: one worker allocates, and blocks it assigned count as used until the
//! cache shows them.**

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use crate::controllers::framework::{Action, Controller, Informer, Key, Queue, Reconciler, Result};
use crate::controllers::registration::{Ctx, all_keys};

/// The field manager of node controllers' writes.
pub const MANAGER: &str = "node-controller";

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

/// The allocator.
pub struct NodeIpam {
    pub client: Client,
    pub nodes: Arc<Informer<Node>>,
    pub cidrs: PodCidrs,
    /// Blocks this allocator assigned that the cache may not show yet.
    pub assigned: Mutex<BTreeMap<String, u64>>,
}

fn pod_cidr(n: &Node) -> &str {
    n.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .unwrap_or_default()
}

impl NodeIpam {
    /// Queue nodes without a pod CIDR, and nodes with a block assigned here
    /// (to forget it once the cache shows it, or the node went).
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        let (q, me): (_, Weak<NodeIpam>) = (queue.clone(), Arc::downgrade(self));
        self.nodes.on(move |_, n| {
            let pending = me
                .upgrade()
                .is_some_and(|me| me.assigned.lock().unwrap().contains_key(&n.name_any()));
            if pod_cidr(n).is_empty() || pending {
                q.add(Key::of(n));
            }
        });
    }

    /// The blocks in use: those the cache shows, and those assigned here.
    fn used(&self) -> BTreeSet<u64> {
        let mut used: BTreeSet<u64> = self
            .nodes
            .list("")
            .iter()
            .filter_map(|n| self.cidrs.index_of(pod_cidr(n)))
            .collect();
        used.extend(self.assigned.lock().unwrap().values().copied());
        used
    }
}

impl Reconciler for NodeIpam {
    fn name(&self) -> &'static str {
        "node-ipam"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let node = match self.nodes.get(key) {
            Some(n) if pod_cidr(&n).is_empty() => n,
            _ => {
                // Gone, or the cache shows its block: nothing to hold here.
                self.assigned.lock().unwrap().remove(&key.name);
                return Ok(Action::await_change());
            }
        };
        if self.assigned.lock().unwrap().contains_key(&key.name) {
            // Written already; the cache has not caught up.
            return Ok(Action::await_change());
        }
        let Some(cidr) = self.cidrs.next(&self.used()) else {
            tracing::warn!(node = %key.name, "cluster CIDR exhausted");
            return Ok(Action::await_change());
        };
        let mut new = (*node).clone();
        let spec = new.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = Some(cidr.clone());
        spec.pod_cidrs = Some(vec![cidr.clone()]);
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        Api::<Node>::all(self.client.clone())
            .replace(&key.name, &pp, &new)
            .await?;
        if let Some(i) = self.cidrs.index_of(&cidr) {
            self.assigned.lock().unwrap().insert(key.name.clone(), i);
        }
        tracing::info!(node = %key.name, cidr, "allocated pod CIDR");
        Ok(Action::await_change())
    }
}

/// Start node IPAM (one worker: blocks are handed out one at a time).
pub fn start(ctx: &mut Ctx<'_>) {
    let nodes = ctx.informer::<Node>();
    let c = Arc::new(NodeIpam {
        client: ctx.client.clone(),
        nodes: nodes.clone(),
        cidrs: ctx.settings.pod_cidrs,
        assigned: Mutex::default(),
    });
    let q = Queue::new();
    c.watch(&q);
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![(&nodes).into()])
            .resync(all_keys(&nodes)),
    );
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
