//! Local ephemeral storage: what a pod's disk-backed `emptyDir` volumes and
//! container logs hold, against `emptyDir.sizeLimit` and the containers'
//! `ephemeral-storage` limits (the kubelet's local storage eviction).
//! Memory-backed `emptyDir`s are tmpfs mounts of their size limit and count
//! as memory, not here.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use k8s_openapi::api::core::v1::PodSpec;

use super::thresholds::bytes;

/// Bytes allocated to the files below `dir` on its own filesystem: symlinks
/// are not followed and other mounts (a pinned `subPath`, a tmpfs) are not
/// entered. A missing directory is 0.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = root.dev();
    let mut total = root.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// What one pod holds on the node's disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measured {
    /// Disk-backed `emptyDir` volumes: name, bytes.
    pub volumes: Vec<(String, u64)>,
    /// Container logs: container, bytes.
    pub logs: Vec<(String, u64)>,
}

impl Measured {
    /// Everything the pod holds.
    pub fn total(&self) -> u64 {
        self.volumes.iter().chain(&self.logs).map(|(_, b)| b).sum()
    }

    fn logs_of(&self, container: &str) -> u64 {
        self.logs
            .iter()
            .filter(|(c, _)| c == container)
            .map(|(_, b)| b)
            .sum()
    }
}

/// Measure a pod: its disk-backed `emptyDir`s under `volumes_dir` (one
/// directory per volume) and its containers' logs under `logs_dir` (one
/// directory per container).
pub fn measure(spec: &PodSpec, volumes_dir: &Path, logs_dir: &Path) -> Measured {
    let volumes = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.empty_dir
                .as_ref()
                .is_some_and(|e| e.medium.as_deref() != Some("Memory"))
        })
        .filter(|v| super::super::pod::volumes::plain_name(&v.name).is_ok())
        .map(|v| (v.name.clone(), disk_usage(&volumes_dir.join(&v.name))))
        .collect();
    let logs = all_containers(spec)
        .filter(|c| super::super::pod::volumes::plain_name(c).is_ok())
        .map(|c| (c.to_string(), disk_usage(&logs_dir.join(c))))
        .collect();
    Measured { volumes, logs }
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &str> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| c.name.as_str())
}

fn quantity(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<u64> {
    skiff_common::quantity::parse(&q.0)
        .filter(|v| *v >= 0.0)
        .map(|v| v.ceil() as u64)
}

/// Why the pod must go for what it holds on disk, in the kubelet's words:
/// an `emptyDir` beyond its `sizeLimit`, the pod beyond the sum of its
/// containers' `ephemeral-storage` limits, or a container's logs beyond its
/// own limit.
pub fn violation(spec: &PodSpec, m: &Measured) -> Option<String> {
    for v in spec.volumes.iter().flatten() {
        let Some(limit) = v
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
            .and_then(quantity)
        else {
            continue;
        };
        let used = m
            .volumes
            .iter()
            .find(|(n, _)| *n == v.name)
            .map_or(0, |(_, b)| *b);
        if used > limit {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                v.name,
                bytes(limit)
            ));
        }
    }
    let limit_of = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("ephemeral-storage"))
            .and_then(quantity)
    };
    let pod_limit: u64 = spec.containers.iter().filter_map(limit_of).sum();
    if pod_limit > 0 && m.total() > pod_limit {
        return Some(format!(
            "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
            bytes(pod_limit)
        ));
    }
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        if let Some(limit) = limit_of(c)
            && m.logs_of(&c.name) > limit
        {
            return Some(format!(
                "Container {} exceeded its local ephemeral storage limit {:?}. ",
                c.name,
                bytes(limit)
            ));
        }
    }
    None
}

/// What the pod asked for of ephemeral storage (the sum over its containers).
pub fn requested(spec: &PodSpec) -> u64 {
    spec.containers
        .iter()
        .map(|c| super::request_of(c, "ephemeral-storage"))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: serde_json::Value) -> PodSpec {
        serde_json::from_value(yaml).unwrap()
    }

    #[test]
    fn counts_files_on_its_own_filesystem_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("scratch");
        std::fs::create_dir_all(v.join("sub")).unwrap();
        std::fs::write(v.join("sub/f"), vec![1u8; 256 * 1024]).unwrap();
        std::os::unix::fs::symlink("/usr", v.join("escape")).unwrap();
        let used = disk_usage(&v);
        assert!(
            (256 * 1024..2 * 1024 * 1024).contains(&used),
            "a 256 KiB file and two directories: {used}"
        );
        assert_eq!(disk_usage(&d.path().join("absent")), 0);
    }

    #[test]
    fn size_limits_and_ephemeral_storage_limits() {
        let s = spec(serde_json::json!({
            "containers": [
                {"name": "a", "resources": {"limits": {"ephemeral-storage": "1Mi"}}},
                {"name": "b"}
            ],
            "volumes": [
                {"name": "scratch", "emptyDir": {"sizeLimit": "2Mi"}},
                {"name": "free", "emptyDir": {}},
                {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
            ]
        }));
        let m = |scratch: u64, free: u64, a_logs: u64| Measured {
            volumes: vec![("scratch".into(), scratch), ("free".into(), free)],
            logs: vec![("a".into(), a_logs), ("b".into(), 0)],
        };
        assert_eq!(violation(&s, &m(0, 0, 0)), None);
        assert_eq!(
            violation(&s, &m(3 << 20, 0, 0)).unwrap(),
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"2Mi\". "
        );
        assert_eq!(
            violation(&s, &m(1 << 20, 1 << 20, 0)).unwrap(),
            "Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. "
        );
        let only_logs = spec(serde_json::json!({"containers": [
            {"name": "a", "resources": {"limits": {"ephemeral-storage": "1Mi"}}},
            {"name": "b", "resources": {"limits": {"ephemeral-storage": "8Mi"}}}
        ]}));
        let logs = Measured {
            volumes: vec![],
            logs: vec![("a".into(), 2 << 20)],
        };
        assert_eq!(
            violation(&only_logs, &logs).unwrap(),
            "Container a exceeded its local ephemeral storage limit \"1Mi\". "
        );
        assert_eq!(requested(&only_logs), 9 << 20);
    }
}
