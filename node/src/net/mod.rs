//! The pod network: a bridge per node with the node's pod CIDR, and per pod a
//! network namespace joined to the bridge by a veth pair, with an address from
//! the node's range and a default route via the bridge.
//!
//! **Before any pod is attached, the host has `unreachable` routes for the whole
//! cluster CIDR and the Service CIDR, with only this node's CIDR routed (more
//! specifically) onto the bridge: no packet to a pod or Service address can
//! leave the machine.**

mod cidr;
pub mod host;
mod ipam;
pub(crate) mod link;
pub mod netns;
pub mod resolv;
pub mod routes;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

pub use fnv::short_hash;

pub use cidr::Cidr;
pub use host::{NetHost, Rtnetlink};
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
    #[error("{op}: no answer from the host in {} s", after.as_secs())]
    NoAnswer {
        op: &'static str,
        after: std::time::Duration,
    },
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
    host: Arc<dyn NetHost>,
    bridge_index: u32,
    /// Addresses whose namespace is built and waiting for a pod.
    warm: Arc<std::sync::Mutex<Vec<Ipv4Addr>>>,
    /// Pods whose network is being wired or removed at once (see [`PLUMBING`]).
    plumbing: Arc<tokio::sync::Semaphore>,
}

impl PodNetwork {
    /// Install the unreachable routes, then the bridge with the node's gateway
    /// address. Idempotent: an agent restart adopts what is there.
    pub async fn prepare(cfg: NetConfig) -> Result<PodNetwork, NetError> {
        let host: Arc<dyn NetHost> = Arc::new(Rtnetlink::connect()?);
        neighbour_room(cfg.node_cidr.size());
        PodNetwork::prepare_on(cfg, host).await
    }

    /// [`PodNetwork::prepare`] on a given host (the real one or a fake).
    pub async fn prepare_on(
        cfg: NetConfig,
        host: Arc<dyn NetHost>,
    ) -> Result<PodNetwork, NetError> {
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
        host.unreachable_route(cfg.cluster_cidr).await?;
        host.unreachable_route(cfg.service_cidr).await?;
        host.local_route(cfg.service_cidr).await?;
        let bridge_index = host
            .bridge(&cfg.bridge, gateway, cfg.node_cidr.prefix)
            .await?;
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
            warm: Arc::default(),
            plumbing: Arc::new(tokio::sync::Semaphore::new(PLUMBING)),
        })
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// The host operations this network runs on.
    pub fn host(&self) -> Arc<dyn NetHost> {
        self.host.clone()
    }

    /// The namespace name of the pod address `ip`.
    pub fn netns_name(&self, ip: Ipv4Addr) -> String {
        format!(
            "{}{}",
            self.cfg.netns_prefix,
            ip.to_string().replace('.', "-")
        )
    }

    /// The host-side and temporary pod-side veth names for `ip` (≤ 15 bytes).
    fn veth_names(&self, ip: Ipv4Addr) -> (String, String) {
        let h = short_hash(&format!("{}/{ip}", self.cfg.netns_prefix));
        (format!("sk{h}"), format!("sp{h}"))
    }

    /// Give the pod with this uid its namespace, veth and address: the one it
    /// already has (after a restart), a warm one, or a new one.
    pub async fn attach(&self, uid: &str) -> Result<Attachment, NetError> {
        if let Some(ip) = self.ipam.held_by(uid) {
            return self.plumb_or_undo(uid, ip).await;
        }
        let warm = self.warm.lock().expect("warm pool").pop();
        if let Some(ip) = warm
            && self.ipam.reassign(ip, WARM, uid)
        {
            return Ok(Attachment {
                netns: netns::path(&self.netns_name(ip)),
                ip,
            });
        }
        let ip = self.ipam.allocate(uid)?;
        self.plumb_or_undo(uid, ip).await
    }

    async fn plumb_or_undo(&self, owner: &str, ip: Ipv4Addr) -> Result<Attachment, NetError> {
        let result = self.plumb(ip).await;
        if result.is_err() {
            let _ = self.remove(ip).await;
            self.ipam.release(owner);
        }
        result
    }

    /// Wire `ip`'s namespace and veth; a host that does not answer in
    /// [`HOST_DEADLINE`] is an error (the caller undoes and retries), never a
    /// pod start that waits forever.
    async fn plumb(&self, ip: Ipv4Addr) -> Result<Attachment, NetError> {
        let _turn = self.plumbing.acquire().await;
        answered("plumb the pod network", self.plumb_steps(ip)).await
    }

    async fn plumb_steps(&self, ip: Ipv4Addr) -> Result<Attachment, NetError> {
        self.host.forget_neighbour(self.bridge_index, ip).await?;
        let (n, host) = (self.netns_name(ip), self.host.clone());
        let (path, new) = blocking(move || host.create_netns(&n)).await?;
        let (host_end, pod_end) = self.veth_names(ip);
        let (p, host) = (path.clone(), self.host.clone());
        // A namespace just made is empty; one that existed is checked (adoption).
        let configured = !new && blocking(move || host.netns_has_address(&p, ip)).await?;
        if !configured || self.host.link_index(&host_end).await?.is_none() {
            self.host
                .add_veth(&host_end, &pod_end, self.bridge_index, &path)
                .await?;
            let gateway = self
                .cfg
                .node_cidr
                .gateway()
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            self.host
                .configure_pod(&path, &pod_end, ip, self.cfg.node_cidr.prefix, gateway)
                .await?;
        }
        Ok(Attachment { netns: path, ip })
    }

    /// Remove the veth and namespace of `ip`. Missing pieces are fine.
    async fn remove(&self, ip: Ipv4Addr) -> Result<(), NetError> {
        let _turn = self.plumbing.acquire().await;
        answered("remove the pod network", self.remove_steps(ip)).await
    }

    async fn remove_steps(&self, ip: Ipv4Addr) -> Result<(), NetError> {
        let (host_end, _) = self.veth_names(ip);
        self.host.delete_link(&host_end).await?;
        self.host.forget_neighbour(self.bridge_index, ip).await?;
        let name = self.netns_name(ip);
        self.host.remove_resolv(&name);
        let host = self.host.clone();
        blocking(move || host.delete_netns(&name)).await
    }

    /// Remove the pod's veth, namespace and address (whatever of it exists).
    pub async fn detach(&self, uid: &str) -> Result<(), NetError> {
        if let Some(ip) = self.ipam.held_by(uid) {
            self.remove(ip).await?;
        }
        self.ipam.release(uid);
        Ok(())
    }

    /// The namespaces built ahead of demand and not yet claimed.
    pub fn warm_paths(&self) -> Vec<PathBuf> {
        self.warm
            .lock()
            .expect("warm pool")
            .iter()
            .map(|ip| netns::path(&self.netns_name(*ip)))
            .collect()
    }

    /// The namespaces of every address on record (pods' and warm ones): what
    /// the start-up sweep keeps.
    pub fn known_netns(&self) -> std::collections::HashSet<String> {
        self.ipam
            .all()
            .into_iter()
            .map(|(ip, _)| self.netns_name(ip))
            .collect()
    }

    /// Pods with an address on record (for clean-up after a restart).
    pub fn recorded(&self) -> Vec<String> {
        self.ipam
            .all()
            .into_iter()
            .map(|(_, o)| o)
            .filter(|o| o != WARM)
            .collect()
    }

    /// Keep `n` namespaces wired and addressed ahead of demand, so a pod start
    /// only claims one (creating a network namespace costs the kernel tens of
    /// milliseconds). Warm ones left by an earlier run are rebuilt. Runs until
    /// the task is dropped.
    pub async fn keep_warm(self, n: usize) {
        for (ip, owner) in self.ipam.all() {
            if owner == WARM {
                let _ = self.remove(ip).await;
                self.ipam.forget(ip);
            }
        }
        loop {
            while self.warm.lock().expect("warm pool").len() < n {
                let made = match self.ipam.claim_new(WARM) {
                    Ok(ip) => match self.plumb(ip).await {
                        Ok(_) => Ok(ip),
                        Err(e) => {
                            let _ = self.remove(ip).await;
                            self.ipam.forget(ip);
                            Err(e)
                        }
                    },
                    Err(e) => Err(e),
                };
                match made {
                    Ok(ip) => self.warm.lock().expect("warm pool").push(ip),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot warm a pod namespace");
                        break;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The owner of pre-built namespaces no pod has claimed yet.
const WARM: &str = "warm";

/// Make room for every pod of the node on one bridge: in the host's neighbour
/// (ARP) table (defaults: soft 512, hard 1024 entries), and in the per-CPU
/// receive backlog (default 1000 packets), which a broadcast flooded to a
/// thousand veths overflows, dropping ARP requests. Limits are only raised.
fn neighbour_room(addresses: u64) {
    for (knob, want) in [
        ("ipv4/neigh/default/gc_thresh2", addresses + 512),
        ("ipv4/neigh/default/gc_thresh3", 2 * addresses + 1024),
        ("core/netdev_max_backlog", 2 * addresses + 1000),
    ] {
        let path = format!("/proc/sys/net/{knob}");
        let current: u64 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX);
        if current < want {
            match std::fs::write(&path, want.to_string()) {
                Ok(()) => tracing::info!(
                    knob,
                    from = current,
                    to = want,
                    "raised the neighbour table limit"
                ),
                Err(e) => {
                    tracing::warn!(knob, error = %e, "cannot raise the neighbour table limit")
                }
            }
        }
    }
}

/// How many pods' networks are wired or removed at once. Each has one netlink
/// request in flight on the agent's socket at a time, so this bounds the
/// replies the kernel queues there (a thousand pods started together once
/// overflowed it, and the lost replies left pods waiting for good); the
/// kernel serialises these changes anyway.
const PLUMBING: usize = 16;

/// How long wiring or removing one pod's network may take, once its turn has
/// come. The kernel answers
/// in milliseconds; a reply lost on the netlink socket would otherwise leave
/// the pod in ContainerCreating for good.
pub const HOST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

async fn answered<T>(
    op: &'static str,
    work: impl std::future::Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    tokio::time::timeout(HOST_DEADLINE, work)
        .await
        .unwrap_or(Err(NetError::NoAnswer {
            op,
            after: HOST_DEADLINE,
        }))
}

/// Run namespace work (which spawns and joins threads) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NetError::Config(format!("namespace task: {e}")))?
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
