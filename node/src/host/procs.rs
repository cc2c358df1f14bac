//! Processes of the host as the sweep and `skiff uninstall` see them: pid,
//! command line, network namespace and cgroups, read from `/proc`; and the
//! pure choice of which of them belong to a node's leftovers.
//!
//! **The calling process is never chosen.**

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// One process of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub cmdline: Vec<String>,
    /// The inode of its network namespace.
    pub netns: Option<u64>,
    /// Its cgroup paths (one per hierarchy), e.g. `/skiff/node/pod1/c1`.
    pub cgroups: Vec<String>,
    /// Its working directory (to resolve relative paths in its arguments).
    pub cwd: Option<std::path::PathBuf>,
}

/// Every process readable in `/proc`.
pub fn all() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read)
        .collect()
}

fn read(pid: i32) -> Option<Proc> {
    use std::os::unix::fs::MetadataExt;
    let base = Path::new("/proc").join(pid.to_string());
    let raw = std::fs::read(base.join("cmdline")).ok()?;
    let cmdline = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cgroups = std::fs::read_to_string(base.join("cgroup"))
        .map(|t| parse_cgroups(&t))
        .unwrap_or_default();
    Some(Proc {
        pid,
        cmdline,
        netns: std::fs::metadata(base.join("ns/net")).ok().map(|m| m.ino()),
        cgroups,
        cwd: std::fs::read_link(base.join("cwd")).ok(),
    })
}

/// The paths of `/proc/<pid>/cgroup` (`ID:CONTROLLERS:PATH` lines).
pub fn parse_cgroups(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(str::to_string)
        .collect()
}

/// Why a process is a node's leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It runs inside one of the node's stale network namespaces.
    Netns,
    /// It sits in the node's cgroup subtree.
    Cgroup,
    /// It is a containerd shim of the node's containerd namespace.
    Shim,
    /// It is a containerd the node started (its config is under the data dir).
    Containerd,
}

/// What marks a node's processes.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// Inodes of the network namespaces being removed.
    pub netns: HashSet<u64>,
    /// The node's cgroup subtree (`/skiff/<node>/`).
    pub cgroup_prefix: String,
    /// The node's containerd namespace (`skiff-<node>`): its shims go.
    pub shim_namespace: Option<String>,
    /// An agent-owned containerd's config file: that daemon goes.
    pub containerd_config: Option<String>,
    /// Pods (by uid) whose containers stay: their processes in the pod's
    /// cgroup and their shims (a restarted agent adopts them).
    pub spare: HashSet<String>,
}

/// The processes of `procs` that `marks` claim, never `me`.
pub fn leftovers(procs: &[Proc], marks: &Marks, me: i32) -> Vec<(i32, Why)> {
    let mut out = Vec::new();
    for p in procs.iter().filter(|p| p.pid != me && p.pid > 1) {
        let arg_after = |flag: &str| {
            p.cmdline
                .windows(2)
                .find(|w| w[0] == flag)
                .map(|w| w[1].as_str())
        };
        let exe = p
            .cmdline
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("");
        let spared_cgroup = |c: &str| {
            c.strip_prefix(marks.cgroup_prefix.as_str())
                .and_then(|rest| rest.strip_prefix("pod"))
                .is_some_and(|rest| marks.spare.iter().any(|u| rest.starts_with(u.as_str())))
        };
        let spared_shim = arg_after("-id")
            .is_some_and(|id| marks.spare.iter().any(|u| id.starts_with(u.as_str())));
        let why = if p.netns.is_some_and(|n| marks.netns.contains(&n)) {
            Some(Why::Netns)
        } else if !marks.cgroup_prefix.is_empty()
            && p.cgroups
                .iter()
                .any(|c| c.starts_with(&marks.cgroup_prefix) && !spared_cgroup(c))
        {
            Some(Why::Cgroup)
        } else if exe.starts_with("containerd-shim")
            && !spared_shim
            && marks
                .shim_namespace
                .as_deref()
                .is_some_and(|ns| arg_after("-namespace") == Some(ns))
        {
            Some(Why::Shim)
        } else if exe == "containerd"
            && marks
                .containerd_config
                .as_deref()
                .is_some_and(|c| arg_after("--config") == Some(c))
        {
            Some(Why::Containerd)
        } else {
            None
        };
        if let Some(why) = why {
            out.push((p.pid, why));
        }
    }
    out
}

/// Ask `pid` to stop (SIGTERM).
pub fn terminate(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// SIGKILL `pids` and wait (up to 5 s) until they are gone.
pub fn kill_and_wait(pids: &[i32]) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}/cmdline")).exists() && !zombie(*p))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` has exited and waits for its parent to reap it.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, cmd: &str, netns: u64, cgroup: &str) -> Proc {
        Proc {
            pid,
            cmdline: cmd.split(' ').map(str::to_string).collect(),
            netns: Some(netns),
            cgroups: vec![cgroup.to_string()],
            cwd: None,
        }
    }

    #[test]
    fn leftovers_table() {
        let procs = [
            p(2, "sleep 1", 7, "/"),
            p(3, "httpd -f", 99, "/"),
            p(4, "sh", 7, "/skiff/n1/podA/c"),
            p(5, "sh", 7, "/skiff/n10/podA/c"),
            p(
                6,
                "/usr/bin/containerd-shim-runc-v2 -namespace skiff-n1 -id x -address /d/c.sock",
                7,
                "/",
            ),
            p(
                7,
                "/usr/bin/containerd-shim-runc-v2 -namespace skiff-n2 -id x",
                7,
                "/",
            ),
            p(
                8,
                "containerd --config /d/agent/containerd/config.toml",
                7,
                "/",
            ),
            p(9, "containerd --config /other/config.toml", 7, "/"),
            p(10, "me", 99, "/skiff/n1/podB"),
        ];
        let marks = Marks {
            netns: [99].into(),
            cgroup_prefix: "/skiff/n1/".into(),
            shim_namespace: Some("skiff-n1".into()),
            containerd_config: Some("/d/agent/containerd/config.toml".into()),
            spare: Default::default(),
        };
        assert_eq!(
            leftovers(&procs, &marks, 10),
            vec![
                (3, Why::Netns),
                (4, Why::Cgroup),
                (6, Why::Shim),
                (8, Why::Containerd)
            ]
        );
        assert!(leftovers(&procs, &Marks::default(), 10).is_empty());
        // A pod the node still records keeps its container and its shim.
        let spared = [
            p(11, "httpd -f", 7, "/skiff/n1/podS/httpd"),
            p(
                12,
                "/usr/bin/containerd-shim-runc-v2 -namespace skiff-n1 -id S-httpd -address /d/c.sock",
                7,
                "/",
            ),
            p(13, "sh", 7, "/skiff/n1/podT/c"),
        ];
        let marks = Marks {
            spare: ["S".to_string()].into(),
            ..marks
        };
        assert_eq!(leftovers(&spared, &marks, 10), vec![(13, Why::Cgroup)]);
    }

    #[test]
    fn cgroup_lines() {
        let v1 = "12:pids:/skiff/n/pod1\n4:cpu,cpuacct:/skiff/n/pod1\n0::/\n";
        assert_eq!(
            parse_cgroups(v1),
            vec!["/skiff/n/pod1", "/skiff/n/pod1", "/"]
        );
    }
}
