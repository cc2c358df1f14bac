//! Per-pod cgroups for CPU: the threads that run a pod's guest code join the
//! pod's cgroup, so the kernel accounts (and, with `limits.cpu`, throttles) that
//! pod's CPU time. The host's mode is detected: cgroup v1 puts threads in the
//! `cpu,cpuacct` hierarchy; v2 uses a threaded subtree under the agent's cgroup.
//!
//! **A pod's cgroup is removed only after its threads have ended.**

use cgroups_rs::CgroupPid;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::{Cgroup, hierarchies};

/// CFS period used for `limits.cpu`.
const PERIOD_US: u64 = 100_000;

/// The CFS quota and period (µs) for a CPU limit in millicores, as the kubelet
/// sets them (at least 1 ms per period).
pub fn cfs_quota(millis: u64) -> (i64, u64) {
    ((millis * PERIOD_US / 1000).max(1000) as i64, PERIOD_US)
}

/// `cpu.shares` for a CPU request in millicores, as the kubelet sets them:
/// 1024 per core, at least 2 (what a pod without a request gets) and at most
/// 262144.
pub fn cpu_shares(millis: u64) -> u64 {
    (millis.saturating_mul(1024) / 1000).clamp(2, 262_144)
}

/// cgroup v2's `cpu.weight` for v1 `cpu.shares` (the runc/kubelet mapping of
/// 2..262144 onto 1..10000).
pub fn cpu_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// A pod's CPU settings: its requests (the sum over its containers, for its
/// weight against other pods) and its limit (a CFS quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodCpu {
    pub request_millis: u64,
    pub limit_millis: Option<u64>,
}

/// Errors of the pod cgroups.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {reason}")]
pub struct CgroupError {
    pub path: String,
    pub reason: String,
}

/// The host's pod cgroups: make one per pod, and remove what is left of a
/// pod's cgroups. [`CgroupFs`] is the real one; tests use a recording fake.
pub trait Cgroups: Send + Sync {
    /// Create (or adopt) the pod's CPU cgroup, weighted by its CPU requests
    /// and with a CFS quota when the pod has a CPU limit.
    fn create(&self, node: &str, uid: &str, cpu: PodCpu) -> Result<PodCgroup, CgroupError>;

    /// Remove what is left of the pod's cgroups in every hierarchy.
    fn remove_pod_dirs(&self, node: &str, uid: &str);
}

/// One pod's cgroup, as the host sees it.
pub trait CgroupOps: Send + Sync {
    fn path(&self) -> &str;
    /// Whether the calling thread is in this cgroup already (inherited).
    fn holds_current_thread(&self) -> bool;
    /// Move thread `tid` into this cgroup.
    fn add_thread(&self, tid: u64) -> Result<(), CgroupError>;
    /// CPU time the pod's threads used, in nanoseconds.
    fn usage_ns(&self) -> Option<u64>;
    /// Remove the cgroup (its threads must have ended).
    fn delete(&self);
}

/// One pod's CPU cgroup (shared by its sandbox, its statistics and its worker).
#[derive(Clone)]
pub struct PodCgroup(std::sync::Arc<dyn CgroupOps>);

impl std::fmt::Debug for PodCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCgroup")
            .field("path", &self.path())
            .finish()
    }
}

impl PodCgroup {
    pub fn new(ops: std::sync::Arc<dyn CgroupOps>) -> PodCgroup {
        PodCgroup(ops)
    }

    pub fn path(&self) -> &str {
        self.0.path()
    }

    /// Whether the calling thread is in this cgroup already (inherited).
    pub fn holds_current_thread(&self) -> bool {
        self.0.holds_current_thread()
    }

    /// Move the calling thread into this cgroup.
    pub fn join_current_thread(&self) -> Result<(), CgroupError> {
        self.add_thread(nix::unistd::gettid().as_raw() as u64)
    }

    /// Move thread `tid` into this cgroup.
    pub fn add_thread(&self, tid: u64) -> Result<(), CgroupError> {
        self.0.add_thread(tid)
    }

    /// CPU time the pod's threads used, in nanoseconds.
    pub fn usage_ns(&self) -> Option<u64> {
        self.0.usage_ns()
    }

    /// Remove the cgroup (its threads must have ended).
    pub fn delete(&self) {
        self.0.delete()
    }
}

/// The real cgroup file systems (cgroups-rs; v1 or v2 as the host has).
#[derive(Debug, Default, Clone, Copy)]
pub struct CgroupFs;

impl Cgroups for CgroupFs {
    fn create(&self, node: &str, uid: &str, cpu: PodCpu) -> Result<PodCgroup, CgroupError> {
        let path = format!("skiff/{node}/pod{uid}");
        let hier = hierarchies::auto();
        let v2 = hier.v2();
        let err = |reason: String| CgroupError {
            path: path.clone(),
            reason,
        };
        let cg = if v2 {
            let cg = Cgroup::new(hier, &path).map_err(|e| err(e.to_string()))?;
            cg.set_cgroup_type("threaded")
                .map_err(|e| err(format!("make threaded: {e}")))?;
            cg
        } else {
            Cgroup::new_with_specified_controllers(
                hier,
                &path,
                Some(vec!["cpu".to_string(), "cpuacct".to_string()]),
            )
            .map_err(|e| err(e.to_string()))?
        };
        if let Some(controller) = cg.controller_of::<CpuController>() {
            // A pod without CPU requests weighs least, so a busy one cannot
            // crowd out the pods that asked for CPU.
            let shares = cpu_shares(cpu.request_millis);
            controller
                .set_shares(if v2 { cpu_weight(shares) } else { shares })
                .map_err(|e| err(format!("cpu weight: {e}")))?;
            if let Some(m) = cpu.limit_millis.filter(|m| *m > 0) {
                let (quota, period) = cfs_quota(m);
                controller
                    .set_cfs_quota_and_period(Some(quota), Some(period))
                    .map_err(|e| err(format!("cpu quota: {e}")))?;
            }
        }
        Ok(PodCgroup::new(std::sync::Arc::new(FsCgroup {
            cg,
            path,
            v2,
        })))
    }

    fn remove_pod_dirs(&self, node: &str, uid: &str) {
        remove_pod_dirs(node, uid)
    }
}

/// A pod cgroup in the real file systems.
struct FsCgroup {
    cg: Cgroup,
    path: String,
    v2: bool,
}

impl CgroupOps for FsCgroup {
    fn path(&self) -> &str {
        &self.path
    }

    fn holds_current_thread(&self) -> bool {
        let suffix = format!("/{}", self.path);
        std::fs::read_to_string("/proc/thread-self/cgroup").is_ok_and(|s| {
            s.lines()
                .filter(|l| l.contains("cpu"))
                .any(|l| l.ends_with(&suffix))
                || (self.v2
                    && s.lines()
                        .any(|l| l.starts_with("0::") && l.ends_with(&suffix)))
        })
    }

    fn add_thread(&self, tid: u64) -> Result<(), CgroupError> {
        self.cg
            .add_task(CgroupPid::from(tid))
            .map_err(|e| CgroupError {
                path: self.path.clone(),
                reason: format!("add thread {tid}: {e}"),
            })
    }

    fn usage_ns(&self) -> Option<u64> {
        if self.v2 {
            let stat = self.cg.controller_of::<CpuController>()?.cpu().stat;
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|us| us * 1000)
        } else {
            Some(
                self.cg
                    .controller_of::<CpuAcctController>()?
                    .cpuacct()
                    .usage,
            )
        }
    }

    fn delete(&self) {
        if let Err(e) = self.cg.delete() {
            tracing::warn!(cgroup = %self.path, error = %e, "cannot remove pod cgroup");
        }
    }
}

/// The cgroup parent of a pod's OCI containers: inside the pod's cgroup on v1
/// (so the pod's CPU quota covers them too); beside it on v2, where the pod's
/// cgroup is threaded and cannot hold the memory controller.
pub fn container_parent(node: &str, uid: &str) -> String {
    if hierarchies::is_cgroup2_unified_mode() {
        format!("/skiff/{node}/oci-pod{uid}")
    } else {
        format!("/skiff/{node}/pod{uid}")
    }
}

/// Remove what is left of a pod's cgroups in every hierarchy (runc removes a
/// container's own cgroup but not the parents it made). Only empty cgroups
/// can go; one still in use stays and is reported.
pub fn remove_pod_dirs(node: &str, uid: &str) {
    let rels = [
        format!("skiff/{node}/pod{uid}"),
        format!("skiff/{node}/oci-pod{uid}"),
    ];
    let roots: Vec<std::path::PathBuf> = match std::fs::read_dir("/sys/fs/cgroup") {
        Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => return,
    };
    let mut roots = roots;
    roots.push("/sys/fs/cgroup".into());
    for root in roots {
        for rel in &rels {
            let dir = root.join(rel);
            if !dir.is_dir() {
                continue;
            }
            if let Ok(children) = std::fs::read_dir(&dir) {
                for c in children.filter_map(|e| e.ok()) {
                    if c.path().is_dir() {
                        let _ = std::fs::remove_dir(c.path());
                    }
                }
            }
            if let Err(e) = std::fs::remove_dir(&dir) {
                tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove pod cgroup");
            }
        }
    }
}

/// The working set (usage minus inactive file pages, as the kubelet reports
/// it) of a pod's OCI containers, from their memory cgroup parent; `None` when
/// the pod has none.
pub fn containers_working_set(node: &str, uid: &str) -> Option<u64> {
    let parent = container_parent(node, uid);
    let (dir, usage_file, inactive_key) = if hierarchies::is_cgroup2_unified_mode() {
        (
            format!("/sys/fs/cgroup{parent}"),
            "memory.current",
            "inactive_file ",
        )
    } else {
        (
            format!("/sys/fs/cgroup/memory{parent}"),
            "memory.usage_in_bytes",
            "total_inactive_file ",
        )
    };
    let usage: u64 = std::fs::read_to_string(format!("{dir}/{usage_file}"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let inactive = std::fs::read_to_string(format!("{dir}/memory.stat"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(inactive_key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_weights_as_the_kubelet_and_runc_set_them() {
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_shares(250), 256);
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(u64::MAX), 262_144);
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cfs_quota(500), (50_000, 100_000));
    }
}
