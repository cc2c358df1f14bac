//! A pod's view of host names, for a Wasm guest's outgoing requests: the
//! name tried with the pod's search domains in the order its `resolv.conf`
//! gives (glibc's: with at least `ndots` dots the name as it is first),
//! answered by this node's cluster DNS in process (cluster records, then
//! forwarded upstream), or by the pod's own nameservers when its
//! `dnsPolicy` names others.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use hickory_server::proto::op::{Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use skiff_runtimes::LookupError;

use super::forward::Forwarder;
use super::{ClusterDns, Lookup};

/// How deep a chain of CNAMEs is followed.
const MAX_CNAMES: usize = 8;

/// Resolves names as one pod's `resolv.conf` says.
pub struct PodResolver {
    dns: ClusterDns,
    search: Vec<String>,
    ndots: usize,
    /// The pod's nameservers when they are not this node's cluster DNS.
    elsewhere: Option<Forwarder>,
}

impl PodResolver {
    /// From the pod's `resolv.conf` text; `cluster` is the cluster DNS's
    /// address on this node.
    pub fn new(dns: ClusterDns, resolv: &str, cluster: Option<Ipv4Addr>) -> PodResolver {
        let (mut servers, mut search, mut ndots) = (Vec::new(), Vec::new(), 1);
        for line in resolv.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    servers.extend(words.next().and_then(|s| s.parse::<IpAddr>().ok()))
                }
                Some("search" | "domain") => search = words.map(str::to_string).collect(),
                Some("options") => {
                    for o in words {
                        if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                            ndots = n;
                        }
                    }
                }
                _ => {}
            }
        }
        let cluster_first = match (servers.first(), cluster) {
            (Some(IpAddr::V4(first)), Some(c)) => *first == c,
            (None, _) => true,
            _ => false,
        };
        PodResolver {
            dns,
            search,
            ndots,
            elsewhere: (!cluster_first).then(|| {
                Forwarder::new(servers.iter().map(|ip| SocketAddr::new(*ip, 53)).collect())
            }),
        }
    }

    /// The names to try for `host`, in order.
    pub fn candidates(&self, host: &str) -> Vec<String> {
        if let Some(absolute) = host.strip_suffix('.') {
            return vec![format!("{absolute}.")];
        }
        let searched = self.search.iter().map(|d| format!("{host}.{d}."));
        let as_is = format!("{host}.");
        if host.matches('.').count() >= self.ndots {
            std::iter::once(as_is).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(as_is)).collect()
        }
    }

    /// The addresses of one fully qualified name.
    async fn ask(&self, name: &str, depth: usize) -> Result<Vec<IpAddr>, LookupError> {
        let parsed = Name::from_ascii(name).map_err(|_| LookupError::NotFound)?;
        let (code, answers) = match &self.elsewhere {
            Some(f) => {
                let a = f
                    .resolve(&Query::query(parsed.clone(), RecordType::A))
                    .await;
                (a.code, a.answers)
            }
            None => match self.dns.records().lookup(&parsed, RecordType::A) {
                Lookup::Answer { answers, .. } => (ResponseCode::NoError, answers),
                Lookup::NoData => (ResponseCode::NoError, Vec::new()),
                Lookup::NxDomain => (ResponseCode::NXDomain, Vec::new()),
                Lookup::Refused => match &self.dns.forward {
                    Some(f) => {
                        let a = f
                            .resolve(&Query::query(parsed.clone(), RecordType::A))
                            .await;
                        (a.code, a.answers)
                    }
                    None => (ResponseCode::Refused, Vec::new()),
                },
            },
        };
        match code {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => return Err(LookupError::NotFound),
            ResponseCode::ServFail => return Err(LookupError::Timeout),
            other => return Err(LookupError::Failed(other.to_string())),
        }
        let ips = addresses(&answers);
        if !ips.is_empty() || depth >= MAX_CNAMES {
            return Ok(ips);
        }
        // Only an alias (an ExternalName Service): follow it.
        match cname(&answers) {
            Some(target) => Box::pin(self.ask(&target, depth + 1)).await,
            None => Ok(Vec::new()),
        }
    }
}

fn addresses(answers: &[Record]) -> Vec<IpAddr> {
    answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

fn cname(answers: &[Record]) -> Option<String> {
    answers.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.to_ascii()),
        _ => None,
    })
}

impl skiff_runtimes::Resolve for PodResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>> {
        Box::pin(async move {
            let mut last = LookupError::NotFound;
            for name in self.candidates(host) {
                match self.ask(&name, 0).await {
                    Ok(ips) if !ips.is_empty() => return Ok(ips),
                    Ok(_) | Err(LookupError::NotFound) => {}
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }
}

/// A shared resolver for a pod.
pub fn for_pod(
    dns: &ClusterDns,
    resolv: &str,
    cluster: Option<Ipv4Addr>,
) -> skiff_runtimes::Resolver {
    skiff_runtimes::Resolver(Arc::new(PodResolver::new(dns.clone(), resolv, cluster)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use skiff_runtimes::Resolve;

    fn service(name: &str, ip: Option<&str>, external: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: ip.map(str::to_string),
                type_: external.map(|_| "ExternalName".to_string()),
                external_name: external.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const RESOLV: &str = "nameserver 10.88.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";

    #[test]
    fn names_are_tried_in_glibc_order() {
        let r = PodResolver::new(
            ClusterDns::new("cluster.local"),
            RESOLV,
            Some("10.88.0.1".parse().unwrap()),
        );
        assert_eq!(
            r.candidates("web"),
            vec![
                "web.shop.svc.cluster.local.",
                "web.svc.cluster.local.",
                "web.cluster.local.",
                "web."
            ]
        );
        assert_eq!(r.candidates("a.b.c.d.e.f")[0], "a.b.c.d.e.f.");
        assert_eq!(r.candidates("x.example."), vec!["x.example."]);
        assert!(r.elsewhere.is_none());
        let other = PodResolver::new(
            ClusterDns::new("cluster.local"),
            "nameserver 10.99.0.53\n",
            Some("10.88.0.1".parse().unwrap()),
        );
        assert!(other.elsewhere.is_some());
    }

    #[tokio::test]
    async fn cluster_names_resolve_in_process_and_aliases_are_followed() {
        let dns = ClusterDns::new("cluster.local");
        dns.update(super::super::Records::build(
            "cluster.local",
            &[
                service("web", Some("10.96.0.20"), None),
                service("alias", None, Some("web.shop.svc.cluster.local")),
            ],
            &[],
        ));
        let r = PodResolver::new(dns, RESOLV, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(
            r.lookup("web").await.unwrap(),
            vec!["10.96.0.20".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.lookup("web.shop").await.unwrap(),
            vec!["10.96.0.20".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.lookup("alias").await.unwrap(),
            vec!["10.96.0.20".parse::<IpAddr>().unwrap()]
        );
        assert!(r.lookup("nothing").await.is_err());
    }
}
