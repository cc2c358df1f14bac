//! What a node made on its host, and taking it away again. The agent records
//! its host footprint (bridge, namespace prefix, nft table, CIDRs, cgroup
//! subtree, containerd namespace) in `<data-dir>/host.json` before it makes any
//! of it. At start it sweeps what an earlier run of the same node left and its
//! own records do not know (network namespaces, the processes inside them,
//! cgroups, mounts, containerd shims); `skiff uninstall` removes all of it.
//!
//! **The sweep only touches things named after this node (its namespace
//! prefix, its cgroup subtree, its containerd namespace, mounts below its data
//! dir), and never the agent's own process.**

pub mod mounts;
mod network;
pub mod procs;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::net::{self, Cidr};

/// Errors of the host records.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("host record {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("host record {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// The host footprint of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Footprint {
    pub node: String,
    pub bridge: String,
    /// Prefix of the node's network namespace names.
    pub netns_prefix: String,
    pub nft_table: String,
    /// The NetworkPolicy table (kept, like the proxy's, when the agent
    /// dies: pods keep running under their policies).
    #[serde(default)]
    pub np_table: String,
    pub cluster_cidr: String,
    pub service_cidr: String,
    /// The node's cgroup subtree, relative to each hierarchy (`skiff/<node>`).
    pub cgroup: String,
    /// The node's containerd namespace.
    pub containerd_namespace: String,
}

impl Footprint {
    /// The footprint of node `node` with the agent's naming rules.
    pub fn of(node: &str, bridge: &str, cluster: Cidr, service: Cidr) -> Footprint {
        Footprint {
            node: node.to_string(),
            bridge: bridge.to_string(),
            netns_prefix: format!("skiff-{node}-"),
            nft_table: crate::proxy::table_name(node),
            np_table: crate::netpol::rules::table_name(node),
            cluster_cidr: cluster.to_string(),
            service_cidr: service.to_string(),
            cgroup: format!("skiff/{node}"),
            containerd_namespace: format!("skiff-{node}"),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    nodes: Vec<Footprint>,
}

const RECORD: &str = "host.json";

/// The footprints on record in the agent data dir `dir`.
pub fn recorded(dir: &Path) -> Result<Vec<Footprint>, HostError> {
    let path = dir.join(RECORD);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<Record>(&b)
            .map(|r| r.nodes)
            .map_err(|e| HostError::Parse {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(HostError::Io { path, source }),
    }
}

/// Add (or update) `f` in the record of `dir`, before any of it is made.
pub fn record(dir: &Path, f: &Footprint) -> Result<(), HostError> {
    let path = dir.join(RECORD);
    let mut nodes = recorded(dir)?;
    if nodes.contains(f) {
        return Ok(());
    }
    nodes.retain(|n| n.node != f.node);
    nodes.push(f.clone());
    let io = |source| HostError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{RECORD}.tmp"));
    let text = serde_json::to_vec_pretty(&Record { nodes }).unwrap_or_default();
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(io)
}

/// What a sweep or an uninstall removed, for the log.
#[derive(Debug, Default)]
pub struct Removed {
    pub processes: Vec<String>,
    pub namespaces: Vec<String>,
    pub mounts: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    pub links: Vec<String>,
    pub routes: Vec<String>,
    pub tables: Vec<String>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.namespaces.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.links.is_empty()
            && self.routes.is_empty()
            && self.tables.is_empty()
    }

    /// One log line per kind of thing removed.
    pub fn log(&self, what: &str) {
        let list = |v: Vec<String>| v.join(", ");
        let paths = |v: &[PathBuf]| list(v.iter().map(|p| p.display().to_string()).collect());
        for (kind, items) in [
            ("processes", list(self.processes.clone())),
            ("network namespaces", list(self.namespaces.clone())),
            ("mounts", paths(&self.mounts)),
            ("cgroups", paths(&self.cgroups)),
            ("links", list(self.links.clone())),
            ("routes", list(self.routes.clone())),
            ("nft tables", list(self.tables.clone())),
        ] {
            if !items.is_empty() {
                tracing::info!(%kind, removed = %items, "{what}");
            }
        }
    }
}

/// Kill the processes `marks` claim (never this one).
fn kill_marked(marks: &procs::Marks, removed: &mut Removed) {
    let all = procs::all();
    let victims = procs::leftovers(&all, marks, std::process::id() as i32);
    if victims.is_empty() {
        return;
    }
    let pids: Vec<i32> = victims.iter().map(|(p, _)| *p).collect();
    procs::kill_and_wait(&pids);
    for (pid, why) in victims {
        let cmd = all
            .iter()
            .find(|p| p.pid == pid)
            .and_then(|p| p.cmdline.first().cloned())
            .unwrap_or_default();
        removed.processes.push(format!("{pid} ({cmd}, {why:?})"));
    }
}

/// The inodes of the namespaces `names`.
fn netns_inodes(names: &[String]) -> HashSet<u64> {
    use std::os::unix::fs::MetadataExt;
    names
        .iter()
        .filter_map(|n| std::fs::metadata(net::netns::path(n)).ok())
        .map(|m| m.ino())
        .collect()
}

/// The mount points of the cgroup hierarchies (v1 controllers and v2).
fn cgroup_roots() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let point = pre.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// Remove node `node`'s cgroups (its own and its pods', in every hierarchy)
/// once its processes are gone: for a caller that ran an agent and killed
/// it (a benchmark), as `remove_node` does for `skiff uninstall`.
pub fn remove_node_cgroups(node: &str) -> Removed {
    let mut removed = Removed::default();
    remove_cgroups(&format!("skiff/{node}"), true, &mut removed);
    removed
}

/// Remove the cgroup directories below `rel` in every hierarchy, deepest
/// first (a cgroup with processes stays). With `itself`, `rel` goes too.
fn remove_cgroups(rel: &str, itself: bool, removed: &mut Removed) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(d) = std::fs::read_dir(dir) {
            for e in d.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                    out.push(e.path());
                }
            }
        }
    }
    for root in cgroup_roots() {
        let top = root.join(rel);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        walk(&top, &mut dirs);
        if itself {
            dirs.push(top);
        }
        for d in dirs {
            if std::fs::remove_dir(&d).is_ok() {
                removed.cgroups.push(d);
            }
        }
    }
}

/// Remove what an earlier run of node `f` left on the host and this run's
/// records do not know: namespaces with the node's prefix other than `keep`,
/// the processes inside them or inside the node's cgroups, shims of the node's
/// containerd namespace (the agent has already removed every container it
/// knows), mounts below `<agent_dir>/containerd`, and the pod cgroups.
pub fn sweep(
    f: &Footprint,
    keep: &HashSet<String>,
    spare: &HashSet<String>,
    agent_dir: &Path,
) -> Removed {
    let mut removed = Removed::default();
    let stale: Vec<String> = net::netns::list(&f.netns_prefix)
        .into_iter()
        .filter(|n| !keep.contains(n))
        .collect();
    let marks = procs::Marks {
        netns: netns_inodes(&stale),
        cgroup_prefix: format!("/{}/", f.cgroup),
        shim_namespace: Some(f.containerd_namespace.clone()),
        containerd_config: None,
        spare: spare.clone(),
    };
    kill_marked(&marks, &mut removed);
    // The root filesystems of spared pods' containers stay mounted.
    let spared = |m: &Path| {
        let m = m.to_string_lossy();
        spare.iter().any(|u| m.contains(u.as_str()))
    };
    removed.mounts = mounts::detach_below_but(&agent_dir.join("containerd"), &spared);
    for n in stale {
        net::resolv::remove(&n);
        if net::netns::delete(&n).is_ok() {
            removed.namespaces.push(n);
        }
    }
    remove_cgroups(&f.cgroup, false, &mut removed);
    removed
}

/// Everything `skiff uninstall` does for one node recorded in `agent_dir`:
/// its processes, mounts, namespaces, bridge, routes, nft table and cgroups.
pub async fn remove_node(f: &Footprint, agent_dir: &Path) -> Removed {
    let mut removed = Removed::default();
    let all_ns = net::netns::list(&f.netns_prefix);
    let config = agent_dir.join("containerd").join("config.toml");
    let marks = procs::Marks {
        netns: netns_inodes(&all_ns),
        cgroup_prefix: format!("/{}/", f.cgroup),
        shim_namespace: Some(f.containerd_namespace.clone()),
        containerd_config: Some(config.display().to_string()),
        spare: HashSet::new(),
    };
    kill_marked(&marks, &mut removed);
    removed.mounts = mounts::detach_below(agent_dir);
    for n in all_ns {
        net::resolv::remove(&n);
        if net::netns::delete(&n).is_ok() {
            removed.namespaces.push(n);
        }
    }
    for table in [&f.nft_table, &f.np_table]
        .into_iter()
        .filter(|t| !t.is_empty())
    {
        let script = crate::proxy::rules::remove(table);
        if crate::proxy::Ruleset::apply(&crate::proxy::NftCli, &script).is_ok() {
            removed.tables.push(table.clone());
        }
    }
    network::remove(f, &mut removed).await;
    remove_cgroups(&f.cgroup, true, &mut removed);
    // `skiff/` goes with its last node (a cgroup with children cannot be removed).
    for root in cgroup_roots() {
        let _ = std::fs::remove_dir(root.join("skiff"));
    }
    removed
}
