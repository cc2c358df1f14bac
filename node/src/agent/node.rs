//! Node registration and heartbeat: the Node object (capacity, runtimes, system
//! info, addresses, the agent's endpoint) and its Lease.
//!
//! **The Node's Ready condition tells the truth: it turns True only once the pod
//! network is in place and pod workers run.**

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use tokio::sync::watch;

use super::{AgentConfig, AgentError};
use crate::eviction::Pressure;

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}

pub(crate) fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// The Node's status as this agent can honestly report it.
fn status(cfg: &AgentConfig, ready: bool, port: u16, pressure: &Pressure) -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = format!("{}Ki", memory_kib());
    let ts = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut conditions = pressure.conditions(&ts);
    conditions.push(if ready {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "skiff agent is posting ready status",
            "lastHeartbeatTime": ts, "lastTransitionTime": ts})
    } else {
        json!({"type": "Ready", "status": "False", "reason": "NetworkNotReady",
            "message": "waiting for a pod CIDR and the pod network",
            "lastHeartbeatTime": ts, "lastTransitionTime": ts})
    });
    json!({"status": {
        "capacity": {"cpu": cpus.to_string(), "memory": mem, "pods": cfg.max_pods.to_string()},
        "allocatable": {"cpu": cpus.to_string(), "memory": mem, "pods": cfg.max_pods.to_string()},
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": cfg.address.to_string()},
                      {"type": "Hostname", "address": cfg.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": kernel(), "osImage": os_image(),
            "containerRuntimeVersion": format!("skiff://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": "v1.37.0-skiff", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": skiff_common::media::go_arch(),
        },
    }})
}

/// Create the Node (labels: hostname, os, arch, the runtimes offered), or
/// put those labels on the one that exists.
pub async fn register(client: &Client, cfg: &AgentConfig) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), cfg.node_name.clone());
    let arch = skiff_common::media::go_arch().to_string();
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("kubernetes.io/arch".to_string(), arch.clone());
    labels.insert("beta.kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("beta.kubernetes.io/arch".to_string(), arch);
    for r in &cfg.runtimes {
        labels.insert(format!("runtime.skiff.dev/{r}"), "true".to_string());
    }
    let node = Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %cfg.node_name, "registered node"),
        // Known already: make sure it carries the well-known labels (a node
        // registered by an older agent lacks the arch ones).
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({"metadata": {"labels": node.metadata.labels}});
            nodes
                .patch(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Post the Node's status.
pub async fn post_status(
    client: &Client,
    cfg: &AgentConfig,
    ready: bool,
    port: u16,
    pressure: &Pressure,
) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(status(cfg, ready, port, pressure)),
        )
        .await?;
    Ok(())
}

/// Wait until the control plane gave this node a pod CIDR.
pub async fn pod_cidr(client: &Client, cfg: &AgentConfig) -> Result<String, AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let n = nodes.get(&cfg.node_name).await?;
        if let Some(c) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
            return Ok(c);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Keep the Lease (every `heartbeat`) and the status (every fifth beat, and
/// at once when a pressure condition changes) fresh. Runs for ever: while no
/// API server answers, the node's pods keep running and the beats are tried
/// again (the first failure and the recovery are logged).
pub async fn heartbeat(
    client: Client,
    cfg: AgentConfig,
    port: u16,
    mut pressure: watch::Receiver<Pressure>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut ticks: u64 = 0;
    let mut failing = false;
    let mut changed = false;
    loop {
        let mut beat = renew(&leases, &cfg).await;
        if beat.is_ok() && (ticks.is_multiple_of(5) || failing || changed) {
            let now = pressure.borrow_and_update().clone();
            beat = post_status(&client, &cfg, true, port, &now).await;
        }
        match beat {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("api reachable again; node heartbeat resumed");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "node heartbeat failed; pods keep running, retrying");
            }
            Err(e) => tracing::debug!(error = %e, "node heartbeat failed"),
        }
        ticks += 1;
        changed = tokio::select! {
            () = tokio::time::sleep(cfg.heartbeat) => false,
            r = pressure.changed() => r.is_ok(),
        };
    }
}

async fn renew(leases: &Api<Lease>, cfg: &AgentConfig) -> Result<(), AgentError> {
    let spec = LeaseSpec {
        holder_identity: Some(cfg.node_name.clone()),
        lease_duration_seconds: Some(10),
        renew_time: Some(now()),
        ..Default::default()
    };
    match leases.get_opt(&cfg.node_name).await? {
        Some(mut l) => {
            l.spec = Some(spec);
            leases
                .replace(&cfg.node_name, &PostParams::default(), &l)
                .await?;
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.node_name.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases.create(&PostParams::default(), &l).await?;
        }
    }
    Ok(())
}
