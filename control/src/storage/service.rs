//! Services: names are DNS-1035 labels; ClusterIPs come from the Service CIDR
//! and NodePorts from the node-port range, as the Kubernetes API server's
//! allocators do.
//!
//! **Every allocation is a key (`/skiff/alloc/clusterip/<ip>`,
//! `/skiff/alloc/nodeport/<port>`) written in the same transaction as the
//! Service with a create-if-absent precondition, so two Services can never
//! hold the same address or port; keys whose Service is gone or no longer
//! uses them are released on delete and by a repair pass
//! (`Objects::repair_service_allocations`, run on the leader by
//! `controllers::serviceips`).**

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::model::status::{ApiError, ApiResult};
use crate::model::validate::{self, Cause};
use crate::store::{Expect, Op};

use super::Objects;
use super::strategy::Strategy;

const IP_PREFIX: &str = "/skiff/alloc/clusterip/";
const PORT_PREFIX: &str = "/skiff/alloc/nodeport/";

/// The address ranges Services draw from.
#[derive(Debug, Clone)]
pub struct ServiceRanges {
    /// The Service CIDR's base address and prefix length.
    pub base: Ipv4Addr,
    pub prefix: u8,
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges {
            base: Ipv4Addr::new(10, 96, 0, 0),
            prefix: 16,
            node_ports: 30000..=32767,
        }
    }
}

impl ServiceRanges {
    /// Parse `--service-cidr` (`a.b.c.d/n`) and `--service-node-port-range`
    /// (`low-high`).
    pub fn parse(cidr: &str, ports: &str) -> Result<ServiceRanges, String> {
        let (ip, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("service CIDR {cidr:?} is not a.b.c.d/n"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("service CIDR {cidr:?}: bad address"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| (8..=28).contains(p))
            .ok_or_else(|| format!("service CIDR {cidr:?}: the prefix must be 8 to 28"))?;
        let mask = u32::MAX << (32 - prefix);
        let (lo, hi) = ports
            .split_once('-')
            .ok_or_else(|| format!("node port range {ports:?} is not low-high"))?;
        let (lo, hi): (u16, u16) = match (lo.trim().parse(), hi.trim().parse()) {
            (Ok(l), Ok(h)) if l > 0 && l <= h => (l, h),
            _ => return Err(format!("node port range {ports:?} is not low-high")),
        };
        Ok(ServiceRanges {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
            node_ports: lo..=hi,
        })
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", self.base, self.prefix)
    }

    /// The first address of the range: the `kubernetes` Service's, as in
    /// Kubernetes (and in every API server's certificate).
    pub fn api_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.base)
    }

    /// Addresses a Service may get: the range without its network and
    /// broadcast addresses.
    fn usable(&self, ip: Ipv4Addr) -> bool {
        let first = u32::from(self.base);
        let last = first | !(u32::MAX << (32 - self.prefix));
        self.contains(ip) && u32::from(ip) != first && u32::from(ip) != last
    }

    fn random_ip(&self) -> Ipv4Addr {
        let size = 1u32 << (32 - self.prefix);
        Ipv4Addr::from(u32::from(self.base) + rand::random_range(1..size - 1))
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn owner(obj: &Value) -> String {
    format!(
        "{}/{}",
        s(obj, "/metadata/namespace"),
        s(obj, "/metadata/name")
    )
}

fn needs_node_ports(obj: &Value) -> bool {
    match s(obj, "/spec/type") {
        "NodePort" => true,
        "LoadBalancer" => obj
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => false,
    }
}

/// The ClusterIP and NodePorts an object holds.
fn held(obj: &Value) -> (Option<Ipv4Addr>, BTreeSet<u16>) {
    let ip = s(obj, "/spec/clusterIP").parse().ok();
    let ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort")?.as_u64())
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    (ip, ports)
}

fn claim(key: String, obj: &Value) -> Op {
    Op::Put {
        key,
        value: owner(obj).into_bytes(),
        expect: Expect::Absent,
    }
}

/// The Service strategy.
pub struct ServiceStrategy;

impl Strategy for ServiceStrategy {
    fn validate_name(&self, name: &str) -> Result<(), String> {
        validate::dns1035_label(name)
    }

    fn allocate<'a>(
        &'a self,
        o: &'a Objects,
        obj: &'a mut Value,
        old: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<Vec<Op>>> {
        Box::pin(o.allocate_service(obj, old))
    }

    fn release(&self, obj: &Value) -> Vec<Op> {
        release_service(obj)
    }
}

/// Keys a deleted Service held.
fn release_service(obj: &Value) -> Vec<Op> {
    let (ip, ports) = held(obj);
    ip.map(|ip| format!("{IP_PREFIX}{ip}"))
        .into_iter()
        .chain(ports.iter().map(|p| format!("{PORT_PREFIX}{p}")))
        .map(|key| Op::Delete {
            key,
            expect: Expect::Any,
        })
        .collect()
}

impl Objects {
    /// Fill in and check a Service's ClusterIP and NodePorts (`old`: the stored
    /// version on update). Returns the allocation keys to write with it.
    async fn allocate_service(&self, obj: &mut Value, old: Option<&Value>) -> ApiResult<Vec<Op>> {
        let r = &self.services;
        let name = s(obj, "/metadata/name").to_string();
        let invalid = |causes: Vec<Cause>| ApiError::invalid("Service", &name, causes);
        let kind = s(obj, "/spec/type").to_string();
        let with_ports = needs_node_ports(obj);
        let mut ops = Vec::new();
        let spec = obj
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| invalid(vec![Cause::required("spec")]))?;
        if kind == "ExternalName" {
            if spec
                .get("externalName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(invalid(vec![Cause::required("spec.externalName")]));
            }
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
            return Ok(ops);
        }
        let old_ip = old
            .map(|o| s(o, "/spec/clusterIP").to_string())
            .filter(|ip| !ip.is_empty());
        let asked = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ip = match (&old_ip, asked.as_str()) {
            (Some(o), "") => o.clone(),
            (Some(o), a) if a != o => {
                return Err(invalid(vec![Cause::new(
                    "FieldValueInvalid",
                    "spec.clusterIPs[0]",
                    format!("Invalid value: []string{{\"{a}\"}}: may not change once set"),
                )]));
            }
            (Some(o), _) => o.clone(),
            (None, "None") => "None".to_string(),
            (None, "") => {
                let taken: BTreeSet<String> = self
                    .store
                    .list(IP_PREFIX, None, usize::MAX)
                    .await?
                    .0
                    .into_iter()
                    .map(|kv| kv.key[IP_PREFIX.len()..].to_string())
                    .collect();
                let size = 1usize << (32 - r.prefix);
                if taken.len() + 2 >= size {
                    return Err(ApiError::internal(format!(
                        "failed to allocate a serviceIP: range is full ({})",
                        r.cidr()
                    )));
                }
                let ip = loop {
                    let ip = r.random_ip().to_string();
                    if !taken.contains(&ip) {
                        break ip;
                    }
                };
                ops.push(claim(format!("{IP_PREFIX}{ip}"), &Value::Null));
                ip
            }
            (None, a) => {
                let bad = |why: String| {
                    invalid(vec![Cause::new(
                        "FieldValueInvalid",
                        "spec.clusterIPs",
                        format!("Invalid value: []string{{\"{a}\"}}: {why}"),
                    )])
                };
                let parsed: Ipv4Addr = a.parse().map_err(|_| {
                    bad("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into())
                })?;
                if !r.usable(parsed) {
                    return Err(bad(format!(
                        "failed to allocate IP {a}: the provided IP ({a}) is not in the valid range. The range of valid IPs is {}",
                        r.cidr()
                    )));
                }
                if self.store.get(&format!("{IP_PREFIX}{a}")).await?.is_some() {
                    return Err(bad(format!(
                        "failed to allocate IP {a}: provided IP is already allocated"
                    )));
                }
                ops.push(claim(format!("{IP_PREFIX}{a}"), &Value::Null));
                a.to_string()
            }
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        if ip == "None" && kind != "ClusterIP" {
            return Err(invalid(vec![Cause::new(
                "FieldValueInvalid",
                "spec.clusterIPs[0]",
                format!("Invalid value: \"None\": may not be set to 'None' for {kind} services"),
            )]));
        }
        let old_ports = old.map(|o| held(o).1).unwrap_or_default();
        let mut causes = Vec::new();
        let mut mine = BTreeSet::new();
        let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
        for (i, p) in ports.into_iter().flatten().enumerate() {
            let Some(p) = p.as_object_mut() else { continue };
            let field = format!("spec.ports[{i}].nodePort");
            let asked = p.get("nodePort").and_then(Value::as_u64);
            if !with_ports {
                if asked.is_some() && old.is_none() {
                    causes.push(Cause::new(
                        "FieldValueForbidden",
                        &field,
                        format!("Forbidden: may not be used when `type` is '{kind}'"),
                    ));
                }
                p.remove("nodePort");
                continue;
            }
            let port = match asked {
                Some(n) => {
                    let n16 = u16::try_from(n).ok().filter(|n| r.node_ports.contains(n));
                    let Some(n) = n16 else {
                        causes.push(Cause::new(
                            "FieldValueInvalid",
                            &field,
                            format!(
                                "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                                r.node_ports.start(),
                                r.node_ports.end()
                            ),
                        ));
                        continue;
                    };
                    if !mine.insert(n) {
                        causes.push(Cause::new(
                            "FieldValueDuplicate",
                            &field,
                            format!("Duplicate value: \"{n}\""),
                        ));
                        continue;
                    }
                    if !old_ports.contains(&n) {
                        if self
                            .store
                            .get(&format!("{PORT_PREFIX}{n}"))
                            .await?
                            .is_some()
                        {
                            causes.push(Cause::new(
                                "FieldValueInvalid",
                                &field,
                                format!("Invalid value: {n}: provided port is already allocated"),
                            ));
                            continue;
                        }
                        ops.push(claim(format!("{PORT_PREFIX}{n}"), &Value::Null));
                    }
                    n
                }
                None => {
                    let taken: BTreeSet<u16> = self
                        .store
                        .list(PORT_PREFIX, None, usize::MAX)
                        .await?
                        .0
                        .into_iter()
                        .filter_map(|kv| kv.key[PORT_PREFIX.len()..].parse().ok())
                        .collect();
                    let free: Vec<u16> = r
                        .node_ports
                        .clone()
                        .filter(|n| !taken.contains(n) && !mine.contains(n))
                        .collect();
                    if free.is_empty() {
                        return Err(ApiError::internal(format!(
                            "failed to allocate a nodePort: range is full ({}-{})",
                            r.node_ports.start(),
                            r.node_ports.end()
                        )));
                    }
                    let n = free[rand::random_range(0..free.len())];
                    mine.insert(n);
                    ops.push(claim(format!("{PORT_PREFIX}{n}"), &Value::Null));
                    n
                }
            };
            p.insert("nodePort".into(), json!(port));
        }
        if !causes.is_empty() {
            return Err(invalid(causes));
        }
        let who = owner(obj);
        for op in &mut ops {
            if let Op::Put { value, .. } = op {
                *value = who.clone().into_bytes();
            }
        }
        Ok(ops)
    }

    /// One repair pass: drop allocation keys no Service holds any more. The
    /// keys are listed before the Services: a key and its Service are written
    /// together, so every key listed has its Service in the later list unless
    /// that Service went away since.
    pub async fn repair_service_allocations(&self) -> ApiResult<()> {
        let mut keys = Vec::new();
        for prefix in [IP_PREFIX, PORT_PREFIX] {
            keys.extend(self.store.list(prefix, None, usize::MAX).await?.0);
        }
        let mut wanted = BTreeSet::new();
        for kv in self
            .store
            .list("/core/services/", None, usize::MAX)
            .await?
            .0
        {
            let svc = self.decode(&kv)?;
            let (ip, ports) = held(&svc);
            wanted.extend(ip.map(|ip| format!("{IP_PREFIX}{ip}")));
            wanted.extend(ports.iter().map(|p| format!("{PORT_PREFIX}{p}")));
        }
        for kv in keys {
            if !wanted.contains(&kv.key) {
                let op = Op::Delete {
                    key: kv.key.clone(),
                    expect: Expect::Revision(kv.mod_revision),
                };
                // Taken again meanwhile: keep it.
                let _ = self.store.write(op).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_bounds() {
        let r = ServiceRanges::parse("10.96.7.9/24", "30000-30009").unwrap();
        assert_eq!(r.cidr(), "10.96.7.0/24");
        assert!(r.usable("10.96.7.1".parse().unwrap()));
        assert!(!r.usable("10.96.7.0".parse().unwrap()));
        assert!(!r.usable("10.96.7.255".parse().unwrap()));
        assert!(!r.usable("10.96.8.1".parse().unwrap()));
        for _ in 0..1000 {
            assert!(r.usable(r.random_ip()));
        }
        assert!(ServiceRanges::parse("10.96.0.0", "1-2").is_err());
        assert!(ServiceRanges::parse("10.96.0.0/16", "5-2").is_err());
        assert!(ServiceRanges::parse("10.96.0.0/30", "1-2").is_err());
    }

    #[test]
    fn node_ports_by_type() {
        let t = |v: Value| needs_node_ports(&json!({"spec": v}));
        assert!(t(json!({"type": "NodePort"})));
        assert!(t(json!({"type": "LoadBalancer"})));
        assert!(!t(
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false})
        ));
        assert!(!t(json!({"type": "ClusterIP"})));
    }
}
