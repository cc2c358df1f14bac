//! The Endpoints and EndpointSlice controller: for every Service with a
//! selector, an Endpoints object of the same name and `discovery.k8s.io/v1`
//! EndpointSlices (one per distinct resolved port list, owned by the Service)
//! listing the selected pods' IPv4 addresses, readiness and ports.
//!
//! **Services without a selector and ExternalName services are left alone; an
//! object is written only when what it should hold differs from the cache, so
//! the controller's own writes never cause another write.**

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{self as discovery, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};

use crate::controllers::deployment::salted_hash;
use crate::controllers::framework::{
    Action, Controller, ControllerError, Informer, Key, Queue, Reconciler, Result, enqueue_self,
};
use crate::controllers::owners::delete_exact;
use crate::controllers::podutil::{controller_ref, phase, ready, terminating};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const SLICE_MANAGER: &str = "endpointslice-controller.k8s.io";
pub const ENDPOINTS_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
pub const ENDPOINTS_MANAGER: &str = "endpoint-controller";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// At most this many endpoints go in one slice (Kubernetes' default).
const MAX_PER_SLICE: usize = 100;

/// What a Service's Endpoints and EndpointSlices should be.
#[derive(Debug)]
pub struct Desired {
    pub endpoints: Endpoints,
    pub slices: Vec<EndpointSlice>,
}

/// A Service port with its target resolved for one pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Port {
    name: Option<String>,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

/// A selected pod as Endpoints and slices see it.
struct Member<'a> {
    pod: &'a Pod,
    ip: String,
    ports: Vec<Port>,
    ready: bool,
    terminating: bool,
}

/// Whether this controller keeps endpoints for `svc`: it has a selector and is
/// not an ExternalName service.
pub fn managed(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() != Some("ExternalName")
            && s.selector.as_ref().is_some_and(|m| !m.is_empty())
    })
}

/// Whether `svc`'s selector (a non-empty map) is a subset of `labels`.
pub fn selects(svc: &Service, labels: &BTreeMap<String, String>) -> bool {
    let sel = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    sel.is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The pod's IPv4 address, if it has one.
fn ipv4(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    let ips = st
        .pod_ip
        .iter()
        .chain(st.pod_ips.iter().flatten().map(|i| &i.ip));
    ips.into_iter()
        .find(|ip| ip.parse::<Ipv4Addr>().is_ok())
        .cloned()
}

/// The container port `sp` targets in `pod` (Kubernetes' `FindPort`): a number
/// as is, a name looked up among the containers' (and sidecars') ports with
/// the same protocol; unset means `port`.
fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let proto = sp.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port)
        }
    }
}

/// The pods `svc` selects that can be endpoints: same namespace, not finished,
/// with an IPv4 address; sorted by address.
fn members<'a>(svc: &Service, pods: &'a [Arc<Pod>]) -> Vec<Member<'a>> {
    let mut out: Vec<Member<'a>> = pods
        .iter()
        .map(Arc::as_ref)
        .filter(|p| p.metadata.namespace == svc.metadata.namespace && selects(svc, p.labels()))
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
        .filter_map(|p| {
            let ports = service_ports(svc)
                .iter()
                .filter_map(|sp| {
                    Some(Port {
                        name: sp.name.clone(),
                        port: find_port(p, sp)?,
                        protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        app_protocol: sp.app_protocol.clone(),
                    })
                })
                .collect();
            Some(Member {
                pod: p,
                ip: ipv4(p)?,
                ports,
                ready: ready(p),
                terminating: terminating(p),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.ip, a.pod.metadata.name.as_deref()).cmp(&(&b.ip, b.pod.metadata.name.as_deref()))
    });
    out
}

/// The Service's labels plus the headless marker and `extra`.
fn labels_for(svc: &Service, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut l = svc.labels().clone();
    l.remove(HEADLESS_LABEL);
    if headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    for (k, v) in extra {
        l.insert((*k).into(), (*v).into());
    }
    l
}

fn target_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: p.metadata.name.clone(),
        namespace: p.metadata.namespace.clone(),
        uid: p.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The pod's `spec.hostname` when its subdomain is the Service.
fn hostname(svc: &Service, p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    (spec.subdomain.is_some() && spec.subdomain == svc.metadata.name)
        .then(|| spec.hostname.clone())
        .flatten()
        .filter(|h| !h.is_empty())
}

fn node_name(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// What `svc`'s Endpoints and EndpointSlices should be given the pods of its
/// namespace, or `None` when the controller leaves the Service alone.
pub fn desired(svc: &Service, pods: &[Arc<Pod>]) -> Option<Desired> {
    if !managed(svc) {
        return None;
    }
    let members = members(svc, pods);
    Some(Desired {
        endpoints: endpoints_for(svc, &members),
        slices: slices_for(svc, &members),
    })
}

/// One subset per resolved port list; terminating pods are left out (unless
/// not-ready addresses are published), pods with no port only for a headless
/// Service without ports.
fn endpoints_for(svc: &Service, members: &[Member<'_>]) -> Endpoints {
    let publish = publish_not_ready(svc);
    let portless_ok = service_ports(svc).is_empty() && headless(svc);
    let mut groups: BTreeMap<&[Port], (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for m in members {
        if (m.terminating && !publish) || (m.ports.is_empty() && !portless_ok) {
            continue;
        }
        let addr = EndpointAddress {
            ip: m.ip.clone(),
            hostname: hostname(svc, m.pod),
            node_name: node_name(m.pod),
            target_ref: Some(target_ref(m.pod)),
        };
        let g = groups.entry(&m.ports).or_default();
        if publish || m.ready {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
    }
    let subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: p.name.clone(),
                        port: p.port,
                        protocol: Some(p.protocol.clone()),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect()
            }),
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels_for(
                svc,
                &[(ENDPOINTS_MANAGED_BY, ENDPOINTS_MANAGER)],
            )),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// A deterministic name for the slices of one port list.
fn slice_base(svc: &Service, ports: &[Port]) -> String {
    let text: Vec<String> = ports
        .iter()
        .map(|p| {
            let name = p.name.as_deref().unwrap_or_default();
            let app = p.app_protocol.as_deref().unwrap_or_default();
            format!("{name}:{}/{}:{app}", p.port, p.protocol)
        })
        .collect();
    let hash = salted_hash(text.join(",").as_bytes(), 0);
    format!("{}-{hash}", svc.name_any())
}

/// One slice per resolved port list (split at `MAX_PER_SLICE`), terminating
/// pods included as not ready; no pods at all still give one empty slice.
fn slices_for(svc: &Service, members: &[Member<'_>]) -> Vec<EndpointSlice> {
    let publish = publish_not_ready(svc);
    let mut groups: BTreeMap<&[Port], Vec<&Member<'_>>> = BTreeMap::new();
    for m in members {
        groups.entry(&m.ports).or_default().push(m);
    }
    if groups.is_empty() {
        groups.insert(&[], Vec::new());
    }
    let svc_name = svc.name_any();
    let labels = labels_for(
        svc,
        &[
            (SERVICE_NAME_LABEL, &svc_name),
            (SLICE_MANAGED_BY, SLICE_MANAGER),
        ],
    );
    let mut out = Vec::new();
    for (ports, ms) in groups {
        let base = slice_base(svc, ports);
        let chunks: Vec<&[&Member<'_>]> = if ms.is_empty() {
            vec![&[]]
        } else {
            ms.chunks(MAX_PER_SLICE).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let endpoints = chunk
                .iter()
                .map(|m| {
                    let serving = publish || m.ready;
                    discovery::Endpoint {
                        addresses: vec![m.ip.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(serving && (publish || !m.terminating)),
                            serving: Some(serving),
                            terminating: Some(m.terminating),
                        }),
                        hostname: hostname(svc, m.pod),
                        node_name: node_name(m.pod),
                        target_ref: Some(target_ref(m.pod)),
                        ..discovery::Endpoint::default()
                    }
                })
                .collect();
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(if i == 0 {
                        base.clone()
                    } else {
                        format!("{base}-{i}")
                    }),
                    namespace: svc.metadata.namespace.clone(),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![controller_ref(svc)]),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints: Some(endpoints),
                ports: Some(
                    ports
                        .iter()
                        .map(|p| discovery::EndpointPort {
                            name: p.name.clone(),
                            port: Some(p.port),
                            protocol: Some(p.protocol.clone()),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect(),
                ),
            });
        }
    }
    out
}

fn labelled<K: Resource>(o: &K, key: &str, value: &str) -> bool {
    o.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == value)
}

/// The key of the Service a slice this controller manages belongs to.
fn slice_service(s: &EndpointSlice) -> Option<Key> {
    if !labelled(s, SLICE_MANAGED_BY, SLICE_MANAGER) {
        return None;
    }
    let svc = s.labels().get(SERVICE_NAME_LABEL)?;
    Some(Key::new(
        s.metadata.namespace.as_deref().unwrap_or_default(),
        svc,
    ))
}

pub struct ServiceEndpoints {
    pub client: Client,
    pub services: Arc<Informer<Service>>,
    pub pods: Arc<Informer<Pod>>,
    pub endpoints: Arc<Informer<Endpoints>>,
    pub slices: Arc<Informer<EndpointSlice>>,
}

impl ServiceEndpoints {
    /// Wire the informers to `queue`: a Service's own changes; a pod's change
    /// to every Service of its namespace that selects it before or after; a
    /// change to an Endpoints or slice this controller manages to its Service.
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.services.on(enqueue_self(queue));
        let (q, services) = (queue.clone(), self.services.clone());
        self.pods.on(move |old, new| {
            let ns = new.metadata.namespace.as_deref().unwrap_or_default();
            for s in services.list(ns) {
                if old
                    .into_iter()
                    .chain([new])
                    .any(|p| selects(&s, p.labels()))
                {
                    q.add(Key::of(s.as_ref()));
                }
            }
        });
        let q = queue.clone();
        self.endpoints.on(move |_, e| {
            if labelled(e, ENDPOINTS_MANAGED_BY, ENDPOINTS_MANAGER) {
                q.add(Key::of(e));
            }
        });
        let q = queue.clone();
        self.slices.on(move |_, s| {
            if let Some(k) = slice_service(s) {
                q.add(k);
            }
        });
    }

    /// Resync keys: every Service, and every Endpoints this controller wrote
    /// (its Service may be gone).
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: BTreeSet<Key> = self
            .services
            .list("")
            .iter()
            .map(|s| Key::of(s.as_ref()))
            .collect();
        keys.extend(
            self.endpoints
                .list("")
                .iter()
                .filter(|e| labelled(e.as_ref(), ENDPOINTS_MANAGED_BY, ENDPOINTS_MANAGER))
                .map(|e| Key::of(e.as_ref())),
        );
        keys.into_iter().collect()
    }

    async fn sync_endpoints(&self, key: &Key, want: Endpoints) -> Result<()> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.ns);
        match self.endpoints.get(key) {
            None => {
                api.create(&PostParams::default(), &want).await?;
            }
            Some(have)
                if have.metadata.labels != want.metadata.labels || have.subsets != want.subsets =>
            {
                let mut new = (*have).clone();
                new.metadata.labels = want.metadata.labels;
                new.subsets = want.subsets;
                api.replace(&key.name, &PostParams::default(), &new).await?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    async fn sync_slices(&self, key: &Key, want: Vec<EndpointSlice>) -> Result<()> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.ns);
        let names: BTreeSet<String> = want.iter().map(|s| s.name_any()).collect();
        for w in want {
            let name = w.name_any();
            match self.slices.get(&Key::new(&key.ns, &name)) {
                None => {
                    api.create(&PostParams::default(), &w).await?;
                }
                Some(have) if slice_service(&have).as_ref() != Some(key) => {
                    return Err(ControllerError::Invalid(format!(
                        "endpointslice {name} exists and is not managed for service {key}"
                    )));
                }
                Some(have)
                    if have.metadata.labels != w.metadata.labels
                        || have.metadata.owner_references != w.metadata.owner_references
                        || have.endpoints != w.endpoints
                        || have.ports != w.ports =>
                {
                    let mut new = (*have).clone();
                    new.metadata.labels = w.metadata.labels;
                    new.metadata.owner_references = w.metadata.owner_references;
                    new.endpoints = w.endpoints;
                    new.ports = w.ports;
                    api.replace(&name, &PostParams::default(), &new).await?;
                }
                Some(_) => {}
            }
        }
        for s in self.slices.list(&key.ns) {
            if slice_service(&s).as_ref() == Some(key)
                && !names.contains(&s.name_any())
                && !terminating(s.as_ref())
            {
                delete_exact(&api, s.as_ref(), None).await?;
            }
        }
        Ok(())
    }
}

impl Reconciler for ServiceEndpoints {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(svc) = self.services.get(key) else {
            // Gone: its slices follow through owner references, its Endpoints here.
            if let Some(ep) = self
                .endpoints
                .get(key)
                .filter(|e| labelled(e.as_ref(), ENDPOINTS_MANAGED_BY, ENDPOINTS_MANAGER))
            {
                let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.ns);
                delete_exact(&api, ep.as_ref(), None).await?;
            }
            return Ok(Action::await_change());
        };
        if terminating(svc.as_ref()) {
            return Ok(Action::await_change());
        }
        let Some(want) = desired(&svc, &self.pods.list(&key.ns)) else {
            return Ok(Action::await_change());
        };
        self.sync_endpoints(key, want.endpoints).await?;
        self.sync_slices(key, want.slices).await?;
        Ok(Action::await_change())
    }
}

/// Start the endpoints controller (2 workers).
pub fn start(ctx: &mut crate::controllers::registration::Ctx<'_>) {
    let pods = ctx.informer::<Pod>();
    let services = ctx.informer::<Service>();
    let endpoints = ctx.informer::<Endpoints>();
    let slices = ctx.informer::<EndpointSlice>();
    let ec = Arc::new(ServiceEndpoints {
        client: ctx.client.clone(),
        services: services.clone(),
        pods: pods.clone(),
        endpoints: endpoints.clone(),
        slices: slices.clone(),
    });
    let q = Queue::new();
    ec.watch(&q);
    let keys = {
        let ec = ec.clone();
        move || ec.keys()
    };
    ctx.run(
        Controller::new(ec, q)
            .workers(2)
            .after_sync(vec![
                (&pods).into(),
                (&services).into(),
                (&endpoints).into(),
                (&slices).into(),
            ])
            .resync(keys),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn port(name: &str, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            target_port: target,
            ..ServicePort::default()
        }
    }

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("svc-uid".into()),
                labels: Some(map(&[("team", "a")])),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(map(&[("app", "web")])),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    /// A running, ready pod `name` at `ip` with named container ports.
    fn pod(name: &str, ip: &str, ports: &[(&str, i32)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("{name}-uid")),
                labels: Some(map(&[("app", "web")])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(
                        ports
                            .iter()
                            .map(|(n, p)| ContainerPort {
                                name: Some(n.to_string()),
                                container_port: *p,
                                protocol: Some("TCP".into()),
                                ..ContainerPort::default()
                            })
                            .collect(),
                    ),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn not_ready(mut p: Pod) -> Pod {
        p.status.as_mut().unwrap().conditions = None;
        p
    }

    fn deleting(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        p
    }

    fn arcs(pods: Vec<Pod>) -> Vec<Arc<Pod>> {
        pods.into_iter().map(Arc::new).collect()
    }

    fn ips(a: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        a.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    /// (ip, ready, serving, terminating) of a slice's endpoints.
    fn conds(s: &EndpointSlice) -> Vec<(&str, bool, bool, bool)> {
        s.endpoints
            .iter()
            .flatten()
            .map(|e| {
                let c = e.conditions.as_ref().unwrap();
                (
                    e.addresses[0].as_str(),
                    c.ready.unwrap(),
                    c.serving.unwrap(),
                    c.terminating.unwrap(),
                )
            })
            .collect()
    }

    fn slice_ports(s: &EndpointSlice) -> Vec<i32> {
        s.ports.iter().flatten().filter_map(|p| p.port).collect()
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_group_by_port_list() {
        let svc = service(vec![port(
            "http",
            80,
            Some(IntOrString::String("web".into())),
        )]);
        let pods = arcs(vec![
            pod("a", "10.0.0.1", &[("web", 8080)]),
            pod("b", "10.0.0.2", &[("web", 9090)]),
            pod("c", "10.0.0.3", &[("other", 8080)]),
        ]);
        let d = desired(&svc, &pods).unwrap();
        let subsets = d.endpoints.subsets.unwrap();
        assert_eq!(subsets.len(), 2, "one subset per port list; c has no port");
        let by_port: Vec<(i32, Vec<&str>)> = subsets
            .iter()
            .map(|s| (s.ports.as_ref().unwrap()[0].port, ips(&s.addresses)))
            .collect();
        assert_eq!(
            by_port,
            vec![(8080, vec!["10.0.0.1"]), (9090, vec!["10.0.0.2"])]
        );
        let p = &subsets[0].ports.as_ref().unwrap()[0];
        assert_eq!(
            (p.name.as_deref(), p.protocol.as_deref()),
            (Some("http"), Some("TCP"))
        );
        let a = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        let r = a.target_ref.as_ref().unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("Pod"), Some("a"), Some("a-uid"))
        );

        // Slices: 8080, 9090, and c in a slice with no ports (as Kubernetes).
        let mut got: Vec<(Vec<i32>, Vec<&str>)> = d
            .slices
            .iter()
            .map(|s| (slice_ports(s), conds(s).iter().map(|c| c.0).collect()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (vec![], vec!["10.0.0.3"]),
                (vec![8080], vec!["10.0.0.1"]),
                (vec![9090], vec!["10.0.0.2"]),
            ]
        );
    }

    #[test]
    fn named_port_needs_the_same_protocol_and_numbers_and_unset_pass_through() {
        let mut udp = port("dns", 53, Some(IntOrString::String("web".into())));
        udp.protocol = Some("UDP".into());
        let svc = service(vec![
            udp,
            port("num", 81, Some(IntOrString::Int(8181))),
            port("same", 82, None),
        ]);
        let d = desired(&svc, &arcs(vec![pod("a", "10.0.0.1", &[("web", 8080)])])).unwrap();
        let subsets = d.endpoints.subsets.unwrap();
        let ports: Vec<i32> = subsets[0].ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, vec![8181, 82]);
    }

    #[test]
    fn not_ready_pods_are_not_ready_addresses_unless_published() {
        let pods = arcs(vec![
            pod("a", "10.0.0.1", &[]),
            not_ready(pod("b", "10.0.0.2", &[])),
        ]);
        let svc = service(vec![port("http", 80, None)]);
        let d = desired(&svc, &pods).unwrap();
        let s = &d.endpoints.subsets.as_ref().unwrap()[0];
        assert_eq!(ips(&s.addresses), vec!["10.0.0.1"]);
        assert_eq!(ips(&s.not_ready_addresses), vec!["10.0.0.2"]);
        assert_eq!(
            conds(&d.slices[0]),
            vec![
                ("10.0.0.1", true, true, false),
                ("10.0.0.2", false, false, false)
            ]
        );

        let mut svc = svc;
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let d = desired(&svc, &pods).unwrap();
        let s = &d.endpoints.subsets.as_ref().unwrap()[0];
        assert_eq!(ips(&s.addresses), vec!["10.0.0.1", "10.0.0.2"]);
        assert!(s.not_ready_addresses.is_none());
        assert_eq!(
            conds(&d.slices[0]),
            vec![
                ("10.0.0.1", true, true, false),
                ("10.0.0.2", true, true, false)
            ]
        );
    }

    #[test]
    fn terminating_pods_only_in_slices_as_terminating() {
        let pods = arcs(vec![
            pod("a", "10.0.0.1", &[]),
            deleting(pod("b", "10.0.0.2", &[])),
        ]);
        let svc = service(vec![port("http", 80, None)]);
        let d = desired(&svc, &pods).unwrap();
        let s = &d.endpoints.subsets.as_ref().unwrap()[0];
        assert_eq!(ips(&s.addresses), vec!["10.0.0.1"]);
        assert!(s.not_ready_addresses.is_none());
        assert_eq!(
            conds(&d.slices[0]),
            vec![
                ("10.0.0.1", true, true, false),
                ("10.0.0.2", false, true, true)
            ]
        );
    }

    #[test]
    fn no_matches_give_empty_endpoints_and_one_empty_slice() {
        let svc = service(vec![port("http", 80, None)]);
        let mut other = pod("x", "10.0.0.9", &[]);
        other.metadata.labels = Some(map(&[("app", "db")]));
        let mut elsewhere = pod("y", "10.0.0.8", &[]);
        elsewhere.metadata.namespace = Some("other".into());
        let mut done = pod("z", "10.0.0.7", &[]);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut no_ip = pod("w", "", &[]);
        no_ip.status.as_mut().unwrap().pod_ip = None;
        let d = desired(&svc, &arcs(vec![other, elsewhere, done, no_ip])).unwrap();
        assert_eq!(d.endpoints.metadata.name.as_deref(), Some("web"));
        assert!(d.endpoints.subsets.is_none());
        assert_eq!(d.slices.len(), 1);
        let s = &d.slices[0];
        assert_eq!(s.endpoints.as_deref(), Some(&[][..]));
        assert_eq!(s.address_type, "IPv4");
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[SLICE_MANAGED_BY], SLICE_MANAGER);
        assert_eq!(labels["team"], "a");
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Service", "svc-uid", Some(true))
        );
        let ep_labels = d.endpoints.metadata.labels.as_ref().unwrap();
        assert_eq!(ep_labels[ENDPOINTS_MANAGED_BY], ENDPOINTS_MANAGER);
        assert_eq!(ep_labels["team"], "a");
    }

    #[test]
    fn multiple_port_sets_get_stable_distinct_slices() {
        let svc = service(vec![
            port("http", 80, Some(IntOrString::String("web".into()))),
            port("admin", 9000, None),
        ]);
        let pods = arcs(vec![
            pod("a", "10.0.0.1", &[("web", 8080)]),
            pod("b", "10.0.0.2", &[("web", 8081)]),
            pod("c", "10.0.0.3", &[("web", 8080)]),
        ]);
        let d = desired(&svc, &pods).unwrap();
        let subsets = d.endpoints.subsets.unwrap();
        let got: Vec<(Vec<i32>, Vec<&str>)> = subsets
            .iter()
            .map(|s| {
                (
                    s.ports.iter().flatten().map(|p| p.port).collect(),
                    ips(&s.addresses),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![8080, 9000], vec!["10.0.0.1", "10.0.0.3"]),
                (vec![8081, 9000], vec!["10.0.0.2"]),
            ]
        );
        let names: Vec<String> = d.slices.iter().map(|s| s.name_any()).collect();
        assert_eq!(names.len(), 2);
        assert_ne!(names[0], names[1]);
        assert!(names.iter().all(|n| n.starts_with("web-")));
        // Another pod with the same ports lands in the same slice names.
        let more = arcs(vec![
            pod("a", "10.0.0.1", &[("web", 8080)]),
            pod("b", "10.0.0.2", &[("web", 8081)]),
        ]);
        let again: Vec<String> = desired(&svc, &more)
            .unwrap()
            .slices
            .iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(again, names);
    }

    #[test]
    fn large_port_sets_split_into_slices_of_at_most_100() {
        let svc = service(vec![port("http", 80, None)]);
        let pods = arcs(
            (0..150)
                .map(|i| {
                    pod(
                        &format!("p{i}"),
                        &format!("10.0.{}.{}", i / 100, i % 100),
                        &[],
                    )
                })
                .collect(),
        );
        let d = desired(&svc, &pods).unwrap();
        let sizes: Vec<usize> = d
            .slices
            .iter()
            .map(|s| s.endpoints.as_ref().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![100, 50]);
        assert_eq!(
            d.slices[1].name_any(),
            format!("{}-1", d.slices[0].name_any())
        );
    }

    #[test]
    fn hostnames_and_headless_services() {
        let mut svc = service(vec![]);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let mut p = pod("a", "10.0.0.1", &[]);
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("a0".into());
        spec.subdomain = Some("web".into());
        let d = desired(&svc, &arcs(vec![p])).unwrap();
        // A headless Service without ports still lists its pods.
        let s = &d.endpoints.subsets.as_ref().unwrap()[0];
        assert!(s.ports.is_none());
        assert_eq!(
            s.addresses.as_ref().unwrap()[0].hostname.as_deref(),
            Some("a0")
        );
        assert_eq!(
            d.slices[0].endpoints.as_ref().unwrap()[0]
                .hostname
                .as_deref(),
            Some("a0")
        );
        assert_eq!(
            d.endpoints.metadata.labels.as_ref().unwrap()[HEADLESS_LABEL],
            ""
        );

        // Without ports a ClusterIP Service has no Endpoints addresses.
        let svc = service(vec![]);
        let d = desired(&svc, &arcs(vec![pod("a", "10.0.0.1", &[])])).unwrap();
        assert!(d.endpoints.subsets.is_none());
    }

    #[test]
    fn services_without_selector_or_external_name_are_left_alone() {
        let pods = arcs(vec![pod("a", "10.0.0.1", &[])]);
        let mut svc = service(vec![port("http", 80, None)]);
        svc.spec.as_mut().unwrap().selector = None;
        assert!(desired(&svc, &pods).is_none());
        svc.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
        assert!(desired(&svc, &pods).is_none());
        let mut svc = service(vec![port("http", 80, None)]);
        svc.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(desired(&svc, &pods).is_none());
    }
}
