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
    /// Run a node agent only (registers a Node and heartbeats).
    Agent(AgentArgs),
    /// Benchmarks (store throughput and latency).
    Bench(bench::BenchArgs),
    /// Images in the cluster's own store (import an OCI layout tarball).
    Image(image::ImageArgs),
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Kubeconfig of the cluster to join as a node.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of this node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
}

fn agent_config(kubeconfig: PathBuf, node_name: Option<String>) -> skiff_node::agent::AgentConfig {
    skiff_node::agent::AgentConfig {
        kubeconfig,
        node_name: node_name.unwrap_or_else(skiff_node::agent::hostname),
        runtimes: vec!["wasmtime".into()],
        heartbeat: std::time::Duration::from_secs(10),
    }
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
    /// Do not run the embedded node agent.
    #[arg(long)]
    disable_agent: bool,
    /// Name of the embedded node agent's Node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
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
            Command::Agent(a) => {
                skiff_control::api::tls::install_crypto_provider();
                skiff_node::agent::run(agent_config(a.kubeconfig, a.node_name))
                    .await
                    .map_err(Into::into)
            }
            Command::Server(a) => {
                if !a.disable_agent {
                    // The embedded agent joins once the server has written its kubeconfig.
                    let cfg = agent_config(a.data_dir.join("kubeconfig"), a.node_name.clone());
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            match skiff_node::agent::run(cfg.clone()).await {
                                Ok(()) => return,
                                Err(e) => tracing::debug!(error = %e, "embedded agent: retrying"),
                            }
                        }
                    });
                }
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
