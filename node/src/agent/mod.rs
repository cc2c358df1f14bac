//! The node agent: bootstrap credentials with the join token, register the Node,
//! set up the pod network, run a worker per pod bound here, serve container logs
//! to the API server, and heartbeat.
//!
//! **The agent installs the unreachable routes for the cluster and Service CIDRs
//! before it runs any pod, and reports Ready only after that.**

mod api;
pub mod apiservers;
pub(crate) mod cache;
pub mod local;
mod metrics;
mod node;
mod pods;
pub mod relay;
mod tls;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use serde::Deserialize;

use crate::net::{Cidr, NetConfig, NetError, PodNetwork};
use crate::pod::{NodeCtx, events::Recorder, logs::LogDir, pull::Images};

pub use node::hostname;

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("bootstrap with {server}: {reason}")]
    Bootstrap { server: String, reason: String },
    #[error("bootstrap with {server}: the server refused the join token ({status})")]
    Refused { server: String, status: String },
    #[error("bootstrap with {server}: {reason}")]
    Untrusted { server: String, reason: String },
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    #[error("pod network: {0}")]
    Net(#[from] NetError),
    #[error("wasm runtime: {0}")]
    Wasm(#[from] skiff_runtimes::wasm::WasmError),
    #[error("images: {0}")]
    Images(#[from] crate::pod::pull::ImageError),
    #[error("cluster config: {0}")]
    Config(String),
    #[error("service proxy: {0}")]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("cluster dns: {0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error("host: {0}")]
    Host(#[from] crate::host::HostError),
    #[error("agent api on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// How often container logs are checked for rotation.
const LOG_ROTATION_EVERY: Duration = Duration::from_secs(2);

/// Rotate container logs beyond `max_size` for as long as the agent runs
/// (the kubelet's container log manager).
async fn rotate_logs(logs: crate::pod::logs::LogDir, max_size: u64, max_files: usize) {
    loop {
        tokio::time::sleep(LOG_ROTATION_EVERY).await;
        let dir = logs.clone();
        let rotated = tokio::task::spawn_blocking(move || dir.rotate(max_size, max_files))
            .await
            .unwrap_or_default();
        for f in rotated {
            tracing::debug!(file = %f.display(), "container log rotated");
        }
    }
}

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The API server's URL.
    pub server: String,
    /// The cluster's join token.
    pub token: String,
    pub node_name: String,
    /// Runtime handlers this node offers (`wasmtime`).
    pub runtimes: Vec<String>,
    pub heartbeat: Duration,
    /// Where images, compiled components, logs and address records live.
    pub data_dir: PathBuf,
    /// The pod bridge's name.
    pub bridge: String,
    /// This node's address: the agent's API listens here, pods see it as hostIP.
    pub address: IpAddr,
    /// The agent API's port (0: any free port, published in the Node).
    pub port: u16,
    /// Put pod threads into per-pod cgroups.
    pub cgroups: bool,
    /// Most pods this node takes.
    pub max_pods: u32,
    /// Pod namespaces kept built ahead of demand.
    pub warm_netns: usize,
    /// First restart back-off (doubles up to five minutes).
    pub backoff: Duration,
    /// Where container images run.
    pub containerd: ContainerdMode,
    /// Whether privileged containers may run.
    pub allow_privileged: bool,
    /// The activator's port on the bridge address.
    pub activator_port: u16,
    /// The API relay's port on the bridge address (the `kubernetes`
    /// Service's backend on this node).
    pub api_relay_port: u16,
    /// Longest the activator holds a connection.
    pub activator_timeout: Duration,
    /// Most connections the activator holds at once.
    pub activator_max_held: usize,
    /// Container log files are rotated beyond this size...
    pub container_log_max_size: u64,
    /// ...keeping this many files per run (the current one included).
    pub container_log_max_files: usize,
    /// Hard eviction thresholds (`--eviction-hard`).
    pub eviction_hard: Vec<crate::eviction::thresholds::Threshold>,
    /// How long a pressure condition outlives its threshold.
    pub eviction_transition: Duration,
    /// The upstream resolvers' file (`--resolv-conf`).
    pub resolv_conf: PathBuf,
    /// Images the cluster lacks come from registries: the mirrors and
    /// settings of `registries.yaml`, the registry itself unless disabled.
    pub upstream: crate::pod::pull::Upstream,
    /// The Ingress router's HTTP and HTTPS ports (`None`: off).
    pub ingress_http: Option<u16>,
    pub ingress_https: Option<u16>,
    /// Pods may reach addresses outside the cluster (masqueraded).
    pub pod_egress: bool,
}

/// How often the eviction manager measures the node (the kubelet's
/// housekeeping period).
const EVICTION_INTERVAL: Duration = Duration::from_secs(5);

/// How the agent reaches containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerdMode {
    /// Start and supervise its own containerd under the data directory, when
    /// `containerd` and runc are installed.
    Own,
    /// Use the containerd listening on this socket.
    Socket(PathBuf),
    /// Run no container images.
    Off,
}

/// Connect to containerd as configured; `None` (and a warning) when it is off
/// or unavailable: the node then offers no `runc` runtime. Containers left
/// running by an earlier run of this agent stay: their pods adopt them, and
/// those of pods that are gone are swept once the pods are known.
async fn containerd(cfg: &AgentConfig) -> Option<skiff_runtimes::oci::OciRuntime> {
    use skiff_runtimes::oci::{OciRuntime, daemon};
    let socket = match &cfg.containerd {
        ContainerdMode::Off => return None,
        ContainerdMode::Socket(s) => s.clone(),
        ContainerdMode::Own if !daemon::available() => {
            tracing::warn!(
                "containerd, containerd-shim-runc-v2 or runc is not installed: this node runs Wasm pods only"
            );
            return None;
        }
        ContainerdMode::Own => match daemon::spawn(&cfg.data_dir.join("containerd")).await {
            Ok(d) => d.socket(),
            Err(e) => {
                tracing::warn!(error = %e, "no containerd: this node runs Wasm pods only");
                return None;
            }
        },
    };
    let namespace = format!("skiff-{}", cfg.node_name);
    match OciRuntime::connect(&socket, &namespace).await {
        Ok(rt) => {
            tracing::info!(socket = %socket.display(), %namespace, "containerd connected");
            Some(rt)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no containerd: this node runs Wasm pods only");
            None
        }
    }
}

/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// What `/skiff/v0/agent` hands an agent that shows the join token.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bootstrap {
    ca_cert: String,
    token: String,
}

/// An HTTPS client for `server` and the base URL to use with it. A token
/// that pins the CA (`K10<hash>::...`) has the server prove its CA first, so
/// the secret goes only to a server holding it; a bare token cannot check
/// the server (the token proves it ours only in that it accepts it).
async fn trusted_http(
    token: &skiff_common::jointoken::JoinToken,
    server: &str,
) -> Result<(reqwest::Client, String), AgentError> {
    let bad = |reason: String| AgentError::Bootstrap {
        server: server.to_string(),
        reason,
    };
    let pinned = match token.fetch_ca(server).await {
        Ok(ca) => ca,
        Err(e) if e.is_final() => {
            return Err(AgentError::Untrusted {
                server: server.to_string(),
                reason: e.to_string(),
            });
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let http = match &pinned {
        Some(ca) => apiservers::https_trusting(ca, server).await,
        None => {
            tracing::warn!(%server, "the join token pins no CA: the server is not verified (use the K10 token from the server's node-token file)");
            reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())
        }
    }
    .map_err(bad)?;
    let base = match &pinned {
        Some(_) => format!("https://{}", apiservers::named(server)),
        None => format!("https://{server}"),
    };
    Ok((http, base))
}

/// What the agent has once it joined: its API client and its serving
/// certificate.
struct Joined {
    client: Client,
    serving: tls::Issued,
    /// Whether they came from the cache (no server answered at start).
    from_cache: bool,
}

/// Trade the join token for the cluster CA, this node's credential and the
/// agent API's serving certificate, with the first known server that
/// answers.
async fn bootstrap(
    token: &skiff_common::jointoken::JoinToken,
    node: &str,
    ips: &[IpAddr],
    servers: &apiservers::Servers,
    cache: &cache::Cache,
) -> Result<Joined, AgentError> {
    let mut last = AgentError::Bootstrap {
        server: servers.current(),
        reason: "no api server is known".into(),
    };
    for server in servers.all() {
        let bad = |reason: String| AgentError::Bootstrap {
            server: server.clone(),
            reason,
        };
        let (http, base) = match trusted_http(token, &server).await {
            Ok(h) => h,
            Err(e @ AgentError::Untrusted { .. }) => return Err(e),
            Err(e) => {
                last = e;
                continue;
            }
        };
        // The credential is this node's own (`system:node:NAME`).
        let url = format!("{base}/skiff/v0/agent?node={node}");
        let resp = match http.get(url).bearer_auth(&token.secret).send().await {
            Ok(r) if r.status().is_success() => r,
            // A wrong token is not an outage: waiting will not fix it.
            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
                return Err(AgentError::Refused {
                    server,
                    status: r.status().to_string(),
                });
            }
            Ok(r) => {
                last = bad(format!("the server answered {}", r.status()));
                continue;
            }
            Err(e) => {
                last = bad(e.to_string());
                continue;
            }
        };
        let b: Bootstrap = resp.json().await.map_err(|e| bad(e.to_string()))?;
        let serving = match tls::request(&http, &base, &token.secret, node, ips).await {
            Ok(s) => s,
            Err(e) => {
                last = bad(e);
                continue;
            }
        };
        let client = apiservers::client(servers, &b.ca_cert, &b.token, cache)
            .await
            .map_err(bad)?;
        cache::Credentials::of(&b.ca_cert, &b.token, &serving).save(cache.dir());
        return Ok(Joined {
            client,
            serving,
            from_cache: false,
        });
    }
    Err(last)
}

/// Ask for a new serving certificate whenever the last one says, from the
/// first server that answers, and use it from the next connection on.
async fn renew_serving(
    token: skiff_common::jointoken::JoinToken,
    node: String,
    ips: Vec<IpAddr>,
    servers: apiservers::Servers,
    serving: tls::Serving,
    mut after: Duration,
) {
    loop {
        tokio::time::sleep(after).await;
        after = Duration::from_secs(60);
        for server in servers.all() {
            let Ok((http, base)) = trusted_http(&token, &server).await else {
                continue;
            };
            match tls::request(&http, &base, &token.secret, &node, &ips).await {
                Ok(issued) => match serving.replace(&issued) {
                    Ok(()) => {
                        tracing::info!("renewed the agent api's serving certificate");
                        after = Duration::from_secs(issued.renew_after_seconds.max(1));
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "renewed serving certificate unusable"),
                },
                Err(e) => {
                    tracing::debug!(%server, error = %e, "serving certificate renewal failed")
                }
            }
        }
    }
}

/// Join the cluster; when no server answers and the agent joined before,
/// resume with the credentials it kept (its pods start from the cache).
async fn join_or_resume(
    join: &skiff_common::jointoken::JoinToken,
    node: &str,
    ips: &[IpAddr],
    servers: &apiservers::Servers,
    cache: &cache::Cache,
) -> Result<Joined, AgentError> {
    let first = match bootstrap(join, node, ips, servers, cache).await {
        Ok(j) => return Ok(j),
        Err(e @ (AgentError::Refused { .. } | AgentError::Untrusted { .. })) => return Err(e),
        Err(e) => e,
    };
    let Some(kept) = cache::Credentials::load(cache.dir()) else {
        tracing::warn!(error = %first, "joining the cluster failed; retrying");
        return until_ok("joining the cluster", || {
            bootstrap(join, node, ips, servers, cache)
        })
        .await;
    };
    tracing::warn!(error = %first, "no api server answers: resuming from the cache of the last view");
    cache.go_offline();
    let client = apiservers::client(servers, &kept.ca_cert, &kept.token, cache)
        .await
        .map_err(AgentError::Config)?;
    Ok(Joined {
        client,
        serving: kept.serving(),
        from_cache: true,
    })
}

/// Run `step` until it succeeds: the API may be away (restarting, or every
/// server down); the agent waits for it rather than giving up. Only a refused
/// join token ends the wait (waiting will not fix it).
async fn until_ok<T, F, Fut>(what: &str, mut step: F) -> Result<T, AgentError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AgentError>>,
{
    let mut delay = Duration::from_millis(250);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e @ (AgentError::Refused { .. } | AgentError::Untrusted { .. })) => {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// The `kubernetes` Service's address and port, for every container's
/// `KUBERNETES_SERVICE_HOST` and `_PORT` (`None` if the cluster has none).
async fn api_service(client: &Client) -> Result<Option<(String, u16)>, AgentError> {
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), "default");
    let Some(svc) = api.get_opt("kubernetes").await? else {
        return Ok(None);
    };
    let spec = svc.spec.unwrap_or_default();
    let ip = spec.cluster_ip.unwrap_or_default();
    let port = spec
        .ports
        .unwrap_or_default()
        .first()
        .and_then(|p| u16::try_from(p.port).ok());
    Ok(port.filter(|_| !ip.is_empty()).map(|p| (ip, p)))
}

/// The cluster and Service CIDRs from `kube-system/skiff-cluster`.
async fn cluster_cidrs(client: &Client) -> Result<(Cidr, Cidr), AgentError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = api.get("skiff-cluster").await?;
    let data = cm.data.unwrap_or_default();
    let get = |k: &str| -> Result<Cidr, AgentError> {
        data.get(k)
            .ok_or_else(|| AgentError::Config(format!("kube-system/skiff-cluster has no {k}")))?
            .parse()
            .map_err(|e: NetError| AgentError::Config(e.to_string()))
    };
    Ok((get("clusterCIDR")?, get("serviceCIDR")?))
}

/// Run the agent until it fails.
pub async fn run(mut cfg: AgentConfig) -> Result<(), AgentError> {
    // Every path handed to containerd, runc and mounts must be absolute.
    cfg.data_dir = std::path::absolute(&cfg.data_dir)
        .map_err(|e| AgentError::Config(format!("data dir {}: {e}", cfg.data_dir.display())))?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| AgentError::Config(format!("data dir {}: {e}", cfg.data_dir.display())))?;
    let servers = apiservers::Servers::load(&cfg.server, Some(cfg.data_dir.join("servers")));
    let join = skiff_common::jointoken::JoinToken::parse(&cfg.token).map_err(|e| {
        AgentError::Untrusted {
            server: cfg.server.clone(),
            reason: e.to_string(),
        }
    })?;
    // From here on the token is its secret (the agent API checks it).
    cfg.token = join.secret.clone();
    let ips = vec![cfg.address];
    let cache = cache::Cache::open(&cfg.data_dir.join("cache"), servers.clone())
        .map_err(|e| AgentError::Config(format!("agent cache: {e}")))?;
    let Joined {
        client,
        serving,
        from_cache,
    } = join_or_resume(&join, &cfg.node_name, &ips, &servers, &cache).await?;
    let oci = containerd(&cfg).await;
    if oci.is_some() && !cfg.runtimes.iter().any(|r| r == crate::pod::RUNC_HANDLER) {
        cfg.runtimes.push(crate::pod::RUNC_HANDLER.into());
    }
    // Resumed from the cache, the Node exists: the heartbeat posts its
    // status once a server answers.
    if !from_cache {
        until_ok("registering the node", || node::register(&client, &cfg)).await?;
    }
    let listener = tokio::net::TcpListener::bind((cfg.address, cfg.port))
        .await
        .map_err(|source| AgentError::Listen {
            addr: format!("{}:{}", cfg.address, cfg.port),
            source,
        })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(cfg.port);
    let no_pressure = crate::eviction::Pressure::default();
    if !from_cache {
        until_ok("posting the node status", || {
            node::post_status(&client, &cfg, false, port, &no_pressure)
        })
        .await?;
    }
    let node_cidr: Cidr = until_ok("reading the pod CIDR", || node::pod_cidr(&client, &cfg))
        .await?
        .parse()
        .map_err(|e: NetError| AgentError::Config(e.to_string()))?;
    let (cluster_cidr, service_cidr) =
        until_ok("reading the cluster CIDRs", || cluster_cidrs(&client)).await?;
    // Recorded before any of it is made, so `skiff uninstall` finds it all.
    let footprint =
        crate::host::Footprint::of(&cfg.node_name, &cfg.bridge, cluster_cidr, service_cidr);
    crate::host::record(&cfg.data_dir, &footprint)?;
    let net = PodNetwork::prepare(NetConfig {
        bridge: cfg.bridge.clone(),
        node_cidr,
        cluster_cidr,
        service_cidr,
        state_dir: cfg.data_dir.join("ipam"),
        netns_prefix: footprint.netns_prefix.clone(),
    })
    .await?;
    {
        // Containers of pods this node still records keep running: their
        // workers adopt them once the pods are known, or remove them.
        let (keep, dir) = (net.known_netns(), cfg.data_dir.clone());
        let spare: std::collections::HashSet<String> = net.recorded().into_iter().collect();
        let removed = tokio::task::spawn_blocking(move || {
            crate::host::sweep(&footprint, &keep, &spare, &dir)
        })
        .await
        .unwrap_or_default();
        removed.log("start-up sweep removed what an earlier run of this node left");
    }
    let upstreams = crate::dns::forward::upstreams_in(&cfg.resolv_conf);
    tracing::info!(?upstreams, file = %cfg.resolv_conf.display(), "names outside the cluster go upstream");
    let dns = crate::dns::ClusterDns::new(CLUSTER_DOMAIN).forwarding_to(upstreams);
    let gateway = node_cidr.gateway().unwrap_or(std::net::Ipv4Addr::LOCALHOST);
    let activator_addr = std::net::SocketAddrV4::new(gateway, cfg.activator_port);
    let relay_addr = std::net::SocketAddrV4::new(gateway, cfg.api_relay_port);
    let relay_listener = tokio::net::TcpListener::bind(relay_addr)
        .await
        .map_err(|source| AgentError::Listen {
            addr: relay_addr.to_string(),
            source,
        })?;
    let api_service = until_ok("reading the kubernetes service", || api_service(&client)).await?;
    let host_ports = Arc::new(crate::proxy::hostports::HostPorts::default());
    let proxy = crate::proxy::Proxy::start(
        crate::proxy::RuleConfig {
            table: crate::proxy::table_name(&cfg.node_name),
            bridge: cfg.bridge.clone(),
            cluster_cidr,
            service_cidr,
            activator: Some(activator_addr),
            api_relay: Some(relay_addr),
            egress: cfg.pod_egress,
        },
        Arc::new(crate::proxy::NftCli),
        Some(dns.clone()),
        host_ports.clone(),
    )?;
    let dns_server = dns.clone().serve(std::net::SocketAddr::from((gateway, 53)));
    let warm = net.clone().keep_warm(cfg.warm_netns);
    let wasm = skiff_runtimes::wasm::WasmRuntime::new(&cfg.data_dir.join("compiled"))?;
    let stats = crate::stats::Stats::new(&cfg.node_name, oci.is_some());
    let mut runtimes: Vec<Arc<dyn skiff_runtimes::Runtime>> = vec![Arc::new(wasm)];
    if let Some(oci) = oci {
        runtimes.push(Arc::new(oci));
    }
    let (views_tx, views_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let metrics = metrics::AgentMetrics::new(stats.clone());
    let (pressure_tx, pressure_rx) = tokio::sync::watch::channel(Default::default());
    let imagefs = match &cfg.containerd {
        ContainerdMode::Own => cfg.data_dir.join("containerd"),
        ContainerdMode::Socket(_) => PathBuf::from("/var/lib/containerd"),
        ContainerdMode::Off => cfg.data_dir.join("images"),
    };
    let ctx = Arc::new(NodeCtx {
        client: client.clone(),
        node: cfg.node_name.clone(),
        host_ip: cfg.address.to_string(),
        net,
        runtimes,
        images: Images::new(client.clone(), cfg.data_dir.join("images"))?
            .with_upstream(cfg.upstream.clone()),
        logs: LogDir(cfg.data_dir.join("logs")),
        events: Recorder::new(client.clone(), cfg.node_name.clone()),
        cgroups: cfg.cgroups,
        host_cgroups: Arc::new(crate::cgroup::CgroupFs),
        volume_media: Arc::new(crate::host::mounts::Tmpfs),
        backoff_initial: cfg.backoff,
        backoff_max: Duration::from_secs(300),
        warm_sandboxes: Default::default(),
        pods_dir: cfg.data_dir.join("pods"),
        seccomp_dir: cfg.data_dir.join("seccomp"),
        probes: Arc::new(crate::pod::probes::NetChecker::new()),
        node_cpu_millis: std::thread::available_parallelism().map_or(1, |n| n.get()) as u64 * 1000,
        node_memory: node::memory_kib() * 1024,
        allow_privileged: cfg.allow_privileged,
        tasks: crate::pod::Tasks::default(),
        stats: stats.clone(),
        tokens: crate::pod::tokens::Tokens::kept_in(cfg.data_dir.join("tokens")),
        api_service,
        evictions: Default::default(),
        pressure: pressure_rx.clone(),
        host_ports,
        routes: views_rx.clone(),
        node_resolv: std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default(),
        dns: dns.clone(),
        cluster_ca: serving.ca_cert.clone(),
    });
    let local = local::LocalPods::new(ctx.clone(), cache.offline.clone());
    let activator = crate::activator::Activator::new(
        crate::activator::ActivatorConfig {
            addr: activator_addr,
            timeout: cfg.activator_timeout,
            max_held: cfg.activator_max_held,
        },
        client.clone(),
        (views_rx.clone(), proxy.wakers()),
        local.clone(),
        Recorder::new(client.clone(), cfg.node_name.clone()),
        stats.clone(),
        metrics.activator.clone(),
    );
    let eviction = crate::eviction::run(
        ctx.clone(),
        crate::eviction::Config {
            hard: cfg.eviction_hard.clone(),
            transition: cfg.eviction_transition,
            interval: EVICTION_INTERVAL,
            filesystems: crate::eviction::signals::Filesystems {
                nodefs: ctx.pods_dir.clone(),
                imagefs,
            },
        },
        pressure_tx,
    );
    let warm_sandboxes = crate::pod::keep_sandboxes_warm(ctx.clone());
    tokio::spawn(rotate_logs(
        ctx.logs.clone(),
        cfg.container_log_max_size,
        cfg.container_log_max_files,
    ));
    let pods = pods::Pods::default();
    let serving_slot = tls::Serving::new(&serving).map_err(AgentError::Config)?;
    let api_tls =
        tls::server_config(&serving.ca_cert, &serving_slot).map_err(AgentError::Config)?;
    tokio::spawn(renew_serving(
        join.clone(),
        cfg.node_name.clone(),
        ips.clone(),
        servers.clone(),
        serving_slot,
        Duration::from_secs(serving.renew_after_seconds.max(1)),
    ));
    let server = api::serve(
        listener,
        api_tls,
        cfg.token.clone(),
        ctx.clone(),
        pods.clone(),
        metrics,
    );
    let any = std::net::Ipv4Addr::UNSPECIFIED;
    let ingress_cfg = crate::ingress::RouterConfig {
        http: cfg.ingress_http.map(|p| (any, p).into()),
        https: cfg.ingress_https.map(|p| (any, p).into()),
        node: cfg.node_name.clone(),
    };
    let ingress_routes = ctx.routes.clone();
    tracing::info!(node = %cfg.node_name, port, "agent ready");
    skiff_common::notify::ready();
    let watchdog = async {
        match skiff_common::notify::watchdog_interval() {
            Some(every) => loop {
                skiff_common::notify::notify("WATCHDOG=1");
                tokio::time::sleep(every).await;
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = node::heartbeat(client.clone(), cfg.clone(), port, pressure_rx) => Ok(()),
        () = eviction => Ok(()),
        () = apiservers::follow(client.clone(), servers.clone()) => Ok(()),
        () = cache.run() => Ok(()),
        r = pods::watch(ctx, pods, local.clone()) => r,
        () = local.hand_over() => Ok(()),
        () = proxy.run(client.clone(), stats.clone(), views_tx) => Ok(()),
        () = crate::netpol::run(client.clone(), cfg.node_name.clone(), Arc::new(crate::proxy::NftCli)) => Ok(()),
        () = crate::ingress::run(client.clone(), ingress_cfg, ingress_routes) => Ok(()),
        () = stats.clone().run_sampler() => Ok(()),
        r = activator.serve() => r.map_err(|source| AgentError::Listen { addr: activator_addr.to_string(), source }),
        r = crate::net::routes::run(client.clone(), cfg.node_name.clone()) => r.map_err(AgentError::from),
        r = dns_server => r.map_err(AgentError::from),
        r = relay::serve(relay_listener, servers.clone()) => r.map_err(|source| AgentError::Listen { addr: relay_addr.to_string(), source }),
        () = warm => Ok(()),
        () = watchdog => Ok(()),
        () = warm_sandboxes => Ok(()),
        r = server => r.map_err(|source| AgentError::Listen { addr: format!("{}:{port}", cfg.address), source }),
    }
}
