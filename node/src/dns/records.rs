//! The names the cluster DNS serves: [`Records`], an immutable snapshot built
//! once from Services and EndpointSlices, and its O(1) lookups.
//!
//! The names follow CoreDNS's `kubernetes` plugin (with `pods insecure`):
//!
//! - `<svc>.<ns>.svc.<domain>`: A/AAAA of the ClusterIPs; for a headless
//!   Service the ready endpoint addresses; for an ExternalName Service a CNAME
//!   to `spec.externalName` (never chased: this server answers only for the
//!   cluster domain and forwards nothing).
//! - `<hostname or ip-with-dashes>.<svc>.<ns>.svc.<domain>`: A/AAAA of one
//!   ready endpoint of a headless Service.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>` (and `<svc>.<ns>.svc.<domain>`
//!   itself): SRV per named port.
//! - `<a-b-c-d>.<ns>.pod.<domain>`: A of the address spelled in the name.
//!
//! **Keys are lowercase names without the trailing dot; every ancestor of a
//! key down to the domain is a key too (an empty node), so a name that exists
//! with no record of the asked type is NODATA and any other name under the
//! domain is NXDOMAIN. Names outside the domain are refused, never forwarded.**

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of every record served, in seconds (also the SOA's negative TTL).
pub const TTL: u32 = 5;

/// The cluster domain used when an empty one is given.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The answer to one question, before it is put into a DNS message.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The name has records of the asked type (or is a CNAME).
    Answer {
        /// The answer section.
        answers: Vec<Record>,
        /// Addresses of SRV targets, for the additional section.
        additionals: Vec<Record>,
    },
    /// The name exists but has no record of the asked type.
    NoData,
    /// No such name under the cluster domain.
    NxDomain,
    /// The name is outside the cluster domain: this server is not
    /// authoritative for it and forwards nothing.
    Refused,
}

/// What one name holds.
#[derive(Debug, Default)]
struct Node {
    addrs: Vec<IpAddr>,
    cname: Option<Name>,
    srv: Vec<Srv>,
}

#[derive(Debug, Clone, PartialEq)]
struct Srv {
    port: u16,
    /// Fully qualified target name.
    target: Name,
    /// The target's key in [`Records::nodes`], for the additional section.
    target_key: String,
}

/// An immutable snapshot of the names served for one cluster domain.
#[derive(Debug)]
pub struct Records {
    /// Lowercase, without the trailing dot.
    domain: String,
    soa: Record,
    nodes: HashMap<String, Node>,
}

impl Records {
    /// Build from the cluster's Services and EndpointSlices. `domain` is the
    /// cluster domain (`cluster.local` when empty; case and a trailing dot do
    /// not matter). Objects missing a name, a namespace or a spec are skipped.
    pub fn build(domain: &str, services: &[Service], slices: &[EndpointSlice]) -> Records {
        let domain = normalize_domain(domain);
        let mut builder = Builder {
            domain: domain.clone(),
            nodes: HashMap::new(),
        };
        builder.node(&domain);
        builder.node(&format!("svc.{domain}"));
        builder.node(&format!("pod.{domain}"));

        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let namespace = slice.metadata.namespace.as_deref();
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVICE_NAME_LABEL));
            if let (Some(namespace), Some(service)) = (namespace, service) {
                by_service
                    .entry((namespace, service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }

        for service in services {
            let (Some(name), Some(namespace), Some(spec)) = (
                service.metadata.name.as_deref(),
                service.metadata.namespace.as_deref(),
                service.spec.as_ref(),
            ) else {
                continue;
            };
            let slices = by_service
                .get(&(namespace, name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            builder.add_service(name, namespace, spec, slices);
        }

        let mut nodes = builder.nodes;
        for node in nodes.values_mut() {
            node.addrs.sort_unstable();
            node.addrs.dedup();
            let mut seen = Vec::with_capacity(node.srv.len());
            node.srv.retain(|srv| {
                let fresh = !seen.contains(srv);
                if fresh {
                    seen.push(srv.clone());
                }
                fresh
            });
        }
        Records {
            soa: soa_record(&domain),
            domain,
            nodes,
        }
    }

    /// The cluster domain, lowercase, without the trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The zone's SOA record, for the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Answer one question. Case and a trailing dot in `name` do not matter;
    /// owner names in the answers are `name` as asked.
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let key = key_of(name);
        let in_zone = key
            .strip_suffix(self.domain.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
        if !in_zone {
            return Lookup::Refused;
        }
        let mut owner = name.clone();
        owner.set_fqdn(true);

        let Some(node) = self.nodes.get(&key) else {
            return self.lookup_pod(&key, owner, qtype);
        };
        if let Some(target) = &node.cname {
            let cname = record(owner, RData::CNAME(CNAME(target.clone())));
            return answer(vec![cname], Vec::new());
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let any = qtype == RecordType::ANY;
        if qtype == RecordType::A || qtype == RecordType::AAAA || any {
            answers.extend(address_records(&owner, &node.addrs, qtype));
        }
        if qtype == RecordType::SRV || any {
            self.srv_records(&owner, &node.srv, &mut answers, &mut additionals);
        }
        if (qtype == RecordType::SOA || any) && key == self.domain {
            let mut soa = self.soa.clone();
            soa.name = owner;
            answers.push(soa);
        }
        answer(answers, additionals)
    }

    /// `<a-b-c-d>.<ns>.pod.<domain>` (any namespace, as CoreDNS's `pods
    /// insecure`), and `<ns>.pod.<domain>` as an empty node.
    fn lookup_pod(&self, key: &str, owner: Name, qtype: RecordType) -> Lookup {
        let Some(rest) = key
            .strip_suffix(self.domain.as_str())
            .and_then(|rest| rest.strip_suffix(".pod."))
        else {
            return Lookup::NxDomain;
        };
        let labels: Vec<&str> = rest.split('.').collect();
        match labels.as_slice() {
            [namespace] if !namespace.is_empty() => Lookup::NoData,
            [ip, namespace] if !namespace.is_empty() => match undash_ip(ip) {
                Some(ip) => answer(address_records(&owner, &[ip], qtype), Vec::new()),
                None => Lookup::NxDomain,
            },
            _ => Lookup::NxDomain,
        }
    }

    fn srv_records(
        &self,
        owner: &Name,
        srvs: &[Srv],
        answers: &mut Vec<Record>,
        additionals: &mut Vec<Record>,
    ) {
        if srvs.is_empty() {
            return;
        }
        // CoreDNS's weights: the record set shares 100.
        let weight = u16::try_from((100 / srvs.len()).max(1)).unwrap_or(1);
        let mut targets: Vec<&str> = Vec::new();
        for srv in srvs {
            let data = SRV::new(0, weight, srv.port, srv.target.clone());
            answers.push(record(owner.clone(), RData::SRV(data)));
            if targets.contains(&srv.target_key.as_str()) {
                continue;
            }
            targets.push(&srv.target_key);
            if let Some(target) = self.nodes.get(&srv.target_key) {
                additionals.extend(address_records(&srv.target, &target.addrs, RecordType::ANY));
            }
        }
    }
}

/// Collects nodes while building, keeping every ancestor of a key present.
struct Builder {
    domain: String,
    nodes: HashMap<String, Node>,
}

impl Builder {
    /// The node for `key` (created with its ancestors down to the domain).
    fn node(&mut self, key: &str) -> &mut Node {
        if !self.nodes.contains_key(key) {
            let mut parent = key;
            while parent.len() > self.domain.len() {
                match parent.split_once('.') {
                    Some((_, rest)) => parent = rest,
                    None => break,
                }
                self.nodes.entry(parent.to_owned()).or_default();
            }
        }
        self.nodes.entry(key.to_owned()).or_default()
    }

    fn add_service(
        &mut self,
        name: &str,
        namespace: &str,
        spec: &ServiceSpec,
        slices: &[&EndpointSlice],
    ) {
        let base = format!(
            "{}.{}.svc.{}",
            name.to_ascii_lowercase(),
            namespace.to_ascii_lowercase(),
            self.domain
        );
        let Some(base_name) = fqdn(&base) else {
            tracing::warn!(service = %base, "service name is not a valid dns name, not served");
            return;
        };

        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec
                .external_name
                .as_deref()
                .map(str::trim)
                .filter(|target| !target.is_empty())
                .and_then(|target| Name::from_utf8(target).ok());
            let node = self.node(&base);
            match target {
                Some(mut target) => {
                    target.set_fqdn(true);
                    node.cname = Some(target);
                }
                None => tracing::warn!(
                    service = %base,
                    external_name = ?spec.external_name,
                    "externalName is not a valid dns name, no cname served"
                ),
            }
            return;
        }

        let headless = spec.cluster_ip.as_deref() == Some("None")
            || spec
                .cluster_ips
                .as_ref()
                .and_then(|ips| ips.first())
                .is_some_and(|ip| ip == "None");
        if headless {
            let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
            self.add_headless(&base, slices, publish_not_ready);
            return;
        }

        let mut ips: Vec<&str> = spec
            .cluster_ips
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.as_deref());
        }
        let addrs: Vec<IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
        self.node(&base).addrs.extend(addrs);
        for port in spec.ports.iter().flatten() {
            let (Some(port_name), Ok(number)) = (port.name.as_deref(), u16::try_from(port.port))
            else {
                continue;
            };
            if port_name.is_empty() || number == 0 {
                continue;
            }
            let srv = Srv {
                port: number,
                target: base_name.clone(),
                target_key: base.clone(),
            };
            self.add_srv(&base, port_name, port.protocol.as_deref(), srv);
        }
    }

    fn add_headless(&mut self, base: &str, slices: &[&EndpointSlice], publish_not_ready: bool) {
        self.node(base);
        for slice in slices {
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            for endpoint in slice.endpoints.iter().flatten() {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|conditions| conditions.ready)
                    .unwrap_or(true);
                if !(ready || publish_not_ready) {
                    continue;
                }
                let hostname = endpoint
                    .hostname
                    .as_deref()
                    .filter(|hostname| !hostname.is_empty());
                for addr in &endpoint.addresses {
                    let Ok(addr) = addr.parse::<IpAddr>() else {
                        continue;
                    };
                    let label = match hostname {
                        Some(hostname) => hostname.to_ascii_lowercase(),
                        None => dash_ip(addr),
                    };
                    let key = format!("{label}.{base}");
                    let Some(target) = fqdn(&key) else {
                        continue;
                    };
                    self.node(base).addrs.push(addr);
                    self.node(&key).addrs.push(addr);
                    for port in slice.ports.iter().flatten() {
                        let (Some(port_name), Some(number)) = (
                            port.name.as_deref(),
                            port.port.and_then(|port| u16::try_from(port).ok()),
                        ) else {
                            continue;
                        };
                        if port_name.is_empty() || number == 0 {
                            continue;
                        }
                        let srv = Srv {
                            port: number,
                            target: target.clone(),
                            target_key: key.clone(),
                        };
                        self.add_srv(base, port_name, port.protocol.as_deref(), srv);
                    }
                }
            }
        }
    }

    /// `_<port>._<proto>.<base>` and `<base>` itself.
    fn add_srv(&mut self, base: &str, port_name: &str, protocol: Option<&str>, srv: Srv) {
        let protocol = protocol.unwrap_or("TCP").to_ascii_lowercase();
        let key = format!("_{}._{protocol}.{base}", port_name.to_ascii_lowercase());
        self.node(&key).srv.push(srv.clone());
        self.node(base).srv.push(srv);
    }
}

fn normalize_domain(domain: &str) -> String {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        DEFAULT_DOMAIN.to_owned()
    } else {
        domain
    }
}

/// The map key of a name: lowercase, no trailing dot.
fn key_of(name: &Name) -> String {
    let mut key = name.to_ascii();
    if key.ends_with('.') {
        key.pop();
    }
    key.make_ascii_lowercase();
    key
}

fn fqdn(key: &str) -> Option<Name> {
    let mut name = Name::from_ascii(key).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// `10.1.2.3` → `10-1-2-3`, `fd00::1` → `fd00--1`.
fn dash_ip(addr: IpAddr) -> String {
    addr.to_string().replace(['.', ':'], "-")
}

/// The inverse of [`dash_ip`].
fn undash_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn record(name: Name, data: RData) -> Record {
    Record::from_rdata(name, TTL, data)
}

/// A records (for A), AAAA records (for AAAA) or both (for ANY).
fn address_records(owner: &Name, addrs: &[IpAddr], qtype: RecordType) -> Vec<Record> {
    addrs
        .iter()
        .filter_map(|addr| match (addr, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|data| record(owner.clone(), data))
        .collect()
}

fn answer(answers: Vec<Record>, additionals: Vec<Record>) -> Lookup {
    if answers.is_empty() {
        Lookup::NoData
    } else {
        Lookup::Answer {
            answers,
            additionals,
        }
    }
}

/// The zone's SOA, as CoreDNS makes it (serial: the build time).
fn soa_record(domain: &str) -> Record {
    let apex = fqdn(domain).unwrap_or_else(Name::root);
    let mname = fqdn(&format!("ns.dns.{domain}")).unwrap_or_else(Name::root);
    let rname = fqdn(&format!("hostmaster.{domain}")).unwrap_or_else(Name::root);
    let serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as u32)
        .unwrap_or(1);
    let soa = SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL);
    record(apex, RData::SOA(soa))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(name: &str, spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn port(name: &str, port: i32, protocol: &str) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some(protocol.into()),
            ..Default::default()
        }
    }

    fn endpoint(ip: &str, ready: Option<bool>, hostname: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..Default::default()
            }),
            hostname: hostname.map(Into::into),
            ..Default::default()
        }
    }

    fn slice(
        name: &str,
        service: &str,
        namespace: &str,
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(endpoints),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
                ..Default::default()
            },
            ports: Some(vec![EndpointPort {
                name: Some("web".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn cluster() -> Records {
        let services = vec![
            service(
                "web",
                ServiceSpec {
                    cluster_ip: Some("10.96.0.10".into()),
                    cluster_ips: Some(vec!["10.96.0.10".into()]),
                    ports: Some(vec![port("http", 80, "TCP"), port("dns", 53, "UDP")]),
                    ..Default::default()
                },
            ),
            service(
                "db",
                ServiceSpec {
                    cluster_ip: Some("None".into()),
                    ports: Some(vec![port("web", 80, "TCP")]),
                    ..Default::default()
                },
            ),
            service(
                "all",
                ServiceSpec {
                    cluster_ip: Some("None".into()),
                    publish_not_ready_addresses: Some(true),
                    ..Default::default()
                },
            ),
            service(
                "ext",
                ServiceSpec {
                    type_: Some("ExternalName".into()),
                    external_name: Some("example.com".into()),
                    ..Default::default()
                },
            ),
        ];
        let slices = vec![
            slice(
                "db-1",
                "db",
                "default",
                vec![
                    endpoint("10.0.0.1", Some(true), Some("db-0")),
                    endpoint("10.0.0.2", None, None),
                    endpoint("10.0.0.3", Some(false), Some("db-2")),
                ],
            ),
            slice(
                "db-2",
                "db",
                "default",
                vec![endpoint("10.0.0.4", Some(true), None)],
            ),
            // Same service name, other namespace: not ours.
            slice(
                "db-x",
                "db",
                "other",
                vec![endpoint("10.9.9.9", Some(true), None)],
            ),
            slice(
                "all-1",
                "all",
                "default",
                vec![
                    endpoint("10.0.1.1", Some(true), None),
                    endpoint("10.0.1.2", Some(false), None),
                ],
            ),
        ];
        Records::build("cluster.local", &services, &slices)
    }

    fn name(name: &str) -> Name {
        Name::from_ascii(name).unwrap()
    }

    /// The answers' data, rendered, sorted.
    fn data(lookup: &Lookup) -> Vec<String> {
        let Lookup::Answer { answers, .. } = lookup else {
            panic!("expected answers, got {lookup:?}");
        };
        let mut data: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
        data.sort();
        data
    }

    #[test]
    fn cluster_ip_service() {
        let records = cluster();
        let lookup = records.lookup(&name("web.default.svc.cluster.local."), RecordType::A);
        assert_eq!(data(&lookup), ["10.96.0.10"]);
        let Lookup::Answer { answers, .. } = &lookup else {
            unreachable!()
        };
        assert_eq!(answers[0].ttl, TTL);
        assert_eq!(answers[0].name, name("web.default.svc.cluster.local."));
    }

    #[test]
    fn names_are_case_insensitive_and_dot_optional() {
        let records = Records::build("Cluster.Local.", &[], &[]);
        assert_eq!(records.domain(), "cluster.local");
        let records = cluster();
        for asked in [
            "WEB.Default.SVC.cluster.LOCAL.",
            "web.default.svc.cluster.local",
        ] {
            let lookup = records.lookup(&name(asked), RecordType::A);
            assert_eq!(data(&lookup), ["10.96.0.10"], "{asked}");
        }
        // The owner name is the one asked.
        let Lookup::Answer { answers, .. } =
            records.lookup(&name("WEB.default.svc.cluster.local"), RecordType::A)
        else {
            unreachable!()
        };
        assert!(
            answers[0]
                .name
                .eq_case(&name("WEB.default.svc.cluster.local."))
        );
    }

    #[test]
    fn headless_service_serves_ready_endpoints() {
        let records = cluster();
        let lookup = records.lookup(&name("db.default.svc.cluster.local"), RecordType::A);
        // 10.0.0.3 is not ready; 10.0.0.2 has no ready condition (counts as
        // ready); 10.9.9.9 is another namespace's.
        assert_eq!(data(&lookup), ["10.0.0.1", "10.0.0.2", "10.0.0.4"]);
    }

    #[test]
    fn publish_not_ready_addresses_serves_all_endpoints() {
        let records = cluster();
        let lookup = records.lookup(&name("all.default.svc.cluster.local"), RecordType::A);
        assert_eq!(data(&lookup), ["10.0.1.1", "10.0.1.2"]);
    }

    #[test]
    fn endpoint_hostnames_and_dashed_ips() {
        let records = cluster();
        let lookup = records.lookup(&name("db-0.db.default.svc.cluster.local"), RecordType::A);
        assert_eq!(data(&lookup), ["10.0.0.1"]);
        let lookup = records.lookup(
            &name("10-0-0-2.db.default.svc.cluster.local"),
            RecordType::A,
        );
        assert_eq!(data(&lookup), ["10.0.0.2"]);
        // Not ready: no name.
        let lookup = records.lookup(&name("db-2.db.default.svc.cluster.local"), RecordType::A);
        assert_eq!(lookup, Lookup::NxDomain);
    }

    #[test]
    fn srv_for_cluster_ip_service() {
        let records = cluster();
        let lookup = records.lookup(
            &name("_http._tcp.web.default.svc.cluster.local"),
            RecordType::SRV,
        );
        assert_eq!(data(&lookup), ["0 100 80 web.default.svc.cluster.local."]);
        let Lookup::Answer { additionals, .. } = &lookup else {
            unreachable!()
        };
        assert_eq!(additionals.len(), 1);
        assert_eq!(additionals[0].data.to_string(), "10.96.0.10");
        let lookup = records.lookup(
            &name("_dns._udp.web.default.svc.cluster.local"),
            RecordType::SRV,
        );
        assert_eq!(data(&lookup), ["0 100 53 web.default.svc.cluster.local."]);
        // Wrong protocol.
        let lookup = records.lookup(
            &name("_dns._tcp.web.default.svc.cluster.local"),
            RecordType::SRV,
        );
        assert_eq!(lookup, Lookup::NxDomain);
        // The service name itself carries every named port.
        let lookup = records.lookup(&name("web.default.svc.cluster.local"), RecordType::SRV);
        assert_eq!(
            data(&lookup),
            [
                "0 50 53 web.default.svc.cluster.local.",
                "0 50 80 web.default.svc.cluster.local."
            ]
        );
    }

    #[test]
    fn srv_for_headless_service() {
        let records = cluster();
        let lookup = records.lookup(
            &name("_web._tcp.db.default.svc.cluster.local"),
            RecordType::SRV,
        );
        assert_eq!(
            data(&lookup),
            [
                "0 33 8080 10-0-0-2.db.default.svc.cluster.local.",
                "0 33 8080 10-0-0-4.db.default.svc.cluster.local.",
                "0 33 8080 db-0.db.default.svc.cluster.local.",
            ]
        );
        let Lookup::Answer { additionals, .. } = &lookup else {
            unreachable!()
        };
        let mut extra: Vec<String> = additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        extra.sort();
        assert_eq!(
            extra,
            [
                "10-0-0-2.db.default.svc.cluster.local. 10.0.0.2",
                "10-0-0-4.db.default.svc.cluster.local. 10.0.0.4",
                "db-0.db.default.svc.cluster.local. 10.0.0.1",
            ]
        );
    }

    #[test]
    fn external_name_is_a_cname_not_chased() {
        let records = cluster();
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let lookup = records.lookup(&name("ext.default.svc.cluster.local"), qtype);
            assert_eq!(data(&lookup), ["example.com."], "{qtype}");
            let Lookup::Answer { answers, .. } = &lookup else {
                unreachable!()
            };
            assert_eq!(answers.len(), 1);
            assert_eq!(answers[0].record_type(), RecordType::CNAME);
        }
    }

    #[test]
    fn pods_by_dashed_address() {
        let records = cluster();
        let lookup = records.lookup(&name("10-1-2-3.any.pod.cluster.local"), RecordType::A);
        assert_eq!(data(&lookup), ["10.1.2.3"]);
        let lookup = records.lookup(&name("fd00--5.any.pod.cluster.local"), RecordType::AAAA);
        assert_eq!(data(&lookup), ["fd00::5"]);
        let lookup = records.lookup(&name("10-1-2-3.any.pod.cluster.local"), RecordType::AAAA);
        assert_eq!(lookup, Lookup::NoData);
        let lookup = records.lookup(&name("not-an-ip.any.pod.cluster.local"), RecordType::A);
        assert_eq!(lookup, Lookup::NxDomain);
        let lookup = records.lookup(&name("any.pod.cluster.local"), RecordType::A);
        assert_eq!(lookup, Lookup::NoData);
    }

    #[test]
    fn nxdomain_nodata_refused() {
        let records = cluster();
        let cases = [
            (
                "nope.default.svc.cluster.local",
                RecordType::A,
                Lookup::NxDomain,
            ),
            ("a.b.c.cluster.local", RecordType::A, Lookup::NxDomain),
            (
                "web.default.svc.cluster.local",
                RecordType::AAAA,
                Lookup::NoData,
            ),
            (
                "web.default.svc.cluster.local",
                RecordType::TXT,
                Lookup::NoData,
            ),
            (
                "web.default.svc.cluster.local",
                RecordType::MX,
                Lookup::NoData,
            ),
            // Empty non-terminals.
            ("default.svc.cluster.local", RecordType::A, Lookup::NoData),
            ("svc.cluster.local", RecordType::A, Lookup::NoData),
            ("cluster.local", RecordType::A, Lookup::NoData),
            (
                "_tcp.web.default.svc.cluster.local",
                RecordType::SRV,
                Lookup::NoData,
            ),
            ("example.com", RecordType::A, Lookup::Refused),
            ("xcluster.local", RecordType::A, Lookup::Refused),
            ("local", RecordType::A, Lookup::Refused),
            (".", RecordType::NS, Lookup::Refused),
        ];
        for (asked, qtype, expected) in cases {
            assert_eq!(
                records.lookup(&name(asked), qtype),
                expected,
                "{asked} {qtype}"
            );
        }
    }

    #[test]
    fn soa_at_the_apex() {
        let records = cluster();
        let lookup = records.lookup(&name("cluster.local."), RecordType::SOA);
        let Lookup::Answer { answers, .. } = &lookup else {
            panic!("expected the soa, got {lookup:?}")
        };
        assert_eq!(answers[0].record_type(), RecordType::SOA);
        assert_eq!(records.soa().name, name("cluster.local."));
        assert_eq!(records.soa().ttl, TTL);
    }

    #[test]
    fn ipv6_cluster_ips_are_aaaa() {
        let services = [service(
            "dual",
            ServiceSpec {
                cluster_ip: Some("10.96.0.20".into()),
                cluster_ips: Some(vec!["10.96.0.20".into(), "fd00::20".into()]),
                ..Default::default()
            },
        )];
        let records = Records::build("cluster.local", &services, &[]);
        let asked = name("dual.default.svc.cluster.local");
        assert_eq!(data(&records.lookup(&asked, RecordType::A)), ["10.96.0.20"]);
        assert_eq!(
            data(&records.lookup(&asked, RecordType::AAAA)),
            ["fd00::20"]
        );
    }

    #[test]
    fn empty_records_serve_only_the_skeleton() {
        let records = Records::build("", &[], &[]);
        assert_eq!(records.domain(), DEFAULT_DOMAIN);
        assert_eq!(
            records.lookup(&name("web.default.svc.cluster.local"), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            records.lookup(&name("svc.cluster.local"), RecordType::A),
            Lookup::NoData
        );
    }
}
