//! etcd as the peer of the benchmarks: start a local cluster, run `etcdctl check perf`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::free_port;

pub struct EtcdPerf {
    pub throughput: f64,
    pub slowest: f64,
    pub stddev: f64,
}

pub struct Etcd(Vec<Child>);

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Start an etcd cluster of `n` members on loopback; returns the processes, the
/// client endpoints (comma-separated host:port) and the data root.
pub fn start_etcd(n: usize) -> Result<(Etcd, String, tempfile::TempDir)> {
    let root = tempfile::tempdir()?;
    let ports: Vec<(u16, u16)> = (0..n)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
        .collect();
    let mut procs = Etcd(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(root.path().join(format!("e{i}")))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", "skiff-bench"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start etcd (apt-get install etcd-server etcd-client)")?;
        procs.0.push(child);
    }
    let endpoints: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("127.0.0.1:{c}"))
        .collect();
    let endpoints = endpoints.join(",");
    let mut healthy = false;
    for _ in 0..100 {
        let ok = Command::new("etcdctl")
            .args(["--endpoints", &endpoints, "endpoint", "health"])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !healthy {
        bail!("etcd did not become healthy");
    }
    Ok((procs, endpoints, root))
}

/// Run `etcdctl check perf` against a fresh etcd of `n` members.
pub fn etcd_check_perf(n: usize, load: &str) -> Result<EtcdPerf> {
    let (_procs, endpoints, _root) = start_etcd(n)?;
    let out = Command::new("etcdctl")
        .args(["--endpoints", &endpoints, "check", "perf", "--load", load])
        .env("ETCDCTL_API", "3")
        .output()
        .context("run etcdctl check perf")?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // "PASS: Throughput is 150 writes/s" or "FAIL: Throughput too low: 5902 writes/s".
    let num_after = |needle: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.contains(needle))?;
        let rest = &line[line.find(needle)? + needle.len()..];
        let tok: String = rest
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        tok.parse().ok()
    };
    match (
        num_after("Throughput"),
        num_after("Slowest request"),
        num_after("Stddev"),
    ) {
        (Some(throughput), Some(slowest), Some(stddev)) => Ok(EtcdPerf {
            throughput,
            slowest,
            stddev,
        }),
        _ => bail!("could not parse etcdctl output: {text}"),
    }
}
