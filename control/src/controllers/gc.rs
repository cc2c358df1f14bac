//! The garbage collector: over every kind in the registry, deletes objects
//! whose owners are all gone, drops references to owners that are gone,
//! orphans the dependents of an object deleted with the `orphan` finalizer and
//! deletes those of one held by `foregroundDeletion` before letting it go.
//!
//! **An owner is only taken for gone after a live read by name finds nothing
//! with its uid, so a dependent listed before its owner is never collected.**

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use super::support::{leader_loop, s, writer};
use crate::model::kinds::ResourceType;
use crate::model::meta::finalizers_of;
use crate::model::status::ApiResult;
use crate::storage::{DeleteOptions, FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Objects, Propagation};

const NAME: &str = "garbage-collector";

/// Run passes whenever this server leads.
pub async fn run(o: Objects) {
    leader_loop(o, NAME, &["/"], Duration::from_secs(10), |o| async move {
        let out = pass(&o).await;
        // A pass reads every object; pod status churn would otherwise run it
        // back to back. One pass a second at most batches a rollout's changes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        out
    })
    .await;
}

/// One stored object and the type it is stored as.
struct Node {
    t: ResourceType,
    obj: Value,
}

impl Node {
    fn ns(&self) -> Option<&str> {
        Some(s(&self.obj, "/metadata/namespace")).filter(|n| !n.is_empty())
    }
    fn name(&self) -> &str {
        s(&self.obj, "/metadata/name")
    }
    fn uid(&self) -> &str {
        s(&self.obj, "/metadata/uid")
    }
    fn deleting(&self) -> bool {
        self.obj
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
    }
    fn owners(&self) -> Vec<Value> {
        self.obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }
}

/// Every object of every kind, once each (kinds served at several versions
/// share storage).
async fn snapshot(o: &Objects) -> ApiResult<Vec<Node>> {
    let mut seen_prefixes = HashSet::new();
    let mut out = Vec::new();
    for t in o.registry.all() {
        if !seen_prefixes.insert(t.prefix()) || t.kind == "Event" {
            continue;
        }
        let (items, _, _) = o
            .list(
                t,
                None,
                &Default::default(),
                &Default::default(),
                None,
                None,
            )
            .await?;
        out.extend(items.into_iter().map(|obj| Node { t: t.clone(), obj }));
    }
    Ok(out)
}

async fn pass(o: &Objects) -> ApiResult<()> {
    let nodes = snapshot(o).await?;
    let by_uid: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.uid(), i))
        .collect();
    let mut dependents: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for r in n.owners() {
            if let Some(uid) = r.get("uid").and_then(Value::as_str)
                && let Some(&owner) = by_uid.get(uid)
            {
                dependents.entry(nodes[owner].uid()).or_default().push(i);
            }
        }
    }
    for n in nodes.iter().filter(|n| n.deleting()) {
        let deps = dependents.get(n.uid()).cloned().unwrap_or_default();
        let fins = finalizers_of(&n.obj);
        if fins.iter().any(|f| f == ORPHAN_FINALIZER) {
            log(orphan(o, n, deps.iter().map(|&i| &nodes[i])).await);
        } else if fins.iter().any(|f| f == FOREGROUND_FINALIZER) {
            log(foreground(o, n, deps.iter().map(|&i| &nodes[i])).await);
        }
    }
    for n in nodes.iter().filter(|n| !n.deleting()) {
        let owners = n.owners();
        if owners.is_empty() {
            continue;
        }
        let mut gone = Vec::new();
        for r in &owners {
            let uid = s(r, "/uid");
            if !by_uid.contains_key(uid) && owner_gone(o, n, r).await? {
                gone.push(uid.to_string());
            }
        }
        if gone.is_empty() {
            continue;
        }
        if gone.len() == owners.len() {
            tracing::debug!(kind = %n.t.kind, name = n.name(), "collecting: every owner is gone");
            log(delete(o, n, Propagation::Background).await);
        } else {
            log(drop_owners(o, n, |uid| gone.iter().any(|g| g == uid)).await);
        }
    }
    Ok(())
}

fn log(r: ApiResult<()>) {
    if let Err(e) = r {
        tracing::debug!(error = %e.message, "garbage collection step failed; retried next pass");
    }
}

/// Whether the owner `r` of `n` is really gone: no object of its kind by that
/// name with that uid (a kind the registry does not know cannot be checked, so
/// counts as present).
async fn owner_gone(o: &Objects, n: &Node, r: &Value) -> ApiResult<bool> {
    let Some(t) = o.registry.by_kind(s(r, "/apiVersion"), s(r, "/kind")) else {
        return Ok(false);
    };
    let ns = if t.namespaced { n.ns() } else { None };
    match o.get(t, ns, s(r, "/name")).await {
        Ok(owner) => Ok(s(&owner, "/metadata/uid") != s(r, "/uid")),
        Err(e) if e.code == 404 => Ok(true),
        Err(e) => Err(e),
    }
}

async fn delete(o: &Objects, n: &Node, propagation: Propagation) -> ApiResult<()> {
    let opts = DeleteOptions {
        uid: Some(n.uid().to_string()),
        propagation: Some(propagation),
        ..DeleteOptions::default()
    };
    match o.delete(&n.t, n.ns(), n.name(), &opts).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Rewrite `n` without the owner references whose uid `drop` picks.
async fn drop_owners(o: &Objects, n: &Node, drop: impl Fn(&str) -> bool) -> ApiResult<()> {
    let kept: Vec<Value> = n
        .owners()
        .into_iter()
        .filter(|r| !drop(s(r, "/uid")))
        .collect();
    let mut obj = n.obj.clone();
    obj["metadata"]["ownerReferences"] = json!(kept);
    update(o, n, obj).await
}

async fn update(o: &Objects, n: &Node, obj: Value) -> ApiResult<()> {
    match o
        .update(&n.t, n.ns(), n.name(), obj, None, &writer(NAME))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn remove_finalizer(o: &Objects, n: &Node, finalizer: &str) -> ApiResult<()> {
    let kept: Vec<String> = finalizers_of(&n.obj)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    let mut obj = n.obj.clone();
    obj["metadata"]["finalizers"] = json!(kept);
    update(o, n, obj).await
}

/// `orphan`: take `n` out of its dependents' owner references, then let it go.
async fn orphan<'a>(o: &Objects, n: &Node, deps: impl Iterator<Item = &'a Node>) -> ApiResult<()> {
    let uid = n.uid();
    for d in deps {
        drop_owners(o, d, |u| u == uid).await?;
    }
    remove_finalizer(o, n, ORPHAN_FINALIZER).await
}

/// `foregroundDeletion`: delete the dependents (their own dependents first when
/// they block), and let `n` go once no blocking dependent is left.
async fn foreground<'a>(
    o: &Objects,
    n: &Node,
    deps: impl Iterator<Item = &'a Node>,
) -> ApiResult<()> {
    let uid = n.uid();
    let mut blocking = 0;
    for d in deps {
        let blocks = d.owners().iter().any(|r| {
            s(r, "/uid") == uid
                && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
        });
        if blocks {
            blocking += 1;
        }
        if !d.deleting() {
            let policy = if blocks {
                Propagation::Foreground
            } else {
                Propagation::Background
            };
            delete(o, d, policy).await?;
        }
    }
    if blocking == 0 {
        remove_finalizer(o, n, FOREGROUND_FINALIZER).await?;
    }
    Ok(())
}
