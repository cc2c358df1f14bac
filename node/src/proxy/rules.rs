//! What the proxy programs, as data: the Services seen from one node
//! (`ServiceView`, built from Services and EndpointSlices) and the nftables
//! script that implements them (`render`).
//!
//! **The script replaces the node's whole table in one nft transaction
//! (declare, delete, re-create), so the kernel never holds half a sync and
//! rules of deleted Services are gone after the next sync.**

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::net::Cidr;

/// The mark of connections that are masqueraded (NodePort/LoadBalancer
/// traffic, a pod reaching itself through its Service).
pub const MASQ_MARK: u32 = 0x4000;

/// One port of one Service with the endpoints it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    pub name: String,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Ready endpoints: address and target port.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// The Service's `targetPort`: a container port's name, or a number.
    pub target_name: Option<String>,
    pub target_port: u16,
}

/// A Service as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    /// LoadBalancer ingress addresses.
    pub ingress: Vec<Ipv4Addr>,
    /// sessionAffinity ClientIP timeout in seconds.
    pub affinity: Option<u32>,
    pub ports: Vec<PortView>,
    /// The Deployment that scales to zero behind this Service: while a TCP
    /// port has no ready endpoints, its connections go to the activator,
    /// which wakes the Deployment.
    pub wake: Option<String>,
    /// The Service's selector.
    pub selector: BTreeMap<String, String>,
}

/// The node-wide settings of the rules.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub table: String,
    pub bridge: String,
    pub cluster_cidr: Cidr,
    pub service_cidr: Cidr,
    /// Where the node's activator listens (scale-to-zero Services without
    /// ready endpoints are sent there).
    pub activator: Option<std::net::SocketAddrV4>,
    /// The agent's API relay: the `kubernetes` Service's one backend here.
    pub api_relay: Option<std::net::SocketAddrV4>,
    /// Pods may reach addresses outside the cluster, masqueraded as the
    /// node (otherwise nothing they send leaves the node).
    pub egress: bool,
}

/// Send the `default/kubernetes` Service's TCP ports to `relay` (the API
/// servers may not be reachable from pods; the agent always is).
pub fn relay_api(views: &mut [ServiceView], relay: std::net::SocketAddrV4) {
    for v in views
        .iter_mut()
        .filter(|v| v.namespace == "default" && v.name == "kubernetes")
    {
        for p in v.ports.iter_mut().filter(|p| p.proto == "tcp") {
            p.endpoints = vec![(*relay.ip(), relay.port())];
        }
    }
}

fn proto_of(p: Option<&str>) -> Option<&'static str> {
    match p.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        _ => None, // SCTP is not proxied
    }
}

/// The Services that need rules: ClusterIP, NodePort and LoadBalancer ones with
/// an address (headless and ExternalName Services have none), each port with
/// the ready endpoints of the EndpointSlices that name the Service.
pub fn views(
    services: &[Service],
    slices: &[EndpointSlice],
    wakers: &super::wake::Wakers,
) -> Vec<ServiceView> {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for sl in slices {
        let svc = sl
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"));
        if let (Some(svc), Some(ns)) = (svc, sl.metadata.namespace.as_ref())
            && sl.address_type == "IPv4"
        {
            by_service
                .entry((ns.clone(), svc.clone()))
                .or_default()
                .push(sl);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.clone(),
            svc.metadata.name.clone(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(cluster_ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
            continue;
        };
        let my_slices = by_service
            .get(&(ns.clone(), name.clone()))
            .cloned()
            .unwrap_or_default();
        let mut ports = Vec::new();
        for p in spec.ports.iter().flatten() {
            let Some(proto) = proto_of(p.protocol.as_deref()) else {
                continue;
            };
            let pname = p.name.clone().unwrap_or_default();
            let mut endpoints = Vec::new();
            for sl in &my_slices {
                let target = sl.ports.iter().flatten().find(|sp| {
                    sp.name.clone().unwrap_or_default() == pname
                        && proto_of(sp.protocol.as_deref()) == Some(proto)
                });
                let Some(tp) = target
                    .and_then(|t| t.port)
                    .and_then(|t| u16::try_from(t).ok())
                else {
                    continue;
                };
                for ep in sl.endpoints.iter().flatten() {
                    if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    for a in &ep.addresses {
                        if let Ok(ip) = a.parse() {
                            endpoints.push((ip, tp));
                        }
                    }
                }
            }
            endpoints.sort();
            endpoints.dedup();
            let port = u16::try_from(p.port).unwrap_or(0);
            let (target_name, target_port) = match &p.target_port {
                Some(IntOrString::String(n)) => (Some(n.clone()), 0),
                Some(IntOrString::Int(n)) => (None, u16::try_from(*n).unwrap_or(port)),
                None => (None, port),
            };
            ports.push(PortView {
                name: pname,
                proto,
                port,
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                endpoints,
                target_name,
                target_port,
            });
        }
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(10800)
        });
        let wake = wakers.behind(&ns, spec.selector.as_ref());
        out.push(ServiceView {
            namespace: ns,
            name,
            cluster_ip,
            ingress,
            affinity,
            ports,
            wake,
            selector: spec.selector.clone().unwrap_or_default(),
        });
    }
    out
}

/// A chain-name fragment for a Service port (stable, short).
fn id(v: &ServiceView, p: &PortView) -> String {
    crate::net::short_hash(&format!(
        "{}/{}/{}/{}",
        v.namespace, v.name, p.name, p.proto
    ))
}

/// The nft script that makes the node's table exactly `views`.
pub fn render(
    cfg: &RuleConfig,
    views: &[ServiceView],
    host_ports: &[super::hostports::HostPort],
) -> String {
    let t = &cfg.table;
    let mut s = String::new();
    // Declaring then deleting makes the delete safe when the table is absent;
    // all of it is one transaction.
    let _ = writeln!(s, "table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
    let _ = writeln!(
        s,
        "  chain nat_pre {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}"
    );
    let _ = writeln!(
        s,
        "  chain nat_out {{ type nat hook output priority -100; policy accept; jump services; }}"
    );
    // Pods' own connections out of the cluster leave as the node (egress).
    let egress = if cfg.egress {
        format!(
            " ip saddr {c} ip daddr != {c} oifname != \"{b}\" masquerade;",
            c = cfg.cluster_cidr,
            b = cfg.bridge
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "  chain nat_post {{ type nat hook postrouting priority srcnat; policy accept; \
         meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade; \
         ct status dnat oifname \"{b}\" masquerade; ip saddr {svc} masquerade;{egress} }}",
        b = cfg.bridge,
        svc = cfg.service_cidr
    );
    // A new connection to a Service address that nothing translated (no
    // endpoints, no such port) is delivered locally and refused, never
    // answered by a host socket; replies to the host's own connections to a
    // ClusterIP come back addressed to it and pass.
    //
    // Pods reach the node itself only for its DNS and through Services
    // (translated connections: the API relay, the activator); every other
    // node listener (the agent API, the API server off loopback, anything
    // the host runs) is closed to them.
    let _ = writeln!(
        s,
        "  chain filter_in {{ type filter hook input priority filter; policy accept; \
         ct state new ip daddr {svc} meta l4proto tcp reject with tcp reset; \
         ct state new ip daddr {svc} reject; \
         iifname \"{b}\" ct state established,related accept; \
         iifname \"{b}\" ct status dnat accept; \
         iifname \"{b}\" meta l4proto {{ tcp, udp }} th dport 53 accept; \
         iifname \"{b}\" icmp type echo-request accept; \
         iifname \"{b}\" meta l4proto tcp reject with tcp reset; \
         iifname \"{b}\" reject; }}",
        svc = cfg.service_cidr,
        b = cfg.bridge
    );
    // Without egress pods may be forwarded to the cluster only: nothing
    // they send leaves the host.
    let guard = if cfg.egress {
        String::new()
    } else {
        format!(" ip saddr {c} ip daddr != {c} drop;", c = cfg.cluster_cidr)
    };
    let _ = writeln!(
        s,
        "  chain filter_fwd {{ type filter hook forward priority filter; policy accept;{guard} }}"
    );
    let mut services = String::new();
    let mut chains = String::new();
    // Pods' hostPorts: a connection to the node's address (or the port's
    // hostIP) goes to the pod, masqueraded as NodePorts are.
    for (i, h) in host_ports.iter().enumerate() {
        let Some(pod) = h.pod_ip else { continue };
        let daddr = match h.host_ip {
            Some(ip) => format!("ip daddr {ip}"),
            None => "ip daddr != 127.0.0.0/8".to_string(),
        };
        let _ = writeln!(
            services,
            "    fib daddr type local {daddr} {} dport {} goto hp_{i}",
            h.proto, h.port
        );
        let _ = writeln!(
            chains,
            "  chain hp_{i} {{ meta mark set mark | {MASQ_MARK:#x}; meta l4proto {} dnat to {pod}:{}; }}",
            h.proto, h.container_port
        );
    }
    for v in views {
        // Each Service's rules count new connections (nat chains see the
        // first packet of a connection only), named by the comment.
        let note = format!("comment \"{}/{}\"", v.namespace, v.name);
        for p in &v.ports {
            if p.endpoints.is_empty() {
                if let (Some(act), Some(_), "tcp") = (cfg.activator, &v.wake, p.proto) {
                    let _ = writeln!(
                        services,
                        "    ip daddr {} tcp dport {} counter dnat to {act} {note}",
                        v.cluster_ip, p.port
                    );
                    for ip in &v.ingress {
                        let _ = writeln!(
                            services,
                            "    ip daddr {ip} tcp dport {} counter dnat to {act} {note}",
                            p.port
                        );
                    }
                    if let Some(np) = p.node_port {
                        let _ = writeln!(
                            services,
                            "    fib daddr type local ip daddr != 127.0.0.0/8 tcp dport {np} counter dnat to {act} {note}"
                        );
                    }
                }
                continue;
            }
            let sid = id(v, p);
            let proto = p.proto;
            let _ = writeln!(
                services,
                "    ip daddr {} {proto} dport {} counter goto s_{sid} {note}",
                v.cluster_ip, p.port
            );
            let external = !v.ingress.is_empty() || p.node_port.is_some();
            if external {
                for ip in &v.ingress {
                    let _ = writeln!(
                        services,
                        "    ip daddr {ip} {proto} dport {} counter goto x_{sid} {note}",
                        p.port
                    );
                }
                if let Some(np) = p.node_port {
                    let _ = writeln!(
                        services,
                        "    fib daddr type local ip daddr != 127.0.0.0/8 {proto} dport {np} counter goto x_{sid} {note}"
                    );
                }
                let _ = writeln!(
                    chains,
                    "  chain x_{sid} {{ meta mark set mark | {MASQ_MARK:#x}; goto s_{sid}; }}"
                );
            }
            let n = p.endpoints.len();
            let mut sv = format!("  chain s_{sid} {{");
            if v.affinity.is_some() {
                for k in 0..n {
                    let _ = write!(sv, " ip saddr @a_{sid}_{k} goto e_{sid}_{k};");
                }
            }
            if n == 1 {
                let _ = write!(sv, " goto e_{sid}_0;");
            } else {
                let arms: Vec<String> = (0..n).map(|k| format!("{k} : goto e_{sid}_{k}")).collect();
                let _ = write!(sv, " numgen random mod {n} vmap {{ {} }};", arms.join(", "));
            }
            let _ = writeln!(chains, "{sv} }}");
            for (k, (ip, port)) in p.endpoints.iter().enumerate() {
                let mut ev = format!(
                    "  chain e_{sid}_{k} {{ ip saddr {ip} meta mark set mark | {MASQ_MARK:#x};"
                );
                if let Some(timeout) = v.affinity {
                    let _ = writeln!(
                        chains,
                        "  set a_{sid}_{k} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
                    );
                    let _ = write!(ev, " update @a_{sid}_{k} {{ ip saddr }};");
                }
                let _ = writeln!(chains, "{ev} meta l4proto {proto} dnat to {ip}:{port}; }}");
            }
        }
    }
    let _ = writeln!(s, "  chain services {{\n{services}  }}");
    s.push_str(&chains);
    s.push_str("}\n");
    s
}

/// New connections per Service (`namespace/name`) counted by the rules of
/// the `services` chain, from `nft -j list chain`'s output.
pub fn connection_counts(json: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(json) else {
        return out;
    };
    for item in doc["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        let Some((ns, name)) = rule["comment"].as_str().and_then(|c| c.split_once('/')) else {
            continue;
        };
        let packets: u64 = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .sum();
        *out.entry((ns.to_string(), name.to_string())).or_default() += packets;
    }
    out
}

/// The script that removes the node's table.
pub fn remove(table: &str) -> String {
    format!("table ip {table}\ndelete table ip {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connection_counts_sum_each_services_rules() {
        let j = r#"{"nftables":[{"metainfo":{}},{"chain":{"name":"services"}},
            {"rule":{"comment":"d/web","expr":[{"match":{}},{"counter":{"packets":3,"bytes":180}},{"goto":{"target":"s_x"}}]}},
            {"rule":{"comment":"d/web","expr":[{"counter":{"packets":2,"bytes":120}}]}},
            {"rule":{"comment":"d/db","expr":[{"counter":{"packets":0,"bytes":0}}]}},
            {"rule":{"expr":[{"counter":{"packets":9,"bytes":0}}]}}]}"#;
        let c = connection_counts(j);
        assert_eq!(c[&("d".to_string(), "web".to_string())], 5);
        assert_eq!(c[&("d".to_string(), "db".to_string())], 0);
        assert_eq!(c.len(), 2);
    }

    fn cfg() -> RuleConfig {
        RuleConfig {
            table: "skiff_n0".into(),
            bridge: "skiff0".into(),
            cluster_cidr: "10.88.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/16".parse().unwrap(),
            activator: Some("10.88.0.1:8012".parse().unwrap()),
            api_relay: None,
            egress: false,
        }
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(svc: &str, ports: serde_json::Value, eps: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": "default",
                "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": ports, "endpoints": eps}))
        .unwrap()
    }

    #[test]
    fn views_take_ready_endpoints_by_port_name() {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "type": "NodePort",
                "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}}));
        let sl = slice(
            "web",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([{"addresses": ["10.88.0.5"], "conditions": {"ready": true}},
                   {"addresses": ["10.88.0.6"], "conditions": {"ready": false}},
                   {"addresses": ["10.88.0.7"]}]),
        );
        let v = views(&[s], &[sl], &Default::default());
        assert_eq!(v.len(), 1);
        let http = &v[0].ports[0];
        assert_eq!(http.proto, "tcp");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(
            http.endpoints,
            vec![
                ("10.88.0.5".parse().unwrap(), 8080),
                ("10.88.0.7".parse().unwrap(), 8080)
            ]
        );
        assert_eq!(v[0].ports[1].proto, "udp");
        assert_eq!(v[0].ports[1].endpoints.len(), 2);
    }

    #[test]
    fn headless_and_external_name_get_no_rules() {
        let a = svc(
            json!({"metadata": {"name": "h", "namespace": "d"}, "spec": {"clusterIP": "None"}}),
        );
        let b = svc(json!({"metadata": {"name": "e", "namespace": "d"},
            "spec": {"type": "ExternalName", "externalName": "x.example"}}));
        assert!(views(&[a, b], &[], &Default::default()).is_empty());
    }

    #[test]
    fn render_programs_cluster_ip_node_port_ingress_and_affinity() {
        let v = ServiceView {
            namespace: "default".into(),
            name: "web".into(),
            cluster_ip: "10.96.0.10".parse().unwrap(),
            ingress: vec!["192.168.5.1".parse().unwrap()],
            affinity: Some(60),
            ports: vec![PortView {
                name: "http".into(),
                proto: "tcp",
                port: 80,
                node_port: Some(30080),
                endpoints: vec![
                    ("10.88.0.5".parse().unwrap(), 8080),
                    ("10.88.0.6".parse().unwrap(), 8080),
                ],
                target_name: None,
                target_port: 8080,
            }],
            wake: None,
            selector: BTreeMap::new(),
        };
        let r = render(&cfg(), &[v], &[]);
        assert!(r.starts_with("table ip skiff_n0\ndelete table ip skiff_n0\n"));
        assert!(r.contains("ip daddr 10.96.0.10 tcp dport 80 counter goto s_"));
        assert!(r.contains("ip daddr 192.168.5.1 tcp dport 80 counter goto x_"));
        assert!(r.contains("tcp dport 30080 counter goto x_"));
        assert!(r.contains("numgen random mod 2 vmap"));
        assert!(r.contains("dnat to 10.88.0.6:8080"));
        assert!(r.contains("flags dynamic,timeout; timeout 60s"));
        assert!(r.contains("update @a_"));
        assert!(r.contains("ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 drop"));
        assert!(!r.contains("oifname != \"skiff0\" masquerade"));
        // With egress: pods' connections out leave as the node, nothing dropped.
        let out = render(
            &RuleConfig {
                egress: true,
                ..cfg()
            },
            &[],
            &[],
        );
        assert!(out.contains(
            "ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 oifname != \"skiff0\" masquerade"
        ));
        assert!(!out.contains("ip daddr != 10.88.0.0/16 drop"));
    }

    #[test]
    fn a_port_without_endpoints_is_not_translated() {
        let v = ServiceView {
            namespace: "default".into(),
            name: "none".into(),
            cluster_ip: "10.96.0.11".parse().unwrap(),
            ingress: vec![],
            affinity: None,
            ports: vec![PortView {
                name: String::new(),
                proto: "tcp",
                port: 80,
                node_port: None,
                endpoints: vec![],
                target_name: None,
                target_port: 80,
            }],
            wake: None,
            selector: BTreeMap::new(),
        };
        let r = render(&cfg(), std::slice::from_ref(&v), &[]);
        assert!(!r.contains("10.96.0.11"));
        let woken = render(
            &cfg(),
            &[ServiceView {
                wake: Some("web".into()),
                ..v
            }],
            &[],
        );
        assert!(woken.contains(
            "ip daddr 10.96.0.11 tcp dport 80 counter dnat to 10.88.0.1:8012 comment \"default/none\""
        ));
        assert!(
            r.contains("ct state new ip daddr 10.96.0.0/16 meta l4proto tcp reject with tcp reset")
        );
    }

    #[test]
    fn host_ports_go_to_their_pod() {
        use crate::proxy::hostports::HostPort;
        let hp = |host_ip, pod_ip| HostPort {
            proto: "tcp",
            host_ip,
            port: 8080,
            pod_ip,
            container_port: 80,
            pod: "d/web".into(),
        };
        let r = render(
            &cfg(),
            &[],
            &[
                hp(None, Some(Ipv4Addr::new(10, 88, 0, 5))),
                hp(
                    Some(Ipv4Addr::new(192, 0, 2, 1)),
                    Some(Ipv4Addr::new(10, 88, 0, 6)),
                ),
                hp(None, None),
            ],
        );
        assert!(
            r.contains("fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 8080 goto hp_0"),
            "{r}"
        );
        assert!(r.contains(
            "chain hp_0 { meta mark set mark | 0x4000; meta l4proto tcp dnat to 10.88.0.5:80; }"
        ));
        assert!(r.contains("fib daddr type local ip daddr 192.0.2.1 tcp dport 8080 goto hp_1"));
        assert!(
            !r.contains("hp_2"),
            "a pod on the node's network needs no rule"
        );
    }
}
