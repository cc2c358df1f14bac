//! Claiming dependents by label selector and controller reference, as every
//! workload controller does: keep what it controls and still selects, release
//! what it controls but no longer selects, adopt matching orphans.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::framework::Result;
use super::framework::{Informer, Key, Kind, Queue, controller_keys};
use super::podutil::{controlled_by, controller_of, selects, terminating};

/// The objects among `candidates` (all in one namespace) that `owner`
/// controls after adopting and releasing. An owner being deleted adopts nothing.
pub async fn claim<K>(
    api: &Api<K>,
    owner: &OwnerReference,
    owner_deleting: bool,
    sel: &LabelSelector,
    candidates: Vec<Arc<K>>,
) -> Result<Vec<Arc<K>>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut owned = Vec::new();
    for o in candidates {
        let matches = selects(sel, o.labels());
        if controlled_by(o.as_ref(), &owner.uid) {
            if matches {
                owned.push(o);
            } else if !terminating(o.as_ref()) {
                set_owners(api, o.as_ref(), None, &owner.uid).await?;
            }
        } else if controller_of(o.as_ref()).is_none()
            && matches
            && !terminating(o.as_ref())
            && !owner_deleting
        {
            let adopted = set_owners(api, o.as_ref(), Some(owner.clone()), &owner.uid).await?;
            owned.push(Arc::new(adopted));
        }
    }
    Ok(owned)
}

/// Rewrite `o`'s owner references without `uid`, plus `add`; the patch carries
/// `o`'s uid so it fails on a different object of the same name.
async fn set_owners<K>(api: &Api<K>, o: &K, add: Option<OwnerReference>, uid: &str) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut refs: Vec<_> = o
        .owner_references()
        .iter()
        .filter(|r| r.uid != uid)
        .cloned()
        .collect();
    refs.extend(add);
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": o.uid()}});
    Ok(api
        .patch(
            &o.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

/// Delete exactly `o` (by uid: a newer object of the same name stays), with
/// `propagation` for its dependents; already gone counts as done.
pub async fn delete_exact<K>(
    api: &Api<K>,
    o: &K,
    propagation: Option<PropagationPolicy>,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let dp = DeleteParams {
        propagation_policy: propagation,
        preconditions: Some(Preconditions {
            uid: o.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&o.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A change handler for dependents: queue their controller of kind `kind`
/// (before and after the change), or, for an orphan, every owner in its
/// namespace whose selector (`selector_of`) selects it, since any may adopt it.
pub fn enqueue_owners<D, O>(
    queue: &Arc<Queue>,
    owners: &Arc<Informer<O>>,
    kind: &'static str,
    selector_of: fn(&O) -> &LabelSelector,
) -> impl Fn(Option<&D>, &D) + Send + Sync + 'static
where
    D: Resource,
    O: Kind,
{
    let (q, owners) = (queue.clone(), owners.clone());
    move |old, new| {
        let keys = controller_keys(old, new, kind);
        if keys.is_empty() && controller_of(new).is_none() {
            let ns = new.meta().namespace.clone().unwrap_or_default();
            for o in owners.list(&ns) {
                if selects(selector_of(o.as_ref()), new.labels()) {
                    q.add(Key::of(o.as_ref()));
                }
            }
        }
        for k in keys {
            q.add(k);
        }
    }
}
