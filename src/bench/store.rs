//! `skiff bench store`: the Raft store with fsync on, 1 and 3 voters, etcd as peer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use skiff_control::store::{Op, ReplicaConfig, Store, StoreConfig};

use super::etcd::etcd_check_perf;
use super::{Stats, free_port, load};

#[derive(clap::Args)]
pub struct StoreBench {
    /// Cluster sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub nodes: Vec<usize>,
    /// Writes in flight at once.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub inflight: Vec<usize>,
    /// Writes per run with many in flight.
    #[arg(long, default_value_t = 20_000)]
    pub writes: usize,
    /// Writes per run with one in flight.
    #[arg(long, default_value_t = 1_000)]
    pub serial_writes: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Also run `etcdctl check perf` against a local etcd of the same size.
    #[arg(long, default_value = "etcd", value_parser = ["etcd", "none"])]
    pub peer: String,
    /// The `etcdctl check perf` load profile.
    #[arg(long, default_value = "l")]
    pub etcd_load: String,
}

async fn start_cluster(root: &Path, n: usize) -> Result<Vec<Store>> {
    let mut stores: Vec<Store> = Vec::new();
    // Peers talk mutual TLS, as in a server.
    let ca = skiff_control::pki::ClusterCa::generate()?;
    for i in 0..n {
        let cfg = StoreConfig {
            data_dir: root.join(format!("n{i}")),
            peer_addr: format!("127.0.0.1:{}", free_port()?),
            peer_tls: skiff_control::store::PeerTls::for_member(&ca, i as u64 + 1)?,
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

async fn write_load(
    store: &Store,
    inflight: usize,
    writes: usize,
    value_size: usize,
    tag: &str,
) -> Result<Stats> {
    let (store, value, tag) = (
        store.clone(),
        Arc::new(vec![b'x'; value_size]),
        tag.to_string(),
    );
    load(writes, inflight, move |i| {
        let (store, value, key) = (store.clone(), value.clone(), format!("/bench/{tag}/{i:08}"));
        async move {
            store.write(Op::create(key, value.to_vec())).await?;
            Ok(())
        }
    })
    .await
}

pub async fn run(b: StoreBench) -> Result<()> {
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
            let s = write_load(&leader, c, writes, b.value_size, &format!("{n}-{c}")).await?;
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
