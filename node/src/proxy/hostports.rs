//! `hostPort`s of this node's pods: claimed by a pod's worker once the pod
//! has its address, released when it stops, and programmed by the proxy as
//! DNAT rules from the node's addresses to the pod (what the CNI `portmap`
//! plugin does for the kubelet).
//!
//! **Two pods never hold the same port, protocol and host address (an
//! unset `hostIP` overlaps every address); a pod on the node's own network
//! holds its ports without a rule.**

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::PodSpec;
use tokio::sync::Notify;

/// One `hostPort` of one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// `tcp`, `udp` or `sctp`.
    pub proto: &'static str,
    /// `hostIP`: `None` for every address of the node.
    pub host_ip: Option<Ipv4Addr>,
    pub port: u16,
    /// Where it goes: the pod's address (`None` on the node's network).
    pub pod_ip: Option<Ipv4Addr>,
    pub container_port: u16,
    /// `namespace/name`, for messages.
    pub pod: String,
}

impl HostPort {
    fn overlaps(&self, other: &HostPort) -> bool {
        self.proto == other.proto
            && self.port == other.port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

/// The `hostPort`s a pod asks for (every container's, sidecars' included);
/// `pod_ip` is `None` for a pod on the node's network.
pub fn of(spec: &PodSpec, pod: &str, pod_ip: Option<Ipv4Addr>) -> Vec<HostPort> {
    let mut out: Vec<HostPort> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
            Some(HostPort {
                proto: match p.protocol.as_deref() {
                    Some("UDP") => "udp",
                    Some("SCTP") => "sctp",
                    _ => "tcp",
                },
                host_ip: p
                    .host_ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                    .filter(|ip| !ip.is_unspecified()),
                port,
                pod_ip,
                container_port: u16::try_from(p.container_port).unwrap_or(port),
                pod: pod.to_string(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The node's claimed host ports, by pod uid.
#[derive(Default)]
pub struct HostPorts {
    claims: Mutex<BTreeMap<String, Vec<HostPort>>>,
    changed: Notify,
}

impl HostPorts {
    /// Claim `ports` for pod `uid` (replacing what it held); a port another
    /// pod holds is refused with a message naming it.
    pub fn claim(&self, uid: &str, ports: Vec<HostPort>) -> Result<(), String> {
        let mut claims = self.claims.lock().expect("host ports");
        for held in claims.iter().filter(|(u, _)| *u != uid).map(|(_, h)| h) {
            if let Some((want, have)) = ports
                .iter()
                .find_map(|p| held.iter().find(|h| p.overlaps(h)).map(|h| (p, h)))
            {
                return Err(format!(
                    "hostPort {}/{} is in use by pod {} on this node",
                    want.port,
                    want.proto.to_ascii_uppercase(),
                    have.pod
                ));
            }
        }
        let changed = claims.get(uid) != Some(&ports);
        if ports.is_empty() {
            claims.remove(uid);
        } else {
            claims.insert(uid.to_string(), ports);
        }
        drop(claims);
        if changed {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// The pod stopped: its ports are free.
    pub fn release(&self, uid: &str) {
        let had = self
            .claims
            .lock()
            .expect("host ports")
            .remove(uid)
            .is_some();
        if had {
            self.changed.notify_one();
        }
    }

    /// Every claimed port that needs a rule (pods on the node's network need none).
    pub fn rules(&self) -> Vec<HostPort> {
        self.claims
            .lock()
            .expect("host ports")
            .values()
            .flatten()
            .filter(|p| p.pod_ip.is_some())
            .cloned()
            .collect()
    }

    /// Resolves after the next change.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ports_are_claimed_once_per_address_and_protocol() {
        let web = spec(serde_json::json!({"containers": [{"name": "a", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "10.0.0.1"},
            {"containerPort": 9000}
        ]}]}));
        let ip = Some(Ipv4Addr::new(10, 88, 0, 5));
        let ports = of(&web, "d/web", ip);
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[0].proto, ports[0].port, ports[0].container_port),
            ("tcp", 8080, 80)
        );
        let hp = HostPorts::default();
        hp.claim("u1", ports.clone()).unwrap();
        // Claiming again (an agent restart, a new address) is fine.
        hp.claim("u1", ports).unwrap();
        let same = of(&web, "d/other", ip);
        assert_eq!(
            hp.claim("u2", same).unwrap_err(),
            "hostPort 8080/TCP is in use by pod d/web on this node"
        );
        // Another address for the UDP port, another protocol for the TCP one: free.
        let other = spec(serde_json::json!({"containers": [{"name": "a", "ports": [
            {"containerPort": 80, "hostPort": 8080, "protocol": "UDP"},
            {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "10.0.0.2"}
        ]}]}));
        hp.claim("u3", of(&other, "d/x", None)).unwrap();
        assert_eq!(hp.rules().len(), 2, "the host-network pod needs no rule");
        hp.release("u1");
        hp.claim("u2", of(&web, "d/other", ip)).unwrap();
        // An unset hostIP overlaps every address.
        let any = spec(serde_json::json!({"containers": [{"name": "a", "ports": [
            {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}
        ]}]}));
        assert!(hp.claim("u4", of(&any, "d/any", ip)).is_err());
    }
}
