//! `skiff bench`: benchmarks that measure and report, side by side with a peer,
//! never asserting on time.

mod api;
mod chaos;
mod containers;
mod etcd;
mod footprint;
mod ingress;
mod netpol;
mod pods;
mod scale;
mod services;
mod store;
mod workloads;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Write throughput and latency of the Raft store (fsync on), with etcd as the peer.
    Store(store::StoreBench),
    /// The Kubernetes API over HTTPS: creates, lists, watches, start-up, idle memory.
    Api(api::ApiBench),
    /// Wasm pods on an agent: HTTP vs `wasmtime serve`, pod start-up, density.
    Pods(pods::PodsBench),
    /// The Service proxy: ClusterIP vs pod IP, endpoint propagation, 1,000 Services.
    Services(services::ServicesBench),
    /// Container pods: start vs `ctr run`, vs Wasm pods, memory of N of each.
    Containers(containers::ContainersBench),
    /// Workload controllers: a large Deployment to Ready, a rollout, reconcile rate.
    Workloads(workloads::WorkloadsBench),
    /// Scale to zero: first-request latency after zero (Wasm and containers)
    /// next to warm requests, and memory of 1,000 scaled-to-zero Services.
    Scale(scale::ScaleBench),
    /// What Skiff costs a host: binary size, idle RSS of a server with its
    /// embedded agent, RSS with idle Wasm pods.
    Footprint(footprint::FootprintBench),
    /// Faults with a checker: 1,000 crash cycles with torn writes, then
    /// mixed kills and pauses of the voters under a recorded workload.
    Chaos(chaos::ChaosBench),
    /// NetworkPolicy: one change with 1,000 policies, rendered and loaded
    /// into the kernel (p50/p99).
    Netpol(netpol::NetpolBench),
    /// The Ingress router: HTTP through it vs the pod IP, with nginx as a
    /// reverse proxy to the same pod as the anchor.
    Ingress(ingress::IngressBench),
}

pub async fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        What::Store(b) => store::run(b).await,
        What::Api(b) => api::run(b).await,
        What::Pods(b) => pods::run(b).await,
        What::Services(b) => services::run(b).await,
        What::Workloads(b) => workloads::run(b).await,
        What::Containers(b) => containers::run(b).await,
        What::Scale(b) => scale::run(b).await,
        What::Footprint(b) => footprint::run(b).await,
        What::Chaos(b) => chaos::run(b).await,
        What::Netpol(b) => netpol::run(b).await,
        What::Ingress(b) => ingress::run(b).await,
    }
}

/// Latencies of a load run.
pub struct Stats {
    pub writes: usize,
    pub elapsed: Duration,
    pub lat: Vec<Duration>,
}

impl Stats {
    pub fn pct(&self, p: f64) -> f64 {
        let i = ((self.lat.len() as f64 * p).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[i].as_secs_f64() * 1000.0
    }
    pub fn per_sec(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Run `op(0..n)` from `concurrency` tasks at once; every call's latency is kept.
pub async fn load<F, Fut>(n: usize, concurrency: usize, op: F) -> Result<Stats>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed();
    lat.sort();
    Ok(Stats {
        writes: n,
        elapsed,
        lat,
    })
}
