//! Pod-to-pod across nodes, host-gw style: every other node's pod CIDR is
//! routed via that node's InternalIP, kept equal to the Nodes the API has.
//!
//! **Only nodes reachable as another host get a route: a node whose address
//! is local to this host (agents sharing one network namespace, loopback
//! addresses) is skipped, since its pod CIDR is on a bridge here already.**

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

use super::{Cidr, NetError, link};

/// The routes this node wants: other nodes' pod CIDRs via their InternalIPs.
pub fn desired(
    nodes: &[Node],
    me: &str,
    is_local: impl Fn(Ipv4Addr) -> bool,
) -> BTreeMap<Cidr, Ipv4Addr> {
    let mut out = BTreeMap::new();
    for n in nodes {
        if n.metadata.name.as_deref() == Some(me) {
            continue;
        }
        let cidr: Option<Cidr> = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse().ok());
        let ip: Option<Ipv4Addr> = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse().ok());
        if let (Some(cidr), Some(ip)) = (cidr, ip)
            && !ip.is_loopback()
            && !is_local(ip)
        {
            out.insert(cidr, ip);
        }
    }
    out
}

/// Whether `ip` is an address of this network namespace.
pub fn is_local(ip: Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Routes to other nodes' pods, applied as differences.
pub struct NodeRoutes {
    host: rtnetlink::Handle,
    have: BTreeMap<Cidr, Ipv4Addr>,
}

impl NodeRoutes {
    pub fn new() -> Result<NodeRoutes, NetError> {
        Ok(NodeRoutes {
            host: link::connect()?,
            have: BTreeMap::new(),
        })
    }

    /// Make the routes `want`.
    pub async fn sync(&mut self, want: BTreeMap<Cidr, Ipv4Addr>) {
        for (cidr, gw) in &self.have {
            if want.get(cidr) != Some(gw)
                && let Err(e) = link::route_del(&self.host, *cidr, *gw).await
            {
                tracing::warn!(error = %e, "node route");
            }
        }
        self.have.retain(|c, g| want.get(c) == Some(g));
        for (cidr, gw) in want {
            if self.have.get(&cidr) == Some(&gw) {
                continue;
            }
            match link::route_via(&self.host, cidr, gw).await {
                Ok(()) => {
                    tracing::info!(%cidr, via = %gw, "route to a node's pods");
                    self.have.insert(cidr, gw);
                }
                Err(e) => tracing::warn!(error = %e, "node route"),
            }
        }
    }
}

/// Keep this node's routes to the other nodes' pods while the future runs.
pub async fn run(client: kube::Client, me: String) -> Result<(), NetError> {
    use kube::runtime::reflector;
    let (nodes, writer) = reflector::store::<Node>();
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let follow = crate::proxy::follow(kube::Api::<Node>::all(client), writer, changed.clone());
    let mut routes = NodeRoutes::new()?;
    let sync = async {
        loop {
            changed.notified().await;
            let all: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
            routes.sync(desired(&all, &me, is_local)).await;
        }
    };
    tokio::select! {
        () = follow => Ok(()),
        () = sync => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: &str, ip: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}),
        )
        .unwrap()
    }

    #[test]
    fn other_remote_nodes_only() {
        let nodes = [
            node("a", "10.88.0.0/24", "10.86.0.11"),
            node("b", "10.88.1.0/24", "10.86.0.12"),
            node("c", "10.88.2.0/24", "127.0.0.1"),
            node("d", "10.88.3.0/24", "10.86.0.14"),
        ];
        let want = desired(&nodes, "a", |ip| {
            ip == "10.86.0.14".parse::<Ipv4Addr>().unwrap()
        });
        assert_eq!(want.len(), 1);
        assert_eq!(
            want[&"10.88.1.0/24".parse().unwrap()],
            "10.86.0.12".parse::<Ipv4Addr>().unwrap()
        );
    }
}
