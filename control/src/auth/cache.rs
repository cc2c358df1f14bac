//! The roles and bindings the authorizer reads, kept in memory on every
//! server: loaded from the store, then reloaded whenever a Role, ClusterRole,
//! RoleBinding or ClusterRoleBinding changes (one watch on their group's
//! prefix).
//!
//! **Level-triggered: a change, a lost watch or a failed load all end in a
//! fresh whole load; a request is judged on the last complete one.**

use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

use super::rbac::{Policy, RBAC_GROUP};
use crate::model::status::ApiResult;
use crate::storage::Objects;

/// The current RBAC policy, shared by the API handlers.
#[derive(Clone, Default)]
pub struct PolicyCache {
    current: Arc<RwLock<Arc<Policy>>>,
}

impl PolicyCache {
    /// The policy as last loaded.
    pub fn policy(&self) -> Arc<Policy> {
        self.current.read().expect("policy").clone()
    }

    /// Load now (so the first requests are judged on the stored policy), then
    /// keep the cache current until the task is dropped.
    pub async fn start(&self, objects: Objects) -> tokio::task::JoinHandle<()> {
        let mut revision = self.reload(&objects).await.unwrap_or(0);
        let cache = self.clone();
        tokio::spawn(async move {
            let prefix = format!("/{RBAC_GROUP}/");
            loop {
                match objects.store.watch(&prefix, revision) {
                    Ok(mut w) => {
                        if let Err(e) = w.next().await {
                            tracing::debug!(error = %e, "rbac watch ended; reloading");
                        }
                        // Let a burst of changes (a chart's roles) land first.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "rbac watch refused; reloading");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                match cache.reload(&objects).await {
                    Ok(r) => revision = r,
                    Err(e) => {
                        tracing::warn!(error = %e.message, "cannot load roles and bindings");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    }

    /// Read every role and binding; the revision they were read at.
    async fn reload(&self, objects: &Objects) -> ApiResult<u64> {
        let (policy, revision) = load(objects).await?;
        *self.current.write().expect("policy") = Arc::new(policy);
        Ok(revision)
    }

    /// A cache holding `policy` (tests, and the in-process cluster).
    pub fn fixed(policy: Policy) -> PolicyCache {
        PolicyCache {
            current: Arc::new(RwLock::new(Arc::new(policy))),
        }
    }
}

async fn load(objects: &Objects) -> ApiResult<(Policy, u64)> {
    let prefix = format!("/{RBAC_GROUP}/");
    let mut policy = Policy::default();
    let mut start: Option<String> = None;
    let mut revision = 0;
    loop {
        let (kvs, rev) = objects.store.list(&prefix, start.as_deref(), 1000).await?;
        revision = revision.max(rev);
        for kv in &kvs {
            let plural = kv.key[prefix.len()..].split('/').next().unwrap_or("");
            let value = objects.decode(kv)?;
            // An object that does not decode (it passed validation, so this
            // is corruption) grants nothing rather than stopping every load.
            let added = match plural {
                "clusterroles" => serde_json::from_value::<ClusterRole>(value)
                    .map(|r| policy.cluster_roles.push(Arc::new(r))),
                "clusterrolebindings" => serde_json::from_value::<ClusterRoleBinding>(value)
                    .map(|b| policy.cluster_role_bindings.push(Arc::new(b))),
                "roles" => {
                    serde_json::from_value::<Role>(value).map(|r| policy.roles.push(Arc::new(r)))
                }
                "rolebindings" => serde_json::from_value::<RoleBinding>(value)
                    .map(|b| policy.role_bindings.push(Arc::new(b))),
                _ => Ok(()),
            };
            if let Err(e) = added {
                tracing::warn!(key = %kv.key, error = %e, "a stored RBAC object does not decode");
            }
        }
        match kvs.last() {
            Some(last) if kvs.len() == 1000 => start = Some(format!("{}\u{0}", last.key)),
            _ => break,
        }
    }
    Ok((policy, revision))
}
