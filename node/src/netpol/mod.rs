//! NetworkPolicy enforced on this node: it follows NetworkPolicies, pods
//! and namespaces, renders the rules for its own pods ([`rules`]) and
//! replaces its nftables table (`skiff_np_<node>`) in one transaction on
//! every change (changes arriving together share one sync). Both kinds of
//! pod are covered the same way: a Wasm pod's sockets live in its pod's
//! network namespace, so its traffic crosses the same veth and bridge.
//!
//! **The table never blocks a reply to an allowed connection, and a change
//! is applied whole or not at all (the old rules stay until the new ones
//! are in).** Same-node pod-to-pod traffic is bridged: the agent turns on
//! `net.bridge.bridge-nf-call-iptables` so the forward hook sees it.

pub mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, Store};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::proxy::{Ruleset, follow};
use rules::{Inputs, PodView};

/// The address of a pod on the pod network, its labels and ports (`None`
/// for a pod without one: not started, host network, or finished).
fn view(p: &Pod) -> Option<PodView> {
    let spec = p.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = p.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.as_deref()?.parse().ok()?;
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|port| {
            Some((
                port.name.clone().unwrap_or_default(),
                u16::try_from(port.container_port).ok()?,
                port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            ))
        })
        .collect();
    Some(PodView {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        ip,
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ports,
    })
}

/// What the rules are made from now.
fn inputs(
    node: &str,
    pods: &Store<Pod>,
    namespaces: &Store<Namespace>,
    policies: &Store<NetworkPolicy>,
) -> Inputs {
    let pods = pods.state();
    let local_names: std::collections::HashSet<(String, String)> = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .map(|p| {
            (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let all: Vec<PodView> = pods.iter().filter_map(|p| view(p)).collect();
    let local = all
        .iter()
        .filter(|v| local_names.contains(&(v.namespace.clone(), v.name.clone())))
        .cloned()
        .collect();
    Inputs {
        local,
        all,
        namespaces: namespaces
            .state()
            .iter()
            .filter_map(|n| {
                Some((
                    n.metadata.name.clone()?,
                    n.metadata.labels.clone().unwrap_or_default(),
                ))
            })
            .collect(),
        policies: policies.state().iter().map(|p| (**p).clone()).collect(),
    }
}

/// Keep this node's policy table equal to the cluster's policies until the
/// future is dropped (the table is removed then).
pub async fn run(client: Client, node: String, nft: Arc<dyn Ruleset>) {
    let table = rules::table_name(&node);
    // Bridged traffic between pods of this node must pass the forward hook.
    if let Err(e) = std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1") {
        tracing::warn!(error = %e, "bridged pod-to-pod traffic on this node bypasses NetworkPolicy (no br_netfilter)");
    }
    let (pods, w1) = reflector::store::<Pod>();
    let (namespaces, w2) = reflector::store::<Namespace>();
    let (policies, w3) = reflector::store::<NetworkPolicy>();
    let changed = Arc::new(Notify::new());
    let f1 = follow(Api::<Pod>::all(client.clone()), w1, changed.clone());
    let f2 = follow(Api::<Namespace>::all(client.clone()), w2, changed.clone());
    let f3 = follow(Api::<NetworkPolicy>::all(client), w3, changed.clone());
    let _cleanup = Remove {
        nft: nft.clone(),
        table: table.clone(),
    };
    let sync = async {
        let mut last = String::new();
        loop {
            changed.notified().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let script = rules::render(&table, &inputs(&node, &pods, &namespaces, &policies));
            if script == last {
                continue;
            }
            let t = Instant::now();
            let (n, text) = (nft.clone(), script.clone());
            match tokio::task::spawn_blocking(move || n.apply(&text)).await {
                Ok(Ok(())) => {
                    tracing::debug!(
                        took_ms = t.elapsed().as_secs_f64() * 1e3,
                        "network policies synced"
                    );
                    last = script;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "network policy sync failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    changed.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "network policy sync panicked"),
            }
        }
    };
    tokio::select! {
        () = f1 => {},
        () = f2 => {},
        () = f3 => {},
        () = sync => {},
    }
}

/// Removes the table when the policy loop ends.
struct Remove {
    nft: Arc<dyn Ruleset>,
    table: String,
}

impl Drop for Remove {
    fn drop(&mut self) {
        if let Err(e) = self.nft.apply(&rules::remove(&self.table)) {
            tracing::warn!(error = %e, "removing the network policy table");
        }
    }
}
