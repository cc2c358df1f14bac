//! `skiff bench`: benchmarks that measure and report, side by side with a peer,
//! never asserting on time.

mod api;
mod etcd;
mod store;

use std::time::Duration;

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
}

pub async fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        What::Store(b) => store::run(b).await,
        What::Api(b) => api::run(b).await,
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
