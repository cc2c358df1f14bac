//! Namespaces: names are DNS labels; nothing is created in a namespace that is
//! terminating; deleting one marks it `Terminating` and deletes everything in
//! it before it goes.

use futures::future::BoxFuture;
use serde_json::json;

use crate::model::meta::now_rfc3339;
use crate::model::status::{ApiError, ApiResult};
use crate::model::validate;
use crate::store::{Expect, KeyValue, Op, Txn};

use super::strategy::Strategy;
use super::{Objects, meta_mut};

/// The Namespace strategy.
pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn validate_name(&self, name: &str) -> Result<(), String> {
        validate::dns1123_label(name)
    }

    /// Pod Security labels name a level.
    fn validate(&self, obj: &serde_json::Value) -> Vec<crate::model::validate::Cause> {
        crate::podsecurity::invalid_labels(obj)
            .into_iter()
            .map(|(key, v)| {
                crate::model::validate::Cause::new(
                    "FieldValueNotSupported",
                    format!("metadata.labels[{key}]"),
                    format!(
                        "Unsupported value: \"{v}\": supported values: \"privileged\", \"baseline\", \"restricted\""
                    ),
                )
            })
            .collect()
    }

    fn before_delete<'a>(
        &'a self,
        o: &'a Objects,
        current: &'a KeyValue,
    ) -> BoxFuture<'a, ApiResult<bool>> {
        Box::pin(async move {
            o.terminate_namespace(current).await?;
            Ok(true)
        })
    }
}

impl Objects {
    /// Objects may be created in `ns`: it exists and is not terminating.
    pub(super) async fn namespace_ready(&self, ns: &str) -> ApiResult<serde_json::Value> {
        match self.store.get(&format!("/core/namespaces/_/{ns}")).await? {
            None => Err(ApiError::not_found("namespaces", ns)),
            Some(kv) => {
                let v = self.decode(&kv)?;
                if v.pointer("/status/phase") == Some(&json!("Terminating")) {
                    Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    )))
                } else {
                    Ok(v)
                }
            }
        }
    }

    /// Mark a namespace Terminating, then delete every object in it.
    async fn terminate_namespace(&self, current: &KeyValue) -> ApiResult<()> {
        let mut ns = self.decode(current)?;
        let name = crate::model::meta::name_of(&ns);
        ns["status"] = json!({"phase": "Terminating"});
        meta_mut(&mut ns).insert("deletionTimestamp".into(), json!(now_rfc3339()));
        self.store
            .write(Op::update(
                current.key.clone(),
                self.encode(&current.key, &ns),
                current.mod_revision,
            ))
            .await
            .map_err(|e| ApiError::from_store(e, "namespaces", &name))?;
        for t in self.registry.all().iter().filter(|t| t.namespaced) {
            loop {
                let (kvs, _) = self
                    .store
                    .list(&t.ns_prefix(Some(&name)), None, 500)
                    .await?;
                if kvs.is_empty() {
                    break;
                }
                let ops = kvs
                    .iter()
                    .map(|kv| Op::Delete {
                        key: kv.key.clone(),
                        expect: Expect::Any,
                    })
                    .collect();
                self.store.txn(Txn { ops }).await?;
            }
        }
        Ok(())
    }
}
