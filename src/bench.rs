//! `skiff bench`: benchmarks that measure and report, side by side with a peer,
//! never asserting on time.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use skiff_control::store::{Op, ReplicaConfig, Store, StoreConfig};

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Write throughput and latency of the Raft store (fsync on), with etcd as the peer.
    Store(StoreBench),
}

#[derive(clap::Args)]
struct StoreBench {
    /// Cluster sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    nodes: Vec<usize>,
    /// Writes in flight at once.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    inflight: Vec<usize>,
    /// Writes per run with many in flight.
    #[arg(long, default_value_t = 20_000)]
    writes: usize,
    /// Writes per run with one in flight.
    #[arg(long, default_value_t = 1_000)]
    serial_writes: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Also run `etcdctl check perf` against a local etcd of the same size.
    #[arg(long, default_value = "etcd", value_parser = ["etcd", "none"])]
    peer: String,
    /// The `etcdctl check perf` load profile.
    #[arg(long, default_value = "l")]
    etcd_load: String,
}

pub async fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        What::Store(b) => store(b).await,
    }
}

struct Stats {
    writes: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.lat.len() as f64 * p).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[i].as_secs_f64() * 1000.0
    }
    fn per_sec(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_cluster(root: &Path, n: usize) -> Result<Vec<Store>> {
    let mut stores: Vec<Store> = Vec::new();
    for i in 0..n {
        let cfg = StoreConfig {
            data_dir: root.join(format!("n{i}")),
            peer_addr: format!("127.0.0.1:{}", free_port()?),
            cluster_token: "bench".into(),
            bootstrap: i == 0,
            tick: Duration::from_millis(100),
            replica: ReplicaConfig::default(),
        };
        let addr = cfg.peer_addr.clone();
        let s = Store::start(cfg, i as u64 + 1).await?;
        if i == 0 {
            wait_leader(&s).await?;
        } else {
            stores[0].add_voter(s.id(), addr).await?;
        }
        stores.push(s);
    }
    for s in &stores {
        wait_leader(s).await?;
        s.linearize().await?;
    }
    Ok(stores)
}

async fn wait_leader(s: &Store) -> Result<()> {
    for _ in 0..200 {
        if s.status().leader_id != 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("no leader")
}

async fn load(
    store: &Store,
    inflight: usize,
    writes: usize,
    value_size: usize,
    tag: &str,
) -> Result<Stats> {
    let next = Arc::new(AtomicUsize::new(0));
    let value = vec![b'x'; value_size];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..inflight {
        let (store, next, value) = (store.clone(), next.clone(), value.clone());
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                store
                    .write(Op::create(format!("/bench/{tag}/{i:08}"), value.clone()))
                    .await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::with_capacity(writes);
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed();
    lat.sort();
    Ok(Stats {
        writes,
        elapsed,
        lat,
    })
}

async fn store(b: StoreBench) -> Result<()> {
    println!(
        "# skiff bench store: {} B values, fsync on (sled flush per Ready)",
        b.value_size
    );
    println!("| system | voters | in flight | writes | writes/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut best: Vec<(usize, f64)> = Vec::new();
    for &n in &b.nodes {
        let root = tempfile::tempdir()?;
        let cluster = start_cluster(root.path(), n).await?;
        let leader = cluster
            .iter()
            .find(|s| s.status().role == "leader")
            .context("leader")?
            .clone();
        for &c in &b.inflight {
            let writes = if c == 1 { b.serial_writes } else { b.writes };
            let s = load(&leader, c, writes, b.value_size, &format!("{n}-{c}")).await?;
            println!(
                "| skiff | {n} | {c} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                s.writes,
                s.per_sec(),
                s.pct(0.50),
                s.pct(0.99),
                s.lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            );
            best.push((n, s.per_sec()));
        }
        for s in &cluster {
            s.shutdown();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if b.peer == "etcd" {
        println!();
        println!(
            "# peer: etcdctl check perf --load={} (etcd from Debian)",
            b.etcd_load
        );
        println!(
            "| system | voters | writes/s | slowest ms | stddev ms | skiff best writes/s | ratio skiff/etcd |"
        );
        println!("|---|---|---|---|---|---|---|");
        for &n in &b.nodes {
            match etcd_check_perf(n, &b.etcd_load) {
                Ok(p) => {
                    let ours = best
                        .iter()
                        .filter(|(m, _)| *m == n)
                        .map(|(_, t)| *t)
                        .fold(0.0, f64::max);
                    println!(
                        "| etcd | {n} | {:.0} | {:.1} | {:.1} | {ours:.0} | {:.2} |",
                        p.throughput,
                        p.slowest * 1000.0,
                        p.stddev * 1000.0,
                        ours / p.throughput
                    );
                }
                Err(e) => println!("| etcd | {n} | failed: {e:#} | | | | |"),
            }
        }
    }
    Ok(())
}

struct EtcdPerf {
    throughput: f64,
    slowest: f64,
    stddev: f64,
}

struct Etcd(Vec<Child>);

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn etcd_check_perf(n: usize, load: &str) -> Result<EtcdPerf> {
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
