//! The garbage collector: over every kind the API serves (the resource list
//! in `model::kinds`, Events excepted), read from one informer per kind,
//! deletes objects whose owners are all gone, drops references to owners that
//! are gone, orphans the dependents of an object deleted with the `orphan`
//! finalizer and deletes those of one held by `foregroundDeletion` before
//! letting it go. One key stands for the whole object graph: it is queued when
//! an object is created with owners, deleted, or changes its owners,
//! finalizers or deletion mark, and every 10 seconds.
//!
//! **An owner is only taken for gone after a live read by name finds nothing
//! with its uid, so a dependent cached before its owner is never collected.**

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::{Api, Client, ResourceExt};

use crate::controllers::framework::{Action, Controller, Informer, Key, Queue, Reconciler, Result};
use crate::controllers::registration::Ctx;

const NAME: &str = "garbage-collector";

/// The finalizer that orphans dependents before the object goes.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that holds an object until its dependents are deleted.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// A full pass at least this often, even when nothing changed.
const PERIOD: Duration = Duration::from_secs(10);
/// A pass reads every object; pod churn would otherwise run it back to back.
/// One pass a second at most batches a rollout's changes.
const MIN_GAP: Duration = Duration::from_secs(1);

/// One collected kind: its API resource, scope and cache.
pub struct CollectedKind {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub informer: Arc<Informer<DynamicObject>>,
}

pub struct Collector {
    pub client: Client,
    pub kinds: Vec<CollectedKind>,
}

/// The one key the collector works on.
fn graph_key() -> Key {
    Key::new("", "object-graph")
}

/// One cached object and the kind it is.
struct Node<'a> {
    kind: &'a CollectedKind,
    obj: Arc<DynamicObject>,
}

impl Node<'_> {
    fn ns(&self) -> Option<String> {
        self.obj.namespace().filter(|n| !n.is_empty())
    }
    fn name(&self) -> String {
        self.obj.name_any()
    }
    fn uid(&self) -> String {
        self.obj.uid().unwrap_or_default()
    }
    fn deleting(&self) -> bool {
        self.obj.metadata.deletion_timestamp.is_some()
    }
    fn owners(&self) -> &[OwnerReference] {
        self.obj.owner_references()
    }
    fn api(&self, client: &Client) -> Api<DynamicObject> {
        api_for(client, self.kind, self.ns().as_deref())
    }
}

fn api_for(client: &Client, k: &CollectedKind, ns: Option<&str>) -> Api<DynamicObject> {
    match ns {
        Some(ns) if k.namespaced => Api::namespaced_with(client.clone(), ns, &k.resource),
        _ => Api::all_with(client.clone(), &k.resource),
    }
}

/// Whether a change to an object can matter to the collector: a new object
/// with owners or a deletion mark, an object gone, or a change of its owners,
/// finalizers or deletion mark.
pub fn relevant(old: Option<&DynamicObject>, new: &DynamicObject, gone: bool) -> bool {
    if gone {
        return true;
    }
    let Some(old) = old else {
        return !new.owner_references().is_empty() || new.metadata.deletion_timestamp.is_some();
    };
    old.metadata.owner_references != new.metadata.owner_references
        || old.metadata.finalizers != new.metadata.finalizers
        || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
}

/// What one step came to: done, or a conflict with a newer version (tried
/// again soon).
#[derive(PartialEq)]
enum Step {
    Done,
    Conflict,
}

impl Collector {
    pub fn watch(&self, queue: &Arc<Queue>) {
        for k in &self.kinds {
            let (q, inf): (_, Weak<Informer<DynamicObject>>) =
                (queue.clone(), Arc::downgrade(&k.informer));
            k.informer.on(move |old, new| {
                let gone = inf.upgrade().is_some_and(|i| {
                    let key = Key::new(new.namespace().as_deref().unwrap_or(""), &new.name_any());
                    i.get(&key).is_none()
                });
                if relevant(old, new, gone) {
                    q.add(graph_key());
                }
            });
        }
    }

    /// The collected kind of an owner reference, if the API serves it.
    fn kind_of(&self, r: &OwnerReference) -> Option<&CollectedKind> {
        self.kinds
            .iter()
            .find(|k| k.resource.api_version == r.api_version && k.resource.kind == r.kind)
    }

    /// Whether the owner `r` of `n` is really gone: no object of its kind by
    /// that name with that uid (a kind the API does not serve cannot be
    /// checked, so counts as present).
    async fn owner_gone(&self, n: &Node<'_>, r: &OwnerReference) -> Result<bool> {
        let Some(k) = self.kind_of(r) else {
            return Ok(false);
        };
        let api = api_for(&self.client, k, n.ns().as_deref());
        Ok(match api.get_opt(&r.name).await? {
            Some(owner) => owner.uid().as_deref() != Some(r.uid.as_str()),
            None => true,
        })
    }

    async fn delete(&self, n: &Node<'_>, propagation: PropagationPolicy) -> Result<Step> {
        let dp = DeleteParams {
            propagation_policy: Some(propagation),
            preconditions: Some(Preconditions {
                uid: Some(n.uid()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match n.api(&self.client).delete(&n.name(), &dp).await {
            Ok(_) => Ok(Step::Done),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Step::Done),
            Err(e) => Err(e.into()),
        }
    }

    /// Set one metadata field of `n` with a merge patch pinned to the cached
    /// resourceVersion: the cache holds metadata only, so the object is never
    /// written whole, and a change since the cache saw it is a conflict.
    async fn set_metadata(
        &self,
        n: &Node<'_>,
        field: &str,
        value: serde_json::Value,
    ) -> Result<Step> {
        let pp = PatchParams {
            field_manager: Some(NAME.into()),
            ..Default::default()
        };
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": n.obj.metadata.resource_version,
            field: value,
        }});
        match n
            .api(&self.client)
            .patch(&n.name(), &pp, &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(Step::Done),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Step::Done),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Step::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrite `n` without the owner references whose uid `drop` picks.
    async fn drop_owners(&self, n: &Node<'_>, drop: impl Fn(&str) -> bool) -> Result<Step> {
        let kept: Vec<&OwnerReference> = n.owners().iter().filter(|r| !drop(&r.uid)).collect();
        self.set_metadata(n, "ownerReferences", serde_json::json!(kept))
            .await
    }

    async fn remove_finalizer(&self, n: &Node<'_>, finalizer: &str) -> Result<Step> {
        let kept: Vec<&String> = n
            .obj
            .finalizers()
            .iter()
            .filter(|f| *f != finalizer)
            .collect();
        self.set_metadata(n, "finalizers", serde_json::json!(kept))
            .await
    }

    /// `orphan`: take `n` out of its dependents' owner references, then let it go.
    async fn orphan(&self, n: &Node<'_>, deps: &[&Node<'_>]) -> Result<Step> {
        let uid = n.uid();
        for d in deps {
            if self.drop_owners(d, |u| u == uid).await? == Step::Conflict {
                return Ok(Step::Conflict);
            }
        }
        self.remove_finalizer(n, ORPHAN_FINALIZER).await
    }

    /// `foregroundDeletion`: delete the dependents (their own dependents first
    /// when they block), and let `n` go once no blocking dependent is left.
    async fn foreground(&self, n: &Node<'_>, deps: &[&Node<'_>]) -> Result<Step> {
        let uid = n.uid();
        let mut blocking = 0;
        for d in deps {
            let blocks = d
                .owners()
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if !d.deleting() {
                let policy = if blocks {
                    PropagationPolicy::Foreground
                } else {
                    PropagationPolicy::Background
                };
                self.delete(d, policy).await?;
            }
        }
        if blocking == 0 {
            return self.remove_finalizer(n, FOREGROUND_FINALIZER).await;
        }
        Ok(Step::Done)
    }

    /// Every cached object of every collected kind.
    fn snapshot(&self) -> Vec<Node<'_>> {
        self.kinds
            .iter()
            .flat_map(|k| {
                k.informer
                    .list("")
                    .into_iter()
                    .map(move |obj| Node { kind: k, obj })
            })
            .collect()
    }

    /// One pass over the graph; whether any step met a conflict.
    async fn pass(&self) -> Result<bool> {
        let nodes = self.snapshot();
        let by_uid: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.uid(), i))
            .collect();
        let mut dependents: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for r in n.owners() {
                if by_uid.contains_key(&r.uid) {
                    dependents.entry(r.uid.clone()).or_default().push(i);
                }
            }
        }
        let mut conflict = false;
        let mut note = |r: Result<Step>| match r {
            Ok(Step::Done) => {}
            Ok(Step::Conflict) => conflict = true,
            Err(e) => {
                tracing::debug!(error = %e, "garbage collection step failed; retried next pass");
            }
        };
        for n in nodes.iter().filter(|n| n.deleting()) {
            let deps: Vec<&Node<'_>> = dependents
                .get(&n.uid())
                .into_iter()
                .flatten()
                .map(|&i| &nodes[i])
                .collect();
            let fins = n.obj.finalizers();
            if fins.iter().any(|f| f == ORPHAN_FINALIZER) {
                note(self.orphan(n, &deps).await);
            } else if fins.iter().any(|f| f == FOREGROUND_FINALIZER) {
                note(self.foreground(n, &deps).await);
            }
        }
        for n in nodes.iter().filter(|n| !n.deleting()) {
            let owners = n.owners();
            if owners.is_empty() {
                continue;
            }
            let mut gone: HashSet<String> = HashSet::new();
            for r in owners {
                if !by_uid.contains_key(&r.uid) && self.owner_gone(n, r).await? {
                    gone.insert(r.uid.clone());
                }
            }
            if gone.is_empty() {
                continue;
            }
            if gone.len() == owners.len() {
                tracing::debug!(kind = %n.kind.resource.kind, name = %n.name(), "collecting: every owner is gone");
                note(self.delete(n, PropagationPolicy::Background).await);
            } else {
                note(self.drop_owners(n, |uid| gone.contains(uid)).await);
            }
        }
        Ok(conflict)
    }
}

impl Reconciler for Collector {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, _key: &Key) -> Result<Action> {
        let conflict = self.pass().await?;
        tokio::time::sleep(MIN_GAP).await;
        Ok(Action::requeue(if conflict { MIN_GAP } else { PERIOD }))
    }
}

/// Start the collector over one informer per kind the API serves.
pub fn start(ctx: &mut Ctx<'_>) {
    let registry = crate::model::kinds::Registry::builtin();
    let mut prefixes = HashSet::new();
    let mut kinds = Vec::new();
    for t in registry.all() {
        if t.kind == "Event" || !prefixes.insert(t.prefix()) {
            continue;
        }
        let resource = ApiResource {
            group: t.group.into(),
            version: t.version.into(),
            api_version: t.api_version(),
            kind: t.kind.into(),
            plural: t.plural.into(),
        };
        let informer = ctx.metadata_informer(&resource);
        kinds.push(CollectedKind {
            resource,
            namespaced: t.namespaced,
            informer,
        });
    }
    let ready = kinds.iter().map(|k| (&k.informer).into()).collect();
    let c = Arc::new(Collector {
        client: ctx.client.clone(),
        kinds,
    });
    let q = Queue::new();
    c.watch(&q);
    q.add(graph_key());
    ctx.run(Controller::new(c, q).after_sync(ready));
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn obj(owner: Option<&str>, finalizers: &[&str], deleting: bool) -> DynamicObject {
        let ar = ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&());
        let mut o = DynamicObject::new("p", &ar).within("ns");
        o.metadata.owner_references = owner.map(|uid| {
            vec![OwnerReference {
                uid: uid.into(),
                ..Default::default()
            }]
        });
        o.metadata.finalizers =
            (!finalizers.is_empty()).then(|| finalizers.iter().map(|f| f.to_string()).collect());
        o.metadata.deletion_timestamp =
            deleting.then(|| Time("2026-01-01T00:00:00Z".parse().unwrap()));
        o
    }

    #[test]
    fn which_changes_queue_a_pass() {
        let plain = obj(None, &[], false);
        let owned = obj(Some("u1"), &[], false);
        let cases: [(Option<&DynamicObject>, DynamicObject, bool, bool); 8] = [
            (None, plain.clone(), false, false),
            (None, owned.clone(), false, true),
            (None, obj(None, &["orphan"], true), false, true),
            (Some(&plain), plain.clone(), true, true),
            (Some(&owned), owned.clone(), false, false),
            (Some(&owned), obj(Some("u2"), &[], false), false, true),
            (Some(&plain), obj(None, &["orphan"], false), false, true),
            (Some(&plain), obj(None, &[], true), false, true),
        ];
        for (i, (old, new, gone, want)) in cases.into_iter().enumerate() {
            assert_eq!(relevant(old, &new, gone), want, "case {i}");
        }
    }
}
