//! Pods: graceful deletion (a pod on a node stays, marked, until that node's
//! agent has stopped it), finalizers that never outlive the grace period, and
//! `pods/binding`.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::model::ResourceType;
use crate::model::meta::now_rfc3339;
use crate::model::status::{ApiError, ApiResult};
use crate::store::{KeyValue, Op};

use super::strategy::Strategy;
use super::{Objects, meta_mut};

/// The Pod strategy.
pub struct PodStrategy;

impl Strategy for PodStrategy {
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<crate::model::validate::Cause> {
        crate::model::podspec::pod_update(new, old)
    }

    fn delete_gracefully<'a>(
        &'a self,
        o: &'a Objects,
        t: &'a ResourceType,
        current: &'a KeyValue,
        obj: &'a Value,
        grace: Option<i64>,
    ) -> BoxFuture<'a, ApiResult<Option<Value>>> {
        Box::pin(o.mark_pod_deleted(t, current, obj, grace))
    }

    /// The garbage collector does not hold pods for their dependents.
    fn propagates(&self) -> bool {
        false
    }

    /// A held pod's grace period is over: its agent no longer waits.
    fn held_grace(&self, _already_deleting: bool) -> Option<i64> {
        Some(0)
    }

    fn may_complete_deletion(&self, obj: &Value) -> bool {
        pod_may_go(obj)
    }
}

/// A deleting pod that no agent still has to stop: unbound, finished, or
/// already released by its agent (grace 0).
pub(super) fn pod_may_go(pod: &Value) -> bool {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        || matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
        || pod
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(0)
}

impl Objects {
    /// Graceful pod deletion: a pod running on a node that exists gets a
    /// `deletionTimestamp` (now + grace) and stays until that node's agent has
    /// stopped it and deletes it with grace 0. Returns the marked pod, or `None`
    /// when the pod should go at once (unbound, finished, grace 0, node gone).
    async fn mark_pod_deleted(
        &self,
        t: &ResourceType,
        current: &KeyValue,
        pod: &Value,
        grace: Option<i64>,
    ) -> ApiResult<Option<Value>> {
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let grace = grace
            .or_else(|| {
                pod.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30);
        if node.is_empty() || matches!(phase, "Succeeded" | "Failed") || grace <= 0 {
            return Ok(None);
        }
        let node_exists = match self.registry.by_kind("v1", "Node") {
            Some(nt) => self.store.get(&nt.key(None, node)).await?.is_some(),
            None => false,
        };
        if !node_exists {
            return Ok(None);
        }
        if pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            return Ok(Some(pod.clone()));
        }
        let mut marked = pod.clone();
        let at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(grace))
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let m = meta_mut(&mut marked);
        m.insert("deletionTimestamp".into(), json!(at));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        self.rewrite(t, current, marked).await.map(Some)
    }

    /// `pods/binding`: put a pending pod on a node (sets `spec.nodeName` and
    /// `PodScheduled=True`). A pod already bound is a 409.
    pub async fn bind(&self, ns: &str, name: &str, node: &str) -> ApiResult<Value> {
        let t = self
            .registry
            .by_kind("v1", "Pod")
            .cloned()
            .ok_or_else(|| ApiError::internal("pods are not registered"))?;
        let key = t.key(Some(ns), name);
        let current = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found("pods", name))?;
        let mut pod = self.decode(&current)?;
        let bound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !bound.is_empty() {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{bound}\""
                ),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        let mut conds: Vec<Value> = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.get("type") != Some(&json!("PodScheduled")))
            .collect();
        conds.push(
            json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}),
        );
        pod["status"]["conditions"] = Value::Array(conds);
        let rev = self
            .store
            .write(Op::update(
                key.clone(),
                self.encode(&key, &pod),
                current.mod_revision,
            ))
            .await
            .map_err(|e| ApiError::from_store(e, "pods", name))?;
        meta_mut(&mut pod).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(pod)
    }
}
