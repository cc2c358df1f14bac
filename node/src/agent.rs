//! Node registration and heartbeat, through the Kubernetes API with kube-rs.
//!
//! **The Node's Ready condition tells the truth: until this agent runs pods it
//! reports `Ready=False` (reason `PodWorkersUnavailable`), so nothing is
//! scheduled onto it.**

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("api: {0}")]
    Api(#[from] kube::Error),
}

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub kubeconfig: PathBuf,
    pub node_name: String,
    /// Runtime handlers this node offers (`wasmtime`, `runc`).
    pub runtimes: Vec<String>,
    pub heartbeat: Duration,
}

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}

fn memory_kib() -> u64 {
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
fn status(cfg: &AgentConfig) -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = format!("{}Ki", memory_kib());
    let ts = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    json!({"status": {
        "capacity": {"cpu": cpus.to_string(), "memory": mem, "pods": "110"},
        "allocatable": {"cpu": cpus.to_string(), "memory": mem, "pods": "110"},
        "conditions": [{
            "type": "Ready", "status": "False", "reason": "PodWorkersUnavailable",
            "message": "the skiff agent registers and heartbeats but does not run pods yet",
            "lastHeartbeatTime": ts, "lastTransitionTime": ts,
        }],
        "addresses": [{"type": "Hostname", "address": cfg.node_name}],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": kernel(), "osImage": os_image(),
            "containerRuntimeVersion": format!("skiff://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": "v1.37.0-skiff", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH },
        },
    }})
}

async fn client(cfg: &AgentConfig) -> Result<Client, AgentError> {
    let bad = |reason: String| AgentError::Kubeconfig {
        path: cfg.kubeconfig.clone(),
        reason,
    };
    let kc = Kubeconfig::read_from(&cfg.kubeconfig).map_err(|e| bad(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    Ok(Client::try_from(config)?)
}

/// Register the Node and keep its Lease and status fresh until the task ends.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let client = client(&cfg).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), cfg.node_name.clone());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
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
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let mut ticks: u64 = 0;
    loop {
        if ticks.is_multiple_of(3) {
            nodes
                .patch_status(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(status(&cfg)),
                )
                .await?;
        }
        renew(&leases, &cfg).await?;
        ticks += 1;
        tokio::time::sleep(cfg.heartbeat).await;
    }
}

async fn renew(leases: &Api<Lease>, cfg: &AgentConfig) -> Result<(), AgentError> {
    let spec = LeaseSpec {
        holder_identity: Some(cfg.node_name.clone()),
        lease_duration_seconds: Some(40),
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
