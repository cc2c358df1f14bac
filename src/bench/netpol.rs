//! `skiff bench netpol`: what a node does for one NetworkPolicy change with
//! many policies in the cluster: render its table from the policies, pods
//! and namespaces, and load it into the kernel (`nft -f`, one transaction).
//! The watch that brings the change is the same as the proxy's (see
//! `skiff bench services` for endpoint propagation). Then the data plane:
//! wrk from a namespace with the address of a pod the policies allow to an
//! nginx in one with the address of a pod they isolate, routed through the
//! host's forward hook, without the table and with the 1,000 policies (and a
//! port they do not allow checked to be dropped). Needs root (nft, netns);
//! the table, namespaces and links have names of their own and are removed
//! at the end.

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
    /// Seconds of wrk per data-plane run (0: no data-plane figure; needs
    /// wrk and nginx-light).
    #[arg(long, default_value_t = 8)]
    data_plane_seconds: u64,
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
    // The data plane: wrk from a pod the policies allow to a pod they
    // isolate, through the host's forward hook, without the table and with
    // the 1,000 policies in force.
    let server = inputs
        .local
        .iter()
        .find(|p| p.labels.get("tier").is_some_and(|t| t == "db"));
    let client = server.and_then(|s| {
        inputs.all.iter().find(|p| {
            p.namespace == s.namespace && p.labels.get("tier").is_some_and(|t| t == "web")
        })
    });
    let plane = match (server, client, b.data_plane_seconds) {
        (Some(s), Some(c), n) if n > 0 => Some((s.ip, DataPlane::start(s.ip, c.ip)?)),
        _ => None,
    };
    let mut figures = None;
    if let Some((server, dp)) = &plane {
        let seconds = b.data_plane_seconds;
        let _ = dp.wrk(*server, 1);
        let _ = nft.apply(&rules::remove(&table));
        let open1 = dp.wrk(*server, seconds)?;
        nft.apply(&rules::render(&table, &inputs))?;
        let with = dp
            .wrk(*server, seconds)
            .context("the allowed client through 1,000 policies")?;
        anyhow::ensure!(
            dp.dropped(*server, 8081)?,
            "a port no policy allows was not dropped: the table is not in the path"
        );
        let _ = nft.apply(&rules::remove(&table));
        let open2 = dp.wrk(*server, seconds)?;
        figures = Some((((open1.0 + open2.0) / 2.0, (open1.1 + open2.1) / 2.0), with));
    }
    drop(plane);
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
    if let Some((open, with)) = figures {
        println!(
            "| data plane, 64 connections (wrk, pod to pod through the host) | no policy {:.0} req/s p50 {:.3} ms | 1,000 policies {:.0} req/s p50 {:.3} ms | {:.2}x |",
            open.0,
            open.1,
            with.0,
            with.1,
            with.0 / open.0
        );
    }
    Ok(())
}

/// Two network namespaces on veths of the host, routed through the host's
/// forward hook (where the policy table sits): a client with the address of
/// one of the bench's pods and a server with another's. Removed on drop.
struct DataPlane {
    server_ns: String,
    client_ns: String,
    links: Vec<String>,
    nginx: Option<std::process::Child>,
    _dir: tempfile::TempDir,
    forward_was: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl DataPlane {
    fn start(server: std::net::Ipv4Addr, client: std::net::Ipv4Addr) -> Result<DataPlane> {
        let id = std::process::id() % 100_000;
        let forward_was =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
        let mut dp = DataPlane {
            server_ns: format!("snpb{id}s"),
            client_ns: format!("snpb{id}c"),
            links: Vec::new(),
            nginx: None,
            _dir: tempfile::tempdir()?,
            forward_was,
        };
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        for (ns, addr, link) in [
            (dp.server_ns.clone(), server, format!("snpb{id}s")),
            (dp.client_ns.clone(), client, format!("snpb{id}c")),
        ] {
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            dp.links.push(link.clone());
            ip(&["link", "set", &link, "up"])?;
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{link}/proxy_arp"), "1")?;
            ip(&["route", "add", &format!("{addr}/32"), "dev", &link])?;
            let a = format!("{addr}/32");
            ip(&["-n", &ns, "addr", "add", &a, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"])?;
        }
        let conf = dp._dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 4096; }}\nhttp {{ access_log off; client_body_temp_path {d}; server {{ listen {server}:8080; location / {{ return 200 \"ok\\n\"; }} }} }}\n",
                d = dp._dir.path().display()
            ),
        )?;
        dp.nginx = Some(
            std::process::Command::new("ip")
                .args(["netns", "exec", &dp.server_ns, "nginx", "-c"])
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("run nginx (apt-get install nginx-light)")?,
        );
        Ok(dp)
    }

    /// (requests/s, p50 ms, p99 ms) of wrk from the client to the server.
    fn wrk(&self, server: std::net::Ipv4Addr, seconds: u64) -> Result<(f64, f64, f64)> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.client_ns, "wrk", "-t2", "-c64"])
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .arg(format!("http://{server}:8080/"))
            .output()
            .context("run wrk (apt-get install wrk)")?;
        super::pods::parse_wrk(&String::from_utf8_lossy(&out.stdout))
    }
}

impl DataPlane {
    /// Whether a connection from the client to `port` of the server is
    /// dropped (no answer within a second; a refusal means it passed).
    fn dropped(&self, server: std::net::Ipv4Addr, port: u16) -> Result<bool> {
        let status = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client_ns,
                "timeout",
                "1",
                "bash",
                "-c",
            ])
            .arg(format!("echo > /dev/tcp/{server}/{port}"))
            .stderr(std::process::Stdio::null())
            .status()?;
        Ok(status.code() == Some(124))
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(c) = &mut self.nginx {
            let _ = c.kill();
            let _ = c.wait();
        }
        for l in &self.links {
            let _ = ip(&["link", "del", l]);
        }
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = ip(&["netns", "del", ns]);
        }
        if !self.forward_was.trim().is_empty() {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", self.forward_was.trim());
        }
    }
}
