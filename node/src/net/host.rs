//! The host side effects of the pod network behind one narrow trait:
//! namespaces (create, delete, enter, the resolv.conf beside them), links
//! (bridge, veth), addresses and routes (inside a pod's namespace and the
//! host's unreachable/local routes), and neighbours. [`Rtnetlink`] is the
//! real one; tests use a recording fake.
//!
//! **Every operation is idempotent: creating what exists adopts it, removing
//! what is missing succeeds, so an agent restart and a clean-up after a failed
//! step may repeat any of them.**

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use super::{Cidr, NetError, link, netns, resolv};

/// The pod network's host operations.
pub trait NetHost: Send + Sync {
    /// Create the namespace `name`, or adopt it; its path and whether it is new.
    fn create_netns(&self, name: &str) -> Result<(PathBuf, bool), NetError>;
    /// Remove the namespace `name` (a missing one is fine).
    fn delete_netns(&self, name: &str) -> Result<(), NetError>;
    /// Whether the namespace at `path` already has address `ip` (adoption).
    fn netns_has_address(&self, path: &Path, ip: Ipv4Addr) -> Result<bool, NetError>;
    /// Move the calling thread into the namespace at `path`.
    fn enter_netns(&self, path: &Path) -> Result<(), NetError>;
    /// Write the resolv.conf of namespace `name`.
    fn write_resolv(&self, name: &str, text: &str) -> Result<(), NetError>;
    /// Remove the resolv.conf of namespace `name` (a missing one is fine).
    fn remove_resolv(&self, name: &str);

    /// The host's `unreachable` route for `cidr`.
    fn unreachable_route(&self, cidr: Cidr) -> BoxFuture<'_, Result<(), NetError>>;
    /// The host's `local` route for `cidr` (Service addresses are delivered here).
    fn local_route(&self, cidr: Cidr) -> BoxFuture<'_, Result<(), NetError>>;
    /// The bridge `name` with the gateway address, up; its index.
    fn bridge<'a>(
        &'a self,
        name: &'a str,
        gateway: Ipv4Addr,
        prefix: u8,
    ) -> BoxFuture<'a, Result<u32, NetError>>;
    /// The index of the host link `name`, if it exists.
    fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u32>, NetError>>;
    /// A veth pair: `host_end` on the bridge, `pod_end` moved into `netns`.
    fn add_veth<'a>(
        &'a self,
        host_end: &'a str,
        pod_end: &'a str,
        bridge: u32,
        netns: &'a Path,
    ) -> BoxFuture<'a, Result<(), NetError>>;
    /// Inside `netns`: `pod_end` renamed eth0 with `ip/prefix`, up, default
    /// route via `gateway`, loopback up.
    fn configure_pod<'a>(
        &'a self,
        netns: &'a Path,
        pod_end: &'a str,
        ip: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<(), NetError>>;
    /// Remove the host link `name` (a missing one is fine).
    fn delete_link<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), NetError>>;
    /// Forget the bridge's neighbour (ARP) entry of `ip`.
    fn forget_neighbour(&self, bridge: u32, ip: Ipv4Addr) -> BoxFuture<'_, Result<(), NetError>>;
}

/// The real host: rtnetlink in the agent's namespace, bind-mounted namespaces
/// under `/run/netns`, resolv.conf under `/etc/netns`.
pub struct Rtnetlink {
    handle: rtnetlink::Handle,
}

impl Rtnetlink {
    /// Open the netlink connection (on the calling runtime).
    pub fn connect() -> Result<Rtnetlink, NetError> {
        Ok(Rtnetlink {
            handle: link::connect()?,
        })
    }
}

impl NetHost for Rtnetlink {
    fn create_netns(&self, name: &str) -> Result<(PathBuf, bool), NetError> {
        netns::create(name)
    }

    fn delete_netns(&self, name: &str) -> Result<(), NetError> {
        netns::delete(name)
    }

    fn netns_has_address(&self, path: &Path, ip: Ipv4Addr) -> Result<bool, NetError> {
        netns::run_in(path, move || std::net::UdpSocket::bind((ip, 0)).is_ok())
    }

    fn enter_netns(&self, path: &Path) -> Result<(), NetError> {
        netns::enter(path)
    }

    fn write_resolv(&self, name: &str, text: &str) -> Result<(), NetError> {
        resolv::write(name, text)
    }

    fn remove_resolv(&self, name: &str) {
        resolv::remove(name)
    }

    fn unreachable_route(&self, cidr: Cidr) -> BoxFuture<'_, Result<(), NetError>> {
        Box::pin(link::unreachable(&self.handle, cidr))
    }

    fn local_route(&self, cidr: Cidr) -> BoxFuture<'_, Result<(), NetError>> {
        Box::pin(link::local_route(&self.handle, cidr))
    }

    fn bridge<'a>(
        &'a self,
        name: &'a str,
        gateway: Ipv4Addr,
        prefix: u8,
    ) -> BoxFuture<'a, Result<u32, NetError>> {
        Box::pin(link::bridge(&self.handle, name, gateway, prefix))
    }

    fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u32>, NetError>> {
        Box::pin(link::index(&self.handle, name))
    }

    fn add_veth<'a>(
        &'a self,
        host_end: &'a str,
        pod_end: &'a str,
        bridge: u32,
        netns: &'a Path,
    ) -> BoxFuture<'a, Result<(), NetError>> {
        Box::pin(async move {
            let ns = std::fs::File::open(netns)
                .map_err(|e| NetError::io(format!("open {}", netns.display()), e))?;
            link::veth(&self.handle, host_end, pod_end, bridge, ns.as_raw_fd()).await
        })
    }

    fn configure_pod<'a>(
        &'a self,
        netns: &'a Path,
        pod_end: &'a str,
        ip: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<(), NetError>> {
        let (p, pod_end) = (netns.to_path_buf(), pod_end.to_string());
        Box::pin(super::blocking(move || {
            netns::run_in(&p, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(|e| NetError::io("netlink runtime", e))?;
                rt.block_on(async {
                    let h = link::connect()?;
                    link::configure_pod(&h, &pod_end, ip, prefix, gateway).await
                })
            })?
        }))
    }

    fn delete_link<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), NetError>> {
        Box::pin(link::delete(&self.handle, name))
    }

    fn forget_neighbour(&self, bridge: u32, ip: Ipv4Addr) -> BoxFuture<'_, Result<(), NetError>> {
        Box::pin(link::forget_neighbour(&self.handle, bridge, ip))
    }
}
