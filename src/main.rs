//! The `skiff` binary: CLI wiring only.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use skiff_control::controllers::nodeipam::PodCidrs;
use skiff_control::server::{self, ServerConfig};
use skiff_control::store::ReplicaConfig;

mod bench;
mod cli_extra;
mod config;
mod image;
mod kubeconfig;
mod secrets;
mod snapshot;
mod uninstall;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A WebAssembly-first orchestrator that speaks the Kubernetes API",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: cli_extra::LogArgs,
}

// Parsed once at start: the size of the server's flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a control-plane server (Raft store + API).
    Server(ServerArgs),
    /// Print the version; with --verbose, also the certificates of a
    /// server's data dir (the cluster CA, serving, peer) and when each
    /// expires and is renewed.
    Version {
        #[arg(long, short)]
        verbose: bool,
        /// The server's data dir.
        #[arg(long, default_value = "./skiff-data")]
        data_dir: std::path::PathBuf,
    },
    /// Run a node agent only (registers a Node and heartbeats).
    Agent(AgentArgs),
    /// Benchmarks (store throughput and latency).
    Bench(bench::BenchArgs),
    /// Images in the cluster's own store: import (OCI layout or docker save), ls, rm, pack.
    Image(image::ImageArgs),
    /// Print the admin kubeconfig a server wrote (`<data-dir>/kubeconfig`).
    Kubeconfig(cli_extra::KubeconfigArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completion(cli_extra::CompletionArgs),
    /// Back up a running cluster's store to a file, or restore one into a new data dir.
    Snapshot(snapshot::SnapshotArgs),
    /// Encryption keys of values at rest.
    Secrets(secrets::SecretsArgs),
    /// Take Skiff off this host: stop its processes and pods, remove its
    /// namespaces, links, routes, nft tables, cgroups, mounts and data dir.
    Uninstall(uninstall::UninstallArgs),
}

#[derive(clap::Args)]
struct AgentArgs {
    /// URL of the API server to join (https://HOST:6443).
    #[arg(long)]
    server: String,
    /// The cluster's join token (`<data-dir>/join-token` on a server); also
    /// SKIFF_TOKEN.
    #[arg(
        long,
        required_unless_present = "token_file",
        overrides_with = "token_file"
    )]
    token: Option<String>,
    /// Read the join token from this file instead (of the two, the one from
    /// the stronger source wins: flag > SKIFF_* variable > config file).
    #[arg(long, overrides_with = "token")]
    token_file: Option<PathBuf>,
    /// A YAML file of flags by long name (default: /etc/skiff/config.yaml
    /// when present; `SKIFF_CONFIG` names one too, empty for none).
    /// Precedence: default < file < SKIFF_* env < flag.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the agent keeps images, compiled components and logs.
    #[arg(long, default_value = "./skiff-agent", env = "SKIFF_AGENT_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

/// Settings of a node agent, embedded or standalone.
#[derive(clap::Args, Clone)]
struct NodeArgs {
    /// Name of this node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Name of the pod bridge.
    #[arg(long, default_value = "skiff0")]
    bridge: String,
    /// This node's address: pods see it as hostIP, the API server reaches the
    /// agent (logs) here (default: the IPv4 address of the default route's
    /// interface, else 127.0.0.1).
    #[arg(long)]
    node_ip: Option<std::net::IpAddr>,
    /// Port of the agent's API (0: any free port; the Node publishes it).
    #[arg(long, default_value_t = 0)]
    agent_port: u16,
    /// Pod network namespaces kept built ahead of demand (fast pod starts).
    #[arg(long, default_value_t = 8)]
    warm_netns: usize,
    /// Most pods this node takes (its `pods` capacity).
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Do not put pod threads into per-pod cgroups.
    #[arg(long)]
    no_cgroups: bool,
    /// containerd's socket; without it the agent starts its own containerd
    /// (when installed) under the data directory.
    #[arg(long)]
    containerd_socket: Option<PathBuf>,
    /// Run no container images (Wasm pods only), even if containerd is there.
    #[arg(long, conflicts_with = "containerd_socket")]
    no_containerd: bool,
    /// Let privileged containers run on this node.
    #[arg(long)]
    allow_privileged: bool,
    /// First container restart back-off in milliseconds (doubles up to 5 min).
    #[arg(long, default_value_t = 1000, hide = true)]
    restart_backoff_ms: u64,
    /// Port of the activator on the node's pod bridge address (where
    /// scale-to-zero Services without ready pods send their connections).
    #[arg(long, default_value_t = skiff_node::activator::DEFAULT_PORT)]
    activator_port: u16,
    /// Port of the API relay on the node's pod bridge address (where the
    /// `kubernetes` Service sends pods, on to the API servers).
    #[arg(long, default_value_t = skiff_node::agent::relay::DEFAULT_PORT)]
    api_relay_port: u16,
    /// Longest the activator holds a request while its Deployment wakes
    /// (a Go duration); later it answers 503 with Retry-After.
    #[arg(long, default_value = "30s", value_parser = go_duration)]
    activator_timeout: std::time::Duration,
    /// Most requests the activator holds at once.
    #[arg(long, default_value_t = 1000)]
    activator_max_held: usize,
    /// Rotate a container's log file beyond this size (the kubelet's
    /// default, 10Mi).
    #[arg(long, default_value = "10Mi", value_parser = cli_extra::byte_quantity)]
    container_log_max_size: u64,
    /// Log files kept per container run, the current one included.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..))]
    container_log_max_files: u64,
    /// Hard eviction thresholds in the kubelet's notation
    /// (`memory.available<100Mi,nodefs.available<5%`); "" for none. While
    /// one is met the node reports pressure and evicts pods one at a time.
    #[arg(long, default_value = skiff_node::eviction::thresholds::DEFAULT_HARD,
        value_parser = skiff_node::eviction::thresholds::flag)]
    eviction_hard: skiff_node::eviction::thresholds::Thresholds,
    /// How long a pressure condition stays on after its threshold was last
    /// met (a Go duration).
    #[arg(long, default_value = "5m", value_parser = go_duration)]
    eviction_pressure_transition_period: std::time::Duration,
    /// The resolvers names outside the cluster domain are forwarded to (its
    /// `nameserver` lines), and the file `dnsPolicy: Default` pods get (the
    /// kubelet's `--resolv-conf`). One without nameservers (`/dev/null`)
    /// turns forwarding off.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Keep pods' traffic inside the cluster (by default pods reach
    /// addresses outside it, masqueraded as the node, unless a
    /// NetworkPolicy forbids it).
    #[arg(long)]
    no_pod_egress: bool,
    /// Registry mirrors, credentials and TLS settings for the images pods
    /// name (k3s's `registries.yaml` format; absent: none).
    #[arg(long, default_value = "/etc/skiff/registries.yaml")]
    registries_config: PathBuf,
    /// Contact only the mirrors `registries.yaml` names, never the registry
    /// an image names.
    #[arg(long)]
    disable_default_registry_endpoint: bool,
    /// The Ingress router's HTTP port on every address of the node (0: off).
    #[arg(long, default_value_t = 80)]
    ingress_http_port: u16,
    /// The Ingress router's HTTPS port (0: off).
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
}

fn go_duration(s: &str) -> Result<std::time::Duration, String> {
    skiff_common::scale::parse_duration(s)
}

fn agent_config(
    server: String,
    token: String,
    data_dir: PathBuf,
    n: NodeArgs,
) -> skiff_node::agent::AgentConfig {
    skiff_node::agent::AgentConfig {
        server,
        token,
        node_name: n.node_name.unwrap_or_else(skiff_node::agent::hostname),
        runtimes: vec!["wasmtime".into()],
        heartbeat: std::time::Duration::from_secs(2),
        data_dir,
        bridge: n.bridge,
        address: n.node_ip.unwrap_or_else(cli_extra::discover_node_ip),
        port: n.agent_port,
        cgroups: !n.no_cgroups,
        max_pods: n.max_pods,
        warm_netns: n.warm_netns,
        backoff: std::time::Duration::from_millis(n.restart_backoff_ms),
        containerd: match (n.containerd_socket, n.no_containerd) {
            (_, true) => skiff_node::agent::ContainerdMode::Off,
            (Some(s), _) => skiff_node::agent::ContainerdMode::Socket(s),
            (None, false) => skiff_node::agent::ContainerdMode::Own,
        },
        allow_privileged: n.allow_privileged,
        activator_port: n.activator_port,
        api_relay_port: n.api_relay_port,
        activator_timeout: n.activator_timeout,
        activator_max_held: n.activator_max_held,
        container_log_max_size: n.container_log_max_size,
        container_log_max_files: n.container_log_max_files as usize,
        eviction_hard: n.eviction_hard.0,
        eviction_transition: n.eviction_pressure_transition_period,
        resolv_conf: n.resolv_conf,
        pod_egress: !n.no_pod_egress,
        upstream: skiff_node::pod::pull::Upstream {
            registries: Some(n.registries_config),
            default_endpoint: !n.disable_default_registry_endpoint,
        },
        ingress_http: (n.ingress_http_port != 0).then_some(n.ingress_http_port),
        ingress_https: (n.ingress_https_port != 0).then_some(n.ingress_https_port),
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
    /// The cluster's join token (from `<data-dir>/join-token` of an existing
    /// server); also SKIFF_TOKEN.
    #[arg(long, overrides_with = "token_file")]
    token: Option<String>,
    /// Read the join token from this file instead (of the two, the one from
    /// the stronger source wins: flag > SKIFF_* variable > config file).
    #[arg(long, overrides_with = "token")]
    token_file: Option<PathBuf>,
    /// A YAML file of flags by long name (default: /etc/skiff/config.yaml
    /// when present; `SKIFF_CONFIG` names one too, empty for none).
    /// Precedence: default < file < SKIFF_* env < flag.
    #[arg(long)]
    config: Option<PathBuf>,
    /// One more DNS name or IP the API's serving certificate covers
    /// (repeatable; localhost, 127.0.0.1, the node IP and the `kubernetes.*`
    /// service names always are).
    #[arg(long, value_name = "NAME_OR_IP")]
    tls_san: Vec<String>,
    /// Where the audit log goes (JSON lines, audit.k8s.io/v1 Events; `-`:
    /// standard output). Default: `<data-dir>/audit/audit.log`.
    #[arg(long, value_name = "PATH")]
    audit_log_path: Option<PathBuf>,
    /// An audit.k8s.io/v1 Policy deciding each request's level (default:
    /// Metadata for every request; Secret and token bodies never logged).
    #[arg(long, value_name = "FILE")]
    audit_policy_file: Option<PathBuf>,
    /// Rotate the audit log at this many megabytes.
    #[arg(long, default_value_t = 100)]
    audit_log_maxsize: u64,
    /// Rotated audit logs kept.
    #[arg(long, default_value_t = 3)]
    audit_log_maxbackup: usize,
    /// Serve the store's raw key-value view at `/skiff/v0/kv` (debugging;
    /// needs the join token). Off by default.
    #[arg(long)]
    enable_debug_kv: bool,
    /// How long the serving and peer certificates this server issues are
    /// valid (a Go duration); each is renewed, without a restart, two thirds
    /// into its validity.
    #[arg(long, default_value = "8760h", value_parser = cli_extra::duration_or_secs)]
    cert_lifetime: std::time::Duration,
    /// Kubernetes' EncryptionConfiguration (aesgcm, identity) for values at
    /// rest; keep it the same on every server. Without it the cluster manages
    /// its keys (Secrets sealed with AES-256-GCM; `skiff secrets rotate-key`).
    #[arg(long, value_name = "FILE")]
    encryption_provider_config: Option<PathBuf>,
    /// The Pod Security level (privileged, baseline, restricted) enforced,
    /// warned about and audited in namespaces without
    /// `pod-security.kubernetes.io/*` labels.
    #[arg(long, default_value = "baseline")]
    pod_security_level: skiff_control::podsecurity::Level,
    /// Compact the Raft log after this many applied entries.
    #[arg(long, default_value_t = 10_000, hide = true)]
    snapshot_threshold: u64,
    /// Do not run the embedded node agent.
    #[arg(long)]
    disable_agent: bool,
    #[command(flatten)]
    node: NodeArgs,
    /// Pod addresses of the cluster; each node gets a block of it.
    #[arg(long, default_value = "10.88.0.0/16")]
    cluster_cidr: String,
    /// Service addresses: each Service's ClusterIP comes from here.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// Ports NodePort and LoadBalancer Services get on every node.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Size of each node's block of the cluster CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// How long a node's Lease may go unrenewed before the node is NotReady
    /// (and its pods are evicted after their toleration, 30 s by default); a
    /// Go duration (a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = cli_extra::duration_or_secs)]
    node_monitor_grace_period: std::time::Duration,
    /// How often each HorizontalPodAutoscaler is evaluated (a Go duration).
    #[arg(long, default_value = "15s", value_parser = go_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// Events kept for watches that resume from a resourceVersion.
    #[arg(long, default_value_t = 10_000, hide = true)]
    watch_history: usize,
    /// Take a snapshot of this server's store every interval (a Go duration,
    /// e.g. `6h`); off unless given.
    #[arg(long, value_parser = go_duration)]
    snapshot_schedule: Option<std::time::Duration>,
    /// Scheduled snapshots kept (the newest; 0 keeps all).
    #[arg(long, default_value_t = 5)]
    snapshot_retention: usize,
    /// Where scheduled snapshots go (default: `<data-dir>/snapshots`).
    #[arg(long)]
    snapshot_dir: Option<PathBuf>,
}

/// The embedded agent joins this server once it has written its join token,
/// and starts over if it fails.
fn spawn_embedded_agent(a: &ServerArgs) {
    // Loopback when the API listens on every address (0.0.0.0): always
    // reachable, and covered by the serving certificate.
    let server = format!("https://{}", server::advertised_addr(&a.api_addr, None));
    let (data_dir, node) = (a.data_dir.clone(), a.node.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            // The token that pins the CA (written once the server has it).
            let Ok(token) = std::fs::read_to_string(data_dir.join("node-token")) else {
                continue;
            };
            let cfg = agent_config(
                server.clone(),
                token.trim().to_string(),
                data_dir.join("agent"),
                node.clone(),
            );
            match skiff_node::agent::run(cfg).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "embedded agent stopped; restarting"),
            }
        }
    });
}

fn main() -> std::process::ExitCode {
    let mut cmd = Cli::command();
    cmd.build();
    let argv = match config::effective_args(&cmd, std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    if let Err(e) = cli_extra::init_logging(&cli.log) {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    cli_extra::publish_build_info();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        match cli.command {
            Command::Version { verbose, data_dir } => {
                println!("{}", cli_extra::version_line());
                if verbose {
                    print!("{}", cli_extra::certificates(&data_dir));
                }
                Ok(())
            }
            Command::Agent(a) => {
                skiff_control::api::tls::install_crypto_provider();
                let token = cli_extra::token(a.token, a.token_file.as_deref())?
                    .ok_or_else(|| anyhow::anyhow!("--token or --token-file is required"))?;
                skiff_node::agent::run(agent_config(a.server, token, a.data_dir, a.node))
                    .await
                    .map_err(Into::into)
            }
            Command::Server(mut a) => {
                let token = cli_extra::token(a.token.take(), a.token_file.as_deref())?;
                let node_ip = *a
                    .node
                    .node_ip
                    .get_or_insert_with(cli_extra::discover_node_ip);
                let pod_cidrs = PodCidrs::new(&a.cluster_cidr, a.node_cidr_mask_size)
                    .map_err(anyhow::Error::msg)?;
                let services = skiff_control::storage::ServiceRanges::parse(
                    &a.service_cidr,
                    &a.service_node_port_range,
                )
                .map_err(anyhow::Error::msg)?;
                if !a.disable_agent {
                    spawn_embedded_agent(&a);
                }
                let snapshots = a.snapshot_schedule.filter(|d| !d.is_zero()).map(|every| {
                    skiff_control::store::backup::Schedule {
                        every,
                        retention: a.snapshot_retention,
                        dir: a
                            .snapshot_dir
                            .clone()
                            .unwrap_or_else(|| a.data_dir.join("snapshots")),
                    }
                });
                let cfg = ServerConfig {
                    data_dir: a.data_dir,
                    api_addr: a.api_addr,
                    peer_addr: a.peer_addr,
                    join: a.join,
                    token,
                    replica: ReplicaConfig {
                        snapshot_threshold: a.snapshot_threshold,
                        watch_capacity: a.watch_history,
                        ..ReplicaConfig::default()
                    },
                    pod_cidrs,
                    node_grace: a.node_monitor_grace_period,
                    services,
                    hpa_sync_period: a.horizontal_pod_autoscaler_sync_period,
                    tls_san: a.tls_san,
                    node_ip: Some(node_ip),
                    snapshots,
                    audit: server::AuditConfig {
                        path: a.audit_log_path,
                        policy: a.audit_policy_file,
                        max_bytes: a.audit_log_maxsize.saturating_mul(1 << 20),
                        backups: a.audit_log_maxbackup,
                    },
                    debug_kv: a.enable_debug_kv,
                    cert_lifetime: a.cert_lifetime,
                    encryption_config: a.encryption_provider_config,
                    pod_security: skiff_control::podsecurity::Policy::uniform(a.pod_security_level),
                };
                server::run(cfg).await.map_err(Into::into)
            }
            Command::Bench(b) => bench::run(b).await,
            Command::Image(i) => image::run(i).await,
            Command::Kubeconfig(k) => cli_extra::print_kubeconfig(&k),
            Command::Completion(c) => cli_extra::print_completion(&c, Cli::command()),
            Command::Snapshot(s) => snapshot::run(s).await,
            Command::Secrets(s) => secrets::run(s).await,
            Command::Uninstall(u) => uninstall::run(u).await,
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
