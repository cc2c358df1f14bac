//! Measuring the eviction signals on this host: memory from
//! `/proc/meminfo`, the filesystems with `statvfs`, process ids from
//! `kernel.pid_max` and the kernel's task count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::thresholds::{Observed, Signal};

/// Where the node's filesystems are.
#[derive(Debug, Clone)]
pub struct Filesystems {
    /// Pod volumes (`emptyDir`) and logs: the kubelet's nodefs.
    pub nodefs: PathBuf,
    /// Images and container layers: the kubelet's imagefs.
    pub imagefs: PathBuf,
}

/// Measure every signal the host answers for.
pub fn observe(fs: &Filesystems) -> BTreeMap<Signal, Observed> {
    let mut out = BTreeMap::new();
    if let Some(m) = memory() {
        out.insert(Signal::MemoryAvailable, m);
    }
    for (path, bytes, inodes) in [
        (
            &fs.nodefs,
            Signal::NodefsAvailable,
            Signal::NodefsInodesFree,
        ),
        (
            &fs.imagefs,
            Signal::ImagefsAvailable,
            Signal::ImagefsInodesFree,
        ),
    ] {
        if let Some((b, i)) = filesystem(path) {
            out.insert(bytes, b);
            out.insert(inodes, i);
        }
    }
    if let Some(p) = pids() {
        out.insert(Signal::PidAvailable, p);
    }
    out
}

fn meminfo_kib(info: &str, key: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

/// `MemAvailable` of `MemTotal`.
fn memory() -> Option<Observed> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(Observed {
        available: meminfo_kib(&info, "MemAvailable:")? * 1024,
        capacity: meminfo_kib(&info, "MemTotal:")? * 1024,
    })
}

/// Bytes and inodes free to unprivileged users on the filesystem holding
/// `path` (its nearest existing ancestor).
fn filesystem(path: &Path) -> Option<(Observed, Observed)> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let s = nix::sys::statvfs::statvfs(existing).ok()?;
    let frag = s.fragment_size() as u64;
    let bytes = Observed {
        available: s.blocks_available() as u64 * frag,
        capacity: s.blocks() as u64 * frag,
    };
    let inodes = Observed {
        available: s.files_available() as u64,
        capacity: s.files() as u64,
    };
    Some((bytes, inodes))
}

/// Process ids left: `kernel.pid_max` less the tasks that exist now (the
/// fourth field of `/proc/loadavg`, `running/total`).
fn pids() -> Option<Observed> {
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let load = std::fs::read_to_string("/proc/loadavg").ok()?;
    let total: u64 = load
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()?;
    Some(Observed {
        available: max.saturating_sub(total),
        capacity: max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_answers_every_signal() {
        let d = tempfile::tempdir().unwrap();
        let seen = observe(&Filesystems {
            nodefs: d.path().join("pods/not-yet"),
            imagefs: d.path().to_path_buf(),
        });
        assert_eq!(seen.len(), 6, "{seen:?}");
        for (signal, o) in seen {
            assert!(o.capacity > 0, "{signal:?}");
            assert!(o.available <= o.capacity, "{signal:?}: {o:?}");
        }
        assert_eq!(meminfo_kib("MemTotal:  1024 kB\n", "MemTotal:"), Some(1024));
    }
}
