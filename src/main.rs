//! The `skiff` binary: CLI wiring only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use skiff_control::server::{self, ServerConfig};
use skiff_control::store::ReplicaConfig;

mod bench;
mod image;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A WebAssembly-first orchestrator that speaks the Kubernetes API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a control-plane server (Raft store + API).
    Server(ServerArgs),
    /// Print the version.
    Version,
    /// Benchmarks (store throughput and latency).
    Bench(bench::BenchArgs),
    /// Images in the cluster's own store (import an OCI layout tarball).
    Image(image::ImageArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the Raft log, the state and the generated files live.
    #[arg(long, default_value = "./skiff-data", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:6443")]
    api_addr: String,
    /// Address peers use for Raft traffic.
    #[arg(long, default_value = "127.0.0.1:6444")]
    peer_addr: String,
    /// URL of an existing server to join as a voter.
    #[arg(long)]
    join: Option<String>,
    /// The cluster's join token (from `<data-dir>/join-token` of an existing server).
    #[arg(long, env = "SKIFF_TOKEN")]
    token: Option<String>,
    /// Compact the Raft log after this many applied entries.
    #[arg(long, default_value_t = 10_000, hide = true)]
    snapshot_threshold: u64,
    /// Events kept for watches that resume from a resourceVersion.
    #[arg(long, default_value_t = 10_000, hide = true)]
    watch_history: usize,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,raft=warn,sled=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        match cli.command {
            Command::Version => {
                println!("skiff {}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
            Command::Server(a) => {
                let cfg = ServerConfig {
                    data_dir: a.data_dir,
                    api_addr: a.api_addr,
                    peer_addr: a.peer_addr,
                    join: a.join,
                    token: a.token,
                    replica: ReplicaConfig {
                        snapshot_threshold: a.snapshot_threshold,
                        watch_capacity: a.watch_history,
                        ..ReplicaConfig::default()
                    },
                };
                server::run(cfg).await.map_err(Into::into)
            }
            Command::Bench(b) => bench::run(b).await,
            Command::Image(i) => image::run(i).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
