//! The registration table: every controller the manager runs, with its name,
//! the informers it reads and its start function; and the context a start
//! function gets (the in-process client, settings, shared informers, a place
//! to spawn its controller).
//!
//! **Informers are shared: one cache per kind however many controllers read
//! it, started by the first controller that asks for it.**

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use tokio::task::JoinSet;

use super::framework::{Controller, Informer, Key, Kind, Reconciler};
use super::nodeipam::PodCidrs;

/// One controller: its name, the kinds of the informers it reads (`*` for
/// every kind the API serves) and what starts it.
pub struct Registration {
    pub name: &'static str,
    pub informers: &'static [&'static str],
    pub start: fn(&mut Ctx<'_>),
}

/// Every controller, in start order.
pub const CONTROLLERS: &[Registration] = &[
    Registration {
        name: "replicaset",
        informers: &["Pod", "ReplicaSet"],
        start: super::replicaset::start,
    },
    Registration {
        name: "deployment",
        informers: &["Pod", "ReplicaSet", "Deployment"],
        start: super::deployment::start,
    },
    Registration {
        name: "job",
        informers: &["Pod", "Job"],
        start: super::job::start,
    },
    Registration {
        name: "cronjob",
        informers: &["Job", "CronJob"],
        start: super::cronjob::start,
    },
    Registration {
        name: "daemonset",
        informers: &["Pod", "Node", "ControllerRevision", "DaemonSet"],
        start: super::daemonset::start,
    },
    Registration {
        name: "statefulset",
        informers: &["Pod", "ControllerRevision", "StatefulSet"],
        start: super::statefulset::start,
    },
    Registration {
        name: "endpoints",
        informers: &["Pod", "Service", "Endpoints", "EndpointSlice"],
        start: super::endpoints::start,
    },
    Registration {
        name: "horizontal-pod-autoscaler",
        informers: &["HorizontalPodAutoscaler"],
        start: super::hpa::start,
    },
    Registration {
        name: "scale-to-zero",
        informers: &["Pod", "Service", "HorizontalPodAutoscaler", "Deployment"],
        start: super::scaletozero::start,
    },
    Registration {
        name: "scheduler",
        informers: &["Pod", "Node", "RuntimeClass"],
        start: super::scheduler::start,
    },
    Registration {
        name: "garbage-collector",
        informers: &["*"],
        start: super::gc::start,
    },
    Registration {
        name: "node-ipam",
        informers: &["Node"],
        start: super::nodeipam::start,
    },
    Registration {
        name: "node-lifecycle",
        informers: &["Node", "Lease"],
        start: super::nodelifecycle::start,
    },
    Registration {
        name: "taint-eviction",
        informers: &["Node", "Pod"],
        start: super::tainteviction::start,
    },
    Registration {
        name: "service-ips",
        informers: &["Service"],
        start: super::serviceips::start,
    },
    Registration {
        name: "serviceaccount",
        informers: &["Namespace", "ServiceAccount", "ConfigMap"],
        start: super::serviceaccounts::start,
    },
    Registration {
        name: "clusterrole-aggregation",
        informers: &["ClusterRole"],
        start: super::clusterroles::start,
    },
    Registration {
        name: "csrsigning",
        informers: &["CertificateSigningRequest"],
        start: super::csrsigning::start,
    },
    Registration {
        name: "resourcequota",
        informers: &["ResourceQuota", "Pod"],
        start: super::resourcequota::start,
    },
    Registration {
        name: "servicelb",
        informers: &["Node", "Service"],
        start: super::servicelb::start,
    },
    Registration {
        name: "ingress-status",
        informers: &["Ingress", "IngressClass", "Node"],
        start: super::ingressstatus::start,
    },
];

/// What controllers are configured with.
#[derive(Clone)]
pub struct Settings {
    /// How often the HPA controller re-evaluates each autoscaler.
    pub hpa_sync: Duration,
    /// The cluster CIDR node IPAM hands blocks of.
    pub pod_cidrs: PodCidrs,
    /// How long a node Lease may go unrenewed before the node is Unknown.
    pub node_grace: Duration,
    /// The cluster's image store, for the runtime a pod's images need (none:
    /// images restrict nothing).
    pub images: Option<crate::imagestore::Images>,
    /// The storage layer, for the Service allocation repair (none: no repair).
    pub objects: Option<crate::storage::Objects>,
    /// The cluster CA (PEM) published in every namespace's
    /// `kube-root-ca.crt` (empty: none is published).
    pub root_ca: String,
    /// The cluster CA with its key, for approved CertificateSigningRequests
    /// (none: nothing is signed), and the longest validity it signs for.
    pub signer: Option<(std::sync::Arc<crate::pki::ClusterCa>, Duration)>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hpa_sync: Duration::from_secs(15),
            pod_cidrs: PodCidrs::default(),
            node_grace: super::nodelifecycle::GRACE,
            images: None,
            objects: None,
            root_ca: String::new(),
            signer: None,
        }
    }
}

/// The shared informers of one leadership term.
#[derive(Default)]
pub struct Informers {
    typed: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    dynamic: HashMap<String, Arc<Informer<DynamicObject>>>,
}

/// What a start function works with.
pub struct Ctx<'a> {
    pub client: Client,
    pub settings: &'a Settings,
    informers: &'a mut Informers,
    tasks: &'a mut JoinSet<()>,
    /// Kinds this controller asked for (checked against its registration).
    requested: Vec<String>,
}

impl Ctx<'_> {
    /// The shared informer of kind `K`, started on first use.
    pub fn informer<K: Kind>(&mut self) -> Arc<Informer<K>> {
        self.note(<K as kube::Resource>::kind(&()).into_owned());
        if let Some(i) = self
            .informers
            .typed
            .get(&TypeId::of::<K>())
            .and_then(|i| i.downcast_ref::<Arc<Informer<K>>>())
        {
            return i.clone();
        }
        let inf = Informer::new(Api::<K>::all(self.client.clone()));
        self.tasks.spawn(inf.clone().run());
        self.informers
            .typed
            .insert(TypeId::of::<K>(), Box::new(inf.clone()));
        inf
    }

    /// The shared metadata-only informer of a kind known only at run time.
    pub fn metadata_informer(&mut self, ar: &ApiResource) -> Arc<Informer<DynamicObject>> {
        self.note("*".into());
        let id = format!("{}/{}", ar.api_version, ar.plural);
        if let Some(i) = self.informers.dynamic.get(&id) {
            return i.clone();
        }
        let inf = Informer::metadata(self.client.clone(), ar.clone());
        self.tasks.spawn(inf.clone().run());
        self.informers.dynamic.insert(id, inf.clone());
        inf
    }

    fn note(&mut self, kind: String) {
        if !self.requested.contains(&kind) {
            self.requested.push(kind);
        }
    }

    /// Run a controller until the leadership term ends.
    pub fn run<R: Reconciler>(&mut self, c: Controller<R>) {
        self.tasks.spawn(c.run());
    }
}

/// Resync keys: every object an informer holds.
pub fn all_keys<K: Kind>(inf: &Arc<Informer<K>>) -> impl Fn() -> Vec<Key> + Send + 'static {
    let inf = inf.clone();
    move || inf.list("").iter().map(|o| Key::of(o.as_ref())).collect()
}

/// Start every registered controller into `tasks`; returns, per controller,
/// the kinds it asked informers of.
pub fn start_all(
    tasks: &mut JoinSet<()>,
    client: &Client,
    settings: &Settings,
) -> Vec<(&'static str, Vec<String>)> {
    let mut informers = Informers::default();
    let mut out = Vec::new();
    for r in CONTROLLERS {
        let mut ctx = Ctx {
            client: client.clone(),
            settings,
            informers: &mut informers,
            tasks,
            requested: Vec::new(),
        };
        (r.start)(&mut ctx);
        out.push((r.name, ctx.requested));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_controller_reads_the_informers_it_registers() {
        let mut tasks = JoinSet::new();
        let started = start_all(
            &mut tasks,
            &super::super::bench::no_api(),
            &Settings::default(),
        );
        tasks.abort_all();
        assert_eq!(started.len(), CONTROLLERS.len());
        for ((name, mut asked), r) in started.into_iter().zip(CONTROLLERS) {
            assert_eq!(name, r.name);
            let mut declared: Vec<String> = r.informers.iter().map(|s| s.to_string()).collect();
            declared.sort();
            asked.sort();
            assert_eq!(asked, declared, "controller {name}");
        }
        let mut names: Vec<&str> = CONTROLLERS.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CONTROLLERS.len(), "names are unique");
    }
}
