//! Taint eviction: pods on a node with NoExecute taints go once their
//! toleration of them runs out. A node is looked at when it changes and when a
//! pod lands on it, and again when its next pod's toleration runs out; nodes
//! and pods come from informer caches.
//!
//! **A pod is deleted by uid, so a newer pod of the same name stays.**

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::controllers::framework::{
    Action, Controller, ControllerError, Informer, Key, Queue, Reconciler, Result, enqueue_self,
};
use crate::controllers::registration::{Ctx, all_keys};

/// A string field of a JSON object ("" when absent).
fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// When a pod must leave a node with these NoExecute taints: `None` to stay,
/// `Some(at)` (Unix seconds) to go then.
pub fn eviction_time(pod: &Value, taints: &[Value]) -> Option<i64> {
    let tolerations: Vec<Value> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut at: Option<i64> = None;
    for taint in taints.iter().filter(|t| s(t, "/effect") == "NoExecute") {
        let added = s(taint, "/timeAdded")
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .unwrap_or_else(|_| jiff::Timestamp::now().as_second());
        let matching: Vec<&Value> = tolerations
            .iter()
            .filter(|t| {
                crate::model::scheduling::toleration_matches(
                    (
                        s(t, "/key"),
                        s(t, "/operator"),
                        s(t, "/value"),
                        s(t, "/effect"),
                    ),
                    (s(taint, "/key"), s(taint, "/value"), "NoExecute"),
                )
            })
            .collect();
        let deadline = if matching.is_empty() {
            Some(added)
        } else {
            // The shortest bound among the tolerations that match; unbounded
            // if any of them is.
            let secs: Vec<Option<i64>> = matching
                .iter()
                .map(|t| t.get("tolerationSeconds").and_then(Value::as_i64))
                .collect();
            if secs.iter().any(Option::is_none) {
                None
            } else {
                secs.into_iter().flatten().min().map(|s| added + s.max(0))
            }
        };
        if let Some(d) = deadline {
            at = Some(at.map_or(d, |a| a.min(d)));
        }
    }
    at
}

pub struct TaintEviction {
    pub client: Client,
    pub nodes: Arc<Informer<Node>>,
    pub pods: Arc<Informer<Pod>>,
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn to_value<T: serde::Serialize>(what: &'static str, o: &T) -> Result<Value> {
    serde_json::to_value(o).map_err(|source| ControllerError::Encode { what, source })
}

impl TaintEviction {
    pub fn watch(&self, queue: &Arc<Queue>) {
        self.nodes.on(enqueue_self(queue));
        let q = queue.clone();
        self.pods.on(move |old, new| {
            let landed = node_of(new);
            if landed.is_some() && old.and_then(node_of) != landed {
                q.add(Key::new("", landed.unwrap_or_default()));
            }
        });
    }
}

impl Reconciler for TaintEviction {
    fn name(&self) -> &'static str {
        "taint-eviction"
    }

    /// Delete the pods on the node whose toleration of its NoExecute taints
    /// ran out; look again when the next one runs out.
    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(node) = self.nodes.get(key) else {
            return Ok(Action::await_change());
        };
        let mut taints = Vec::new();
        for t in node.spec.iter().flat_map(|s| s.taints.iter().flatten()) {
            if t.effect == "NoExecute" {
                taints.push(to_value("taint", t)?);
            }
        }
        if taints.is_empty() {
            return Ok(Action::await_change());
        }
        let now = jiff::Timestamp::now().as_second();
        let mut next: Option<i64> = None;
        for p in self.pods.list("") {
            if p.metadata.deletion_timestamp.is_some() || node_of(&p) != Some(key.name.as_str()) {
                continue;
            }
            let Some(at) = eviction_time(&to_value("pod", p.as_ref())?, &taints) else {
                continue;
            };
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
            tracing::info!(pod = %format!("{ns}/{name}"), node = %key.name, "evicting: NoExecute taint not tolerated");
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            if let Err(e) = Api::<Pod>::namespaced(self.client.clone(), &ns)
                .delete(&name, &dp)
                .await
            {
                tracing::debug!(pod = name, error = %e, "eviction failed; retried");
                next = Some(now + 1);
            }
        }
        Ok(Action::requeue_opt(
            next.map(|at| Duration::from_secs((at - now).max(1) as u64)),
        ))
    }
}

/// Start taint eviction (one worker).
pub fn start(ctx: &mut Ctx<'_>) {
    let nodes = ctx.informer::<Node>();
    let pods = ctx.informer::<Pod>();
    let c = Arc::new(TaintEviction {
        client: ctx.client.clone(),
        nodes: nodes.clone(),
        pods: pods.clone(),
    });
    let q = Queue::new();
    c.watch(&q);
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![(&nodes).into(), (&pods).into()])
            .resync(all_keys(&nodes)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UNREACHABLE: &str = crate::controllers::nodelifecycle::UNREACHABLE;

    #[test]
    fn eviction_follows_tolerations() {
        let taint =
            json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"});
        let t0 = "2026-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        let pod = |tols: Value| json!({"spec": {"tolerations": tols}});
        assert_eq!(
            eviction_time(&pod(json!([])), std::slice::from_ref(&taint)),
            Some(t0)
        );
        let bounded = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]),
        );
        assert_eq!(
            eviction_time(&bounded, std::slice::from_ref(&taint)),
            Some(t0 + 30)
        );
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, std::slice::from_ref(&taint)), None);
        let other = pod(json!([{"key": "x", "operator": "Exists", "effect": "NoExecute"}]));
        assert_eq!(eviction_time(&other, &[taint]), Some(t0));
    }
}
