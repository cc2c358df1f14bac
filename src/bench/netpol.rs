//! `skiff bench netpol`: what a node does for one NetworkPolicy change with
//! many policies in the cluster: render its table from the policies, pods
//! and namespaces, and load it into the kernel (`nft -f`, one transaction).
//! The watch that brings the change is the same as the proxy's (see
//! `skiff bench services` for endpoint propagation). Needs root (nft); the
//! table it loads has a name of its own and is removed at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use skiff_node::netpol::rules::{self, Inputs, NetworkPolicy, PodView};
use skiff_node::proxy::{NftCli, Ruleset};

#[derive(clap::Args)]
pub struct NetpolBench {
    /// NetworkPolicies in the cluster.
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// Pods on this node (the ones its table isolates).
    #[arg(long, default_value_t = 100)]
    local_pods: usize,
    /// Pods in the cluster (peers).
    #[arg(long, default_value_t = 5000)]
    cluster_pods: usize,
    /// Changes measured.
    #[arg(long, default_value_t = 50)]
    changes: usize,
}

fn pod(i: usize, namespaces: usize) -> PodView {
    PodView {
        namespace: format!("ns{}", i % namespaces),
        name: format!("p{i}"),
        ip: std::net::Ipv4Addr::from(0x0a58_0000 + i as u32 + 2),
        labels: BTreeMap::from([
            ("app".to_string(), format!("app{}", i % 50)),
            (
                "tier".to_string(),
                ["web", "db", "cache"][i % 3].to_string(),
            ),
        ]),
        ports: vec![("http".into(), 8080, "TCP".into())],
    }
}

/// Policy `i`: one of deny-all, allow-by-label on a named port, egress to a
/// block, cycling, in namespace `i % namespaces`.
fn policy(i: usize, namespaces: usize, generation: usize) -> NetworkPolicy {
    let ns = format!("ns{}", i % namespaces);
    let v = match i % 3 {
        0 => json!({"metadata": {"name": format!("deny{i}"), "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": format!("app{}", i % 50)}}}}),
        1 => json!({"metadata": {"name": format!("allow{i}"), "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"tier": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}],
                    "ports": [{"port": "http"}, {"port": 9000 + generation % 100}]}]}}),
        _ => json!({"metadata": {"name": format!("egress{i}"), "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"tier": "cache"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.85.0.0/16", "except": ["10.85.1.0/24"]}}]}]}}),
    };
    serde_json::from_value(v).expect("a policy")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub async fn run(b: NetpolBench) -> Result<()> {
    let namespaces = 20;
    let all: Vec<PodView> = (0..b.cluster_pods).map(|i| pod(i, namespaces)).collect();
    let mut inputs = Inputs {
        local: all.iter().take(b.local_pods).cloned().collect(),
        all,
        namespaces: (0..namespaces)
            .map(|n| {
                (
                    format!("ns{n}"),
                    BTreeMap::from([("team".to_string(), format!("t{n}"))]),
                )
            })
            .collect(),
        policies: (0..b.policies).map(|i| policy(i, namespaces, 0)).collect(),
    };
    let table = format!("skiff_np_bench_{}", std::process::id());
    let nft = NftCli;
    let (mut render, mut apply, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut size = 0;
    for change in 0..=b.changes {
        // One policy changes (its port), as an edit would.
        let k = (change * 7) % b.policies.max(1);
        if let Some(p) = inputs.policies.get_mut(k) {
            *p = policy(k, namespaces, change);
        }
        let t0 = Instant::now();
        let script = rules::render(&table, &inputs);
        let t1 = Instant::now();
        let applied = nft.apply(&script);
        let t2 = Instant::now();
        applied.context("loading the policy table (nft; needs root)")?;
        size = script.len();
        if change > 0 {
            render.push(t1 - t0);
            apply.push(t2 - t1);
            total.push(t2 - t0);
        }
    }
    let _ = nft.apply(&rules::remove(&table));
    for v in [&mut render, &mut apply, &mut total] {
        v.sort();
    }
    println!(
        "| {} policies, {} pods on the node, {} in the cluster | table {} KiB | render p50 {:.1?} p99 {:.1?} | nft load p50 {:.1?} p99 {:.1?} | change to rules in force p50 {:.1?} p99 {:.1?} |",
        b.policies,
        b.local_pods,
        b.cluster_pods,
        size / 1024,
        percentile(&render, 0.5),
        percentile(&render, 0.99),
        percentile(&apply, 0.5),
        percentile(&apply, 0.99),
        percentile(&total, 0.5),
        percentile(&total, 0.99),
    );
    Ok(())
}
