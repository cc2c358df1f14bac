//! The controller framework (kube-runtime's `Controller` is the model):
//! informers (a reflector cache per kind whose changes fan out to handlers), a
//! de-duplicating work queue, expectations, and the controller loop that runs
//! a reconciler returning an `Action`, with an error policy of capped
//! exponential back-off. This module holds what they share: keys, errors,
//! the kinds a typed informer caches, and status writes.
//!
//! **A key is never reconciled by two workers at once; a key added while it is
//! being reconciled runs once more afterwards; reconcilers start only after the
//! caches they read have synced.**

mod controller;
mod expectations;
mod informer;
mod queue;

pub use controller::{Action, Controller, RESYNC, Ready, Reconciler};
pub use expectations::Expectations;
pub use informer::Informer;
pub use queue::{Queue, backoff};

use std::fmt;
use std::sync::Arc;

use kube::runtime::reflector::{Lookup, ObjectRef};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// What a controller failed at.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    #[error("{what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ControllerError> = std::result::Result<T, E>;

/// Which object a controller works on: namespace ("" when cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub ns: String,
    pub name: String,
}

impl Key {
    pub fn new(ns: &str, name: &str) -> Key {
        Key {
            ns: ns.into(),
            name: name.into(),
        }
    }

    pub fn of<K: Resource>(o: &K) -> Key {
        Key::new(
            o.meta().namespace.as_deref().unwrap_or(""),
            o.meta().name.as_deref().unwrap_or(""),
        )
    }

    /// The reference a kube `Store` is looked up by.
    pub fn obj_ref<K>(&self) -> ObjectRef<K>
    where
        K: Lookup,
        K::DynamicType: Default,
    {
        let r = ObjectRef::new(&self.name);
        if self.ns.is_empty() {
            r
        } else {
            r.within(&self.ns)
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ns.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.ns, self.name)
        }
    }
}

/// A Kubernetes kind a controller can cache (a typed, static resource).
pub trait Kind:
    Resource<DynamicType = ()>
    + Lookup<DynamicType = ()>
    + Clone
    + DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Kind for K where
    K: Resource<DynamicType = ()>
        + Lookup<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Enqueue the key of every object an informer reports.
pub fn enqueue_self<K>(queue: &Arc<Queue>) -> impl Fn(Option<&K>, &K) + Send + Sync + 'static
where
    K: Resource,
{
    let q = queue.clone();
    move |_, o| q.add(Key::of(o))
}

/// Keys of the controllers (`ownerReferences` with `controller: true`) of kind
/// `kind` of an object, before and after a change.
pub fn controller_keys<K: Resource>(old: Option<&K>, new: &K, kind: &str) -> Vec<Key> {
    let mut out = Vec::new();
    for o in old.into_iter().chain(std::iter::once(new)) {
        let ns = o.meta().namespace.as_deref().unwrap_or("");
        if let Some(r) = o
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true) && r.kind == kind)
        {
            let k = Key::new(ns, &r.name);
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    out
}

/// A kind with a status subresource a controller writes.
pub trait HasStatus: Kind + serde::Serialize {
    type Status: PartialEq + Clone;
    fn status_mut(&mut self) -> &mut Option<Self::Status>;
}

macro_rules! has_status {
    ($($k:ty => $s:ty),* $(,)?) => {$(
        impl HasStatus for $k {
            type Status = $s;
            fn status_mut(&mut self) -> &mut Option<$s> {
                &mut self.status
            }
        }
    )*};
}

has_status!(
    k8s_openapi::api::apps::v1::ReplicaSet => k8s_openapi::api::apps::v1::ReplicaSetStatus,
    k8s_openapi::api::apps::v1::Deployment => k8s_openapi::api::apps::v1::DeploymentStatus,
    k8s_openapi::api::apps::v1::DaemonSet => k8s_openapi::api::apps::v1::DaemonSetStatus,
    k8s_openapi::api::apps::v1::StatefulSet => k8s_openapi::api::apps::v1::StatefulSetStatus,
    k8s_openapi::api::batch::v1::Job => k8s_openapi::api::batch::v1::JobStatus,
    k8s_openapi::api::batch::v1::CronJob => k8s_openapi::api::batch::v1::CronJobStatus,
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler => k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus,
    k8s_openapi::api::core::v1::ResourceQuota => k8s_openapi::api::core::v1::ResourceQuotaStatus,
);

/// Replace `obj`'s status with `status` through the API, unless it is already that.
pub async fn write_status<K>(client: &kube::Client, obj: &K, status: K::Status) -> Result<()>
where
    K: HasStatus + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let mut new = obj.clone();
    if new.status_mut().as_ref() == Some(&status) {
        return Ok(());
    }
    *new.status_mut() = Some(status);
    let api: Api<K> = Api::namespaced(
        client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    api.replace_status(&obj.name_any(), &kube::api::PostParams::default(), &new)
        .await?;
    Ok(())
}
