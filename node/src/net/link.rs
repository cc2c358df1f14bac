//! rtnetlink operations: links, addresses and routes, on the host or (through a
//! connection opened inside it) in a pod's namespace.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{Cidr, NetError};

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const ESRCH: i32 = 3;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = op.into();
    move |e| NetError::Netlink {
        op,
        reason: e.to_string(),
    }
}

/// Treat "already exists" as done.
fn exists_ok(r: Result<(), rtnetlink::Error>, op: &str) -> Result<(), NetError> {
    match r {
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        r => r.map_err(nl(op)),
    }
}

/// Treat "no such thing" as done.
fn missing_ok(r: Result<(), rtnetlink::Error>, op: &str) -> Result<(), NetError> {
    match r {
        Err(e) if matches!(errno(&e), Some(ENODEV | ESRCH)) => Ok(()),
        r => r.map_err(nl(op)),
    }
}

/// The receive buffer of a netlink connection. The kernel drops a reply that
/// does not fit (and the request waiting for it never hears back), so the
/// agent's socket gets room for far more replies than it has requests in
/// flight (each costs about 1 KiB of buffer, bookkeeping included).
const RECEIVE_BUFFER: usize = 4 << 20;

/// A connection to the kernel in the calling thread's network namespace.
pub fn connect() -> Result<Handle, NetError> {
    use rtnetlink::sys::AsyncSocket;
    let (mut conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetError::Netlink {
        op: "open netlink socket".into(),
        reason: e.to_string(),
    })?;
    let socket = conn.socket_mut().socket_ref();
    // Past `net.core.rmem_max` only with CAP_NET_ADMIN; the plain request
    // (capped by the kernel) is the fallback.
    if nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::RcvBufForce,
        &RECEIVE_BUFFER,
    )
    .is_err()
        && let Err(e) = socket.set_rx_buf_sz(RECEIVE_BUFFER)
    {
        tracing::debug!(error = %e, "cannot grow the netlink receive buffer");
    }
    tokio::spawn(conn);
    Ok(handle)
}

/// The index of the link `name`, if it exists.
pub async fn index(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

/// `ip route replace unreachable CIDR`.
pub async fn unreachable(h: &Handle, cidr: Cidr) -> Result<(), NetError> {
    let route = to(cidr).kind(RouteType::Unreachable).build();
    replace(h, route, format!("route unreachable {cidr}")).await
}

/// A route message builder for `cidr`.
fn to(cidr: Cidr) -> RouteMessageBuilder<Ipv4Addr> {
    RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(cidr.base, cidr.prefix)
}

/// Add `route`, replacing one to the same destination.
async fn replace(
    h: &Handle,
    route: rtnetlink::packet_route::route::RouteMessage,
    op: String,
) -> Result<(), NetError> {
    h.route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(nl(op))
}

/// Make every address of `cidr` local to this host (a `local` route in the
/// `local` table, as `ip route add local CIDR dev lo table local`): the host's
/// own connections to Service addresses are then delivered locally, where the
/// proxy's output rules translate them, and nothing for `cidr` is ever routed
/// off the host.
pub async fn local_route(h: &Handle, cidr: Cidr) -> Result<(), NetError> {
    use rtnetlink::packet_route::route::RouteScope;
    let lo = index(h, "lo").await?.unwrap_or(1);
    let route = to(cidr)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .table_id(255)
        .output_interface(lo)
        .build();
    replace(h, route, format!("route local {cidr} table local")).await
}

/// Route `cidr` via `gateway` (another node's address): host-gw.
pub async fn route_via(h: &Handle, cidr: Cidr, gateway: Ipv4Addr) -> Result<(), NetError> {
    let route = to(cidr).gateway(gateway).build();
    replace(h, route, format!("route {cidr} via {gateway}")).await
}

/// Remove the route of `cidr` via `gateway` (if it is there).
pub async fn route_del(h: &Handle, cidr: Cidr, gateway: Ipv4Addr) -> Result<(), NetError> {
    let route = to(cidr).gateway(gateway).build();
    missing_ok(
        h.route().del(route).execute().await,
        &format!("delete route {cidr} via {gateway}"),
    )
}

/// The bridge `name`, up, with `gateway/prefix` on it (created if missing).
pub async fn bridge(
    h: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<u32, NetError> {
    if index(h, name).await?.is_none() {
        exists_ok(
            h.link().add(LinkBridge::new(name).build()).execute().await,
            &format!("add bridge {name}"),
        )?;
    }
    let idx = index(h, name)
        .await?
        .ok_or_else(|| NetError::Config(format!("bridge {name} vanished")))?;
    exists_ok(
        h.address()
            .add(idx, IpAddr::V4(gateway), prefix)
            .execute()
            .await,
        &format!("address {gateway}/{prefix} on {name}"),
    )?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {name} up")))?;
    Ok(idx)
}

/// Delete the link `name` if it exists.
pub async fn delete(h: &Handle, name: &str) -> Result<(), NetError> {
    match index(h, name).await? {
        Some(idx) => missing_ok(
            h.link().del(idx).execute().await,
            &format!("delete link {name}"),
        ),
        None => Ok(()),
    }
}

/// A veth pair `host`/`peer`: `host` on the bridge and up, `peer` moved into the
/// namespace behind `netns_fd`.
pub async fn veth(
    h: &Handle,
    host: &str,
    peer: &str,
    bridge: u32,
    netns_fd: std::os::fd::RawFd,
) -> Result<(), NetError> {
    delete(h, host).await?;
    h.link()
        .add(LinkVeth::new(host, peer).build())
        .execute()
        .await
        .map_err(nl(format!("add veth {host}")))?;
    let peer_idx = index(h, peer)
        .await?
        .ok_or_else(|| NetError::Config(format!("veth peer {peer} vanished")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(peer_idx)
                .setns_by_fd(netns_fd)
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("move {peer} into the pod namespace")))?;
    let host_idx = index(h, host)
        .await?
        .ok_or_else(|| NetError::Config(format!("veth {host} vanished")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(host_idx)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("attach {host} to the bridge")))?;
    // Hairpin: a pod reaching itself through its Service is routed back out
    // of the port it came in on, which a bridge port refuses unless asked.
    h.link()
        .set_port(LinkBridgePort::new(host_idx).hairpin(true).build())
        .execute()
        .await
        .map_err(nl(format!("hairpin mode on {host}")))
}

/// Inside a pod namespace: `lo` up, `peer` renamed `eth0` with `ip/prefix`, up,
/// default route via `gateway`.
pub async fn configure_pod(
    h: &Handle,
    peer: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<(), NetError> {
    if let Some(lo) = index(h, "lo").await? {
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl("set lo up"))?;
    }
    let idx = match index(h, peer).await? {
        Some(i) => {
            h.link()
                .set(
                    LinkUnspec::new_with_index(i)
                        .name("eth0".to_string())
                        .build(),
                )
                .execute()
                .await
                .map_err(nl("rename eth0"))?;
            i
        }
        None => index(h, "eth0")
            .await?
            .ok_or_else(|| NetError::Config("the pod namespace has no interface".into()))?,
    };
    exists_ok(
        h.address().add(idx, IpAddr::V4(ip), prefix).execute().await,
        &format!("address {ip}/{prefix} on eth0"),
    )?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl("set eth0 up"))?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .build();
    exists_ok(
        h.route().add(route).execute().await,
        &format!("default route via {gateway}"),
    )
}

/// Forget what the host's neighbour table holds for `ip` on the bridge: a pod
/// address used before keeps its old pod's MAC as a stale entry, and the first
/// packets to the new pod would go to that MAC (lost for seconds, until the
/// kernel re-resolves), so every address is forgotten when it is given out
/// and when it is freed. Nothing to forget is fine.
///
/// One delete by (bridge, address), as `ip neigh del IP dev BRIDGE`: no dump
/// of the table, which with a thousand pods is a thousand entries per pod
/// start, and which the kernel refuses (EBUSY) while another dump runs on the
/// same socket.
pub async fn forget_neighbour(h: &Handle, bridge: u32, ip: Ipv4Addr) -> Result<(), NetError> {
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourMessage,
    };
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = bridge;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    match h.neighbours().del(msg).execute().await {
        Err(e) if matches!(errno(&e), Some(ENOENT | ENODEV)) => Ok(()),
        r => r.map_err(nl(format!("forget neighbour {ip}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn neighbours_on(h: &Handle, bridge: u32) -> Vec<Ipv4Addr> {
        use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
        let mut dump = h.neighbours().get().execute();
        let mut found = Vec::new();
        while let Some(m) = dump.try_next().await.expect("dump") {
            for a in &m.attributes {
                if let NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) = a
                    && m.header.ifindex == bridge
                {
                    found.push(*d);
                }
            }
        }
        found.sort();
        found
    }

    /// On the real kernel, in a namespace of the test's own (root only; as
    /// another user there is no namespace to make, and the fake covers the
    /// rest): one address's entry goes, its neighbour's stays, and forgetting
    /// what is not there is fine.
    #[test]
    fn forgetting_a_neighbour_deletes_that_entry_alone() {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the effective user.
        if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            eprintln!("skipped: needs root for a network namespace");
            return;
        }
        let name = format!("sktest-neigh-{}", std::process::id());
        let (path, _) = super::super::netns::create(&name).expect("netns");
        let result = super::super::netns::run_in(&path, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let h = connect().expect("netlink");
                let gw = Ipv4Addr::new(10, 77, 0, 1);
                let br = bridge(&h, "sktn0", gw, 24).await.expect("bridge");
                let (a, b) = (Ipv4Addr::new(10, 77, 0, 5), Ipv4Addr::new(10, 77, 0, 6));
                for (ip, last) in [(a, 5u8), (b, 6u8)] {
                    h.neighbours()
                        .add(br, IpAddr::V4(ip))
                        .link_layer_address(&[2, 0, 0, 0, 0, last])
                        .execute()
                        .await
                        .expect("add neighbour");
                }
                assert_eq!(neighbours_on(&h, br).await, vec![a, b]);
                forget_neighbour(&h, br, a).await.expect("forget");
                assert_eq!(neighbours_on(&h, br).await, vec![b]);
                forget_neighbour(&h, br, a).await.expect("forget again");
                forget_neighbour(&h, br, Ipv4Addr::new(10, 77, 0, 9))
                    .await
                    .expect("never there");
            });
        });
        super::super::netns::delete(&name).expect("delete netns");
        result.expect("in the namespace");
    }
}
