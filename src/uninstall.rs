//! `skiff uninstall [--data-dir D] [--keep-data]`: take Skiff off this host, as
//! `k3s-killall.sh` and `k3s-uninstall.sh` do: stop the `skiff server`/`skiff
//! agent` processes that use D, then for every node recorded in D (a server's
//! embedded agent keeps its record in `D/agent`) kill its pods' processes, its
//! shims and containerd, detach its mounts, delete its network namespaces,
//! bridge, veths, routes, nft table and cgroups; last, remove D.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use skiff_node::host::{self, procs};

#[derive(clap::Args)]
pub struct UninstallArgs {
    /// The data dir of the server or agent to remove (`./skiff-data` by
    /// default; a standalone agent's is `./skiff-agent`).
    #[arg(long, default_value = "./skiff-data", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// Leave the data dir (store, images, records) on disk.
    #[arg(long)]
    keep_data: bool,
}

/// The data dir a `skiff server|agent` process uses, from its arguments and
/// environment (as clap would read them), resolved against its working dir.
fn data_dir_of(p: &procs::Proc, environ: &[(String, String)]) -> Option<PathBuf> {
    let exe = p.cmdline.first()?.rsplit('/').next()?;
    if exe != "skiff" {
        return None;
    }
    let role = p.cmdline.get(1)?.as_str();
    let (env, default) = match role {
        "server" => ("SKIFF_DATA_DIR", "./skiff-data"),
        "agent" => ("SKIFF_AGENT_DIR", "./skiff-agent"),
        _ => return None,
    };
    let mut dir = environ
        .iter()
        .find(|(k, _)| k == env)
        .map(|(_, v)| v.clone());
    let args = &p.cmdline[2..];
    for (i, a) in args.iter().enumerate() {
        if a == "--data-dir" {
            dir = args.get(i + 1).cloned();
        } else if let Some(v) = a.strip_prefix("--data-dir=") {
            dir = Some(v.to_string());
        }
    }
    let dir = PathBuf::from(dir.unwrap_or_else(|| default.to_string()));
    Some(match (&p.cwd, dir.is_relative()) {
        (Some(cwd), true) => cwd.join(dir),
        _ => dir,
    })
}

fn environ(pid: i32) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Normalise `p` lexically (`a/./b/../c` is `a/c`) for comparisons.
fn normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Stop (SIGTERM, then SIGKILL after 10 s) the Skiff processes using `dir`.
fn stop_processes(dir: &Path) -> Vec<String> {
    let me = std::process::id() as i32;
    let agent = dir.join("agent");
    let mine: Vec<(i32, String)> = procs::all()
        .into_iter()
        .filter(|p| p.pid != me)
        .filter_map(|p| {
            let d = normal(&data_dir_of(&p, &environ(p.pid))?);
            (d == dir || d == agent || d.join("agent") == dir).then(|| (p.pid, p.cmdline.join(" ")))
        })
        .collect();
    for (pid, _) in &mine {
        procs::terminate(*pid);
    }
    let gone = |pid: i32| !Path::new(&format!("/proc/{pid}/cmdline")).exists();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !mine.iter().all(|(p, _)| gone(*p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<i32> = mine.iter().map(|(p, _)| *p).filter(|p| !gone(*p)).collect();
    procs::kill_and_wait(&left);
    mine.into_iter()
        .map(|(pid, cmd)| format!("{pid} ({cmd})"))
        .collect()
}

pub async fn run(a: UninstallArgs) -> Result<()> {
    let dir = normal(&std::path::absolute(&a.data_dir).context("data dir")?);
    let stopped = stop_processes(&dir);
    for s in &stopped {
        println!("stopped {s}");
    }
    let mut nodes = 0;
    for agent_dir in [dir.join("agent"), dir.clone()] {
        for f in host::recorded(&agent_dir)? {
            nodes += 1;
            let removed = host::remove_node(&f, &agent_dir).await;
            println!("node {}:", f.node);
            for (kind, items) in [
                ("processes", removed.processes.clone()),
                ("network namespaces", removed.namespaces.clone()),
                (
                    "mounts",
                    removed
                        .mounts
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect(),
                ),
                (
                    "cgroups",
                    removed
                        .cgroups
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect(),
                ),
                ("links", removed.links.clone()),
                ("routes", removed.routes.clone()),
                ("nft tables", removed.tables.clone()),
            ] {
                if !items.is_empty() {
                    println!("  removed {kind}: {}", items.join(", "));
                }
            }
        }
    }
    if nodes == 0 {
        println!("no node is recorded in {}", dir.display());
    }
    if a.keep_data {
        println!("kept {}", dir.display());
    } else if dir.exists() {
        // Anything still mounted below would be emptied through its mount.
        host::mounts::detach_below(&dir);
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        println!("removed {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_of(cmd: &str, cwd: &str) -> procs::Proc {
        procs::Proc {
            pid: 10,
            cmdline: cmd.split(' ').map(str::to_string).collect(),
            cwd: Some(PathBuf::from(cwd)),
            ..Default::default()
        }
    }

    #[test]
    fn data_dirs_of_processes() {
        let env = vec![("SKIFF_AGENT_DIR".to_string(), "/e/agent".to_string())];
        let cases = [
            ("/usr/bin/skiff server", vec![], Some("/w/./skiff-data")),
            (
                "target/release/skiff server --data-dir d2 --api-addr x",
                vec![],
                Some("/w/d2"),
            ),
            ("skiff server --data-dir=/abs", vec![], Some("/abs")),
            ("skiff agent --server s", env.clone(), Some("/e/agent")),
            ("skiff agent --data-dir a", env, Some("/w/a")),
            ("skiff bench pods", vec![], None),
            ("/usr/bin/containerd --config x", vec![], None),
        ];
        for (cmd, env, want) in cases {
            assert_eq!(
                data_dir_of(&proc_of(cmd, "/w"), &env),
                want.map(PathBuf::from),
                "{cmd}"
            );
        }
        assert_eq!(normal(Path::new("/w/./a/../b")), PathBuf::from("/w/b"));
    }
}
