//! Strategies: what differs per kind when objects are created, updated and
//! deleted (Kubernetes' `RESTCreateStrategy`, `RESTUpdateStrategy` and
//! `RESTDeleteStrategy`). The generic writes in `write.rs` call these hooks at
//! fixed points; a kind without its own strategy gets [`DefaultStrategy`].
//!
//! **A strategy decides about one object of its kind; the generic code owns
//! preconditions, revisions, managed fields and the store transaction.**

use futures::future::BoxFuture;
use serde_json::Value;

use crate::model::ResourceType;
use crate::model::status::ApiResult;
use crate::model::validate::{self, Cause};
use crate::store::{KeyValue, Op};

use super::Objects;
use super::job::JobStrategy;
use super::namespace::NamespaceStrategy;
use super::pod::PodStrategy;
use super::service::ServiceStrategy;

/// Largest ConfigMap/Secret payload (1 MiB), as Kubernetes.
pub const MAX_DATA: usize = 1024 * 1024;

/// The per-kind hooks of the storage layer. Every method has the behaviour of
/// an ordinary kind as its default.
pub trait Strategy: Sync {
    /// The rule `metadata.name` follows (default: a DNS-1123 subdomain).
    fn validate_name(&self, name: &str) -> Result<(), String> {
        validate::dns1123_subdomain(name)
    }

    /// Checks of this kind beyond metadata, pod specs, the schema and typed
    /// decoding, which admission runs for every kind.
    fn validate(&self, _obj: &Value) -> Vec<Cause> {
        Vec::new()
    }

    /// Checks of an update (not a status write) from `old` to `new`, after
    /// admission: what this kind does not let change.
    fn validate_update(&self, _new: &Value, _old: &Value) -> Vec<Cause> {
        Vec::new()
    }

    /// On create, before admission: drop what a client may not set. By
    /// default a kind with a `status` subresource starts from its default
    /// status, whatever the client sent.
    fn prepare_for_create(&self, t: &ResourceType, obj: &mut Value) {
        if t.has_subresource("status")
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
    }

    /// On create, after admission and once `uid`, `creationTimestamp` and
    /// `generation` are set: fields derived from them.
    fn complete_create(&self, _obj: &mut Value) {}

    /// On update, after admission: keep what this write may not change. By
    /// default the status and the rest are written separately when the kind
    /// has a `status` subresource: a status write (`sub` = `status`) changes
    /// only the status, any other write everything but the status.
    fn prepare_for_update(
        &self,
        t: &ResourceType,
        new: &mut Value,
        old: &Value,
        sub: Option<&str>,
    ) {
        match sub {
            Some("status") => {
                let status = new.get("status").cloned();
                let mut kept = old.clone();
                match status {
                    Some(s) => kept["status"] = s,
                    None => {
                        kept.as_object_mut().map(|o| o.remove("status"));
                    }
                }
                *new = kept;
            }
            _ if t.has_subresource("status") => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            },
            _ => {}
        }
    }

    /// What the object claims in the store besides itself (a Service's
    /// ClusterIP and NodePorts), filled into `obj` and returned as operations
    /// written in the same transaction. `old` is the stored version on update;
    /// status writes do not allocate.
    fn allocate<'a>(
        &'a self,
        _o: &'a Objects,
        _obj: &'a mut Value,
        _old: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<Vec<Op>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Operations that release what a deleted object claimed, written with
    /// its delete.
    fn release(&self, _obj: &Value) -> Vec<Op> {
        Vec::new()
    }

    /// Graceful deletion: the object marked for deletion and kept (returned),
    /// or `None` when it may go on to finalizers and delete now.
    fn delete_gracefully<'a>(
        &'a self,
        _o: &'a Objects,
        _t: &'a ResourceType,
        _current: &'a KeyValue,
        _obj: &'a Value,
        _grace: Option<i64>,
    ) -> BoxFuture<'a, ApiResult<Option<Value>>> {
        Box::pin(async { Ok(None) })
    }

    /// Whether a delete's propagation policy adds its finalizer (`orphan`,
    /// `foregroundDeletion`).
    fn propagates(&self) -> bool {
        true
    }

    /// `deletionGracePeriodSeconds` written when finalizers hold a delete:
    /// 0 when the object is marked the first time, unchanged after.
    fn held_grace(&self, already_deleting: bool) -> Option<i64> {
        (!already_deleting).then_some(0)
    }

    /// Whether a deleting object whose last finalizer went may leave the
    /// store now.
    fn may_complete_deletion(&self, _obj: &Value) -> bool {
        true
    }

    /// Runs just before the object is deleted. Returns whether it rewrote the
    /// stored object (the delete then does not check its revision).
    fn before_delete<'a>(
        &'a self,
        _o: &'a Objects,
        _current: &'a KeyValue,
    ) -> BoxFuture<'a, ApiResult<bool>> {
        Box::pin(async { Ok(false) })
    }
}

/// A kind with no rules of its own.
pub struct DefaultStrategy;

impl Strategy for DefaultStrategy {}

/// ConfigMaps and Secrets: their payload is bounded.
pub struct DataStrategy;

impl Strategy for DataStrategy {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let n = data_size(obj);
        if n > MAX_DATA {
            vec![Cause::new(
                "FieldValueTooLong",
                "",
                format!("Too long: may not be more than {MAX_DATA} bytes"),
            )]
        } else {
            Vec::new()
        }
    }

    /// An `immutable` ConfigMap or Secret keeps its payload and stays
    /// immutable.
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<Cause> {
        if old.get("immutable") != Some(&Value::Bool(true)) {
            return Vec::new();
        }
        let mut causes = Vec::new();
        if new.get("immutable") != Some(&Value::Bool(true)) {
            causes.push(Cause::new(
                "FieldValueForbidden",
                "immutable",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
        for field in ["data", "binaryData"] {
            let empty = Value::Object(Default::default());
            let (a, b) = (
                new.get(field).filter(|v| !v.is_null()).unwrap_or(&empty),
                old.get(field).filter(|v| !v.is_null()).unwrap_or(&empty),
            );
            if a != b {
                causes.push(Cause::new(
                    "FieldValueForbidden",
                    field,
                    "Forbidden: field is immutable when `immutable` is set",
                ));
            }
        }
        causes
    }
}

fn data_size(obj: &Value) -> usize {
    let mut n = 0;
    for field in ["data", "binaryData", "stringData"] {
        if let Some(Value::Object(m)) = obj.get(field) {
            for (k, v) in m {
                n += k.len() + v.as_str().map_or(0, str::len);
            }
        }
    }
    n
}

/// RBAC kinds: names are path segments (`system:controller:x` is valid).
pub struct RbacStrategy;

impl Strategy for RbacStrategy {
    fn validate_name(&self, name: &str) -> Result<(), String> {
        validate::path_segment_name(name)
    }
}

/// The strategy of a kind.
pub fn for_type(t: &ResourceType) -> &'static dyn Strategy {
    match (t.group, t.kind) {
        ("", "Pod") => &PodStrategy,
        ("", "Service") => &ServiceStrategy,
        ("", "Namespace") => &NamespaceStrategy,
        ("", "ConfigMap" | "Secret") => &DataStrategy,
        ("batch", "Job") => &JobStrategy,
        ("rbac.authorization.k8s.io", _) => &RbacStrategy,
        ("certificates.k8s.io", "CertificateSigningRequest") => &super::csr::CsrStrategy,
        _ => &DefaultStrategy,
    }
}
