//! The pod network: a bridge per node with the node's pod CIDR, and per pod a
//! network namespace joined to the bridge by a veth pair, with an address from
//! the node's range and a default route via the bridge.
//!
//! **Before any pod is attached, the host has `unreachable` routes for the whole
//! cluster CIDR and the Service CIDR, with only this node's CIDR routed (more
//! specifically) onto the bridge: no packet to a pod or Service address can
//! leave the machine.**

mod cidr;
mod ipam;
mod link;
pub mod netns;

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use fnv::short_hash;

pub use cidr::Cidr;
pub use ipam::Ipam;

/// Errors of the pod network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("network namespace {name}: {reason}")]
    Netns { name: String, reason: String },
    #[error("netlink: {op}: {reason}")]
    Netlink { op: String, reason: String },
    #[error("no free pod address in {0}")]
    Exhausted(String),
}

impl NetError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> NetError {
        NetError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The settings of one node's pod network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The bridge's name (`skiff0`).
    pub bridge: String,
    /// This node's pod CIDR (from `Node.spec.podCIDR`).
    pub node_cidr: Cidr,
    /// Every pod address of the cluster: routed `unreachable` except this node's.
    pub cluster_cidr: Cidr,
    /// Every Service address: routed `unreachable`.
    pub service_cidr: Cidr,
    /// Where address records live.
    pub state_dir: PathBuf,
    /// Prefix of this node's namespace names, so two agents on one host never
    /// touch each other's.
    pub netns_prefix: String,
}

/// A pod's place on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
}

/// The node's pod network.
#[derive(Clone)]
pub struct PodNetwork {
    cfg: NetConfig,
    ipam: Ipam,
    host: rtnetlink::Handle,
    bridge_index: u32,
}

impl PodNetwork {
    /// Install the unreachable routes, then the bridge with the node's gateway
    /// address. Idempotent: an agent restart adopts what is there.
    pub async fn prepare(cfg: NetConfig) -> Result<PodNetwork, NetError> {
        let gateway = cfg
            .node_cidr
            .gateway()
            .ok_or_else(|| NetError::Config(format!("pod CIDR {} is too small", cfg.node_cidr)))?;
        if !cfg.cluster_cidr.contains(cfg.node_cidr.base)
            || cfg.node_cidr.prefix <= cfg.cluster_cidr.prefix
        {
            return Err(NetError::Config(format!(
                "node CIDR {} must be a smaller block inside the cluster CIDR {}",
                cfg.node_cidr, cfg.cluster_cidr
            )));
        }
        let host = link::connect()?;
        link::unreachable(&host, cfg.cluster_cidr).await?;
        link::unreachable(&host, cfg.service_cidr).await?;
        let bridge_index = link::bridge(&host, &cfg.bridge, gateway, cfg.node_cidr.prefix).await?;
        let ipam = Ipam::new(
            cfg.state_dir.join(cfg.node_cidr.base.to_string()),
            cfg.node_cidr,
        )?;
        tracing::info!(bridge = %cfg.bridge, cidr = %cfg.node_cidr, "pod network ready");
        Ok(PodNetwork {
            cfg,
            ipam,
            host,
            bridge_index,
        })
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// The namespace name of the pod with this uid.
    pub fn netns_name(&self, uid: &str) -> String {
        format!("{}{uid}", self.cfg.netns_prefix)
    }

    /// The host-side and temporary pod-side veth names of a pod (≤ 15 bytes).
    fn veth_names(&self, uid: &str) -> (String, String) {
        let h = short_hash(&format!("{}/{uid}", self.cfg.netns_prefix));
        (format!("sk{h}"), format!("sp{h}"))
    }

    /// Give the pod with this uid its namespace, veth and address (or adopt what
    /// it already has).
    pub async fn attach(&self, uid: &str) -> Result<Attachment, NetError> {
        let name = self.netns_name(uid);
        let ip = self.ipam.allocate(uid)?;
        let result = self.plumb(uid, &name, ip).await;
        if result.is_err() {
            let _ = self.detach(uid).await;
        }
        result
    }

    async fn plumb(&self, uid: &str, name: &str, ip: Ipv4Addr) -> Result<Attachment, NetError> {
        let path = netns::create(name)?;
        let (host_end, pod_end) = self.veth_names(uid);
        let configured = self.configured(&path, ip)?;
        if !configured || link::index(&self.host, &host_end).await?.is_none() {
            let ns = std::fs::File::open(&path)
                .map_err(|e| NetError::io(format!("open {}", path.display()), e))?;
            link::veth(
                &self.host,
                &host_end,
                &pod_end,
                self.bridge_index,
                ns.as_raw_fd(),
            )
            .await?;
            let gateway = self
                .cfg
                .node_cidr
                .gateway()
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            let prefix = self.cfg.node_cidr.prefix;
            netns::run_in(&path, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(|e| NetError::io("netlink runtime", e))?;
                rt.block_on(async {
                    let h = link::connect()?;
                    link::configure_pod(&h, &pod_end, ip, prefix, gateway).await
                })
            })??;
        }
        Ok(Attachment { netns: path, ip })
    }

    /// Whether the namespace already has eth0 with `ip` (an agent restart).
    fn configured(&self, path: &Path, ip: Ipv4Addr) -> Result<bool, NetError> {
        netns::run_in(path, move || std::net::UdpSocket::bind((ip, 0)).is_ok())
    }

    /// Remove the pod's veth, namespace and address. Missing pieces are fine.
    pub async fn detach(&self, uid: &str) -> Result<(), NetError> {
        let (host_end, _) = self.veth_names(uid);
        link::delete(&self.host, &host_end).await?;
        netns::delete(&self.netns_name(uid))?;
        self.ipam.release(uid);
        Ok(())
    }

    /// Pods with an address on record (for clean-up after a restart).
    pub fn recorded(&self) -> Vec<String> {
        self.ipam.all().into_iter().map(|(_, o)| o).collect()
    }
}

/// Open a listening TCP socket inside a namespace (it stays there).
pub fn listen_in(
    netns: &Path,
    addr: std::net::SocketAddr,
) -> Result<std::net::TcpListener, NetError> {
    netns::run_in(netns, move || std::net::TcpListener::bind(addr))?
        .map_err(|e| NetError::io(format!("listen on {addr}"), e))
}

mod fnv {
    //! A short stable name fragment (FNV-1a, 12 hex digits).
    pub fn short_hash(s: &str) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{:012x}", h & 0xffff_ffff_ffff)
    }
}
