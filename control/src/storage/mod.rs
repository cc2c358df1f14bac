//! The storage layer: generic create, get, list, update, delete and watch of API
//! objects over the store, with one [`Strategy`] per kind for what differs
//! (defaults, validation, create/update preparation, the spec/status split,
//! allocations and delete hooks). Kubernetes' `pkg/registry` is the model: the
//! HTTP layer (`api/`) parses requests and renders answers; everything that
//! decides what is stored happens here.
//!
//! **An object is stored without `resourceVersion`; on read it gets the store
//! revision that last wrote it. Nothing reaches the store before admission
//! passed. Allocations a kind holds (Service addresses) are written in the same
//! transaction as the object.**

mod admission;
pub mod csr;
pub mod encryption;
pub mod ingress;
mod job;
mod limitrange;
mod namespace;
mod pod;
mod podsecurity;
mod quota;
pub mod rotate;
pub mod service;
pub mod serviceaccount;
pub mod strategy;
mod watch;
mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::model::fieldset::FieldSet;
use crate::model::selector::{FieldSelector, LabelSelector};
use crate::model::status::{ApiError, ApiResult};
use crate::model::{Registry, ResourceType};
use crate::store::{KeyValue, Store};
pub use encryption::Encryption;

pub use admission::FieldValidation;
pub use service::ServiceRanges;
pub use strategy::Strategy;
pub use watch::{ObjectWatch, WatchEvent};
pub use write::{Attempt, until_not_raced};

/// The storage layer's handle: the store, the kinds it serves and the ranges
/// Services draw addresses from. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    pub store: Store,
    pub registry: Arc<Registry>,
    /// Where ClusterIPs and NodePorts come from.
    pub services: Arc<ServiceRanges>,
    /// What seals stored values (Secrets by default).
    pub encryption: Encryption,
    /// The Pod Security levels of namespaces without labels.
    pub pod_security: crate::podsecurity::Policy,
}

/// Options of a create or update.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub field_validation: FieldValidation,
    pub dry_run: bool,
    /// Who writes (`fieldManager`), for `managedFields`.
    pub manager: String,
    /// Set by server-side apply: the applied field set (create) or "managed fields
    /// are already computed" (update).
    pub apply_fields: Option<FieldSet>,
}

impl WriteOptions {
    /// The server's own writes (bootstrap objects) as `manager`: no field
    /// validation, no dry run.
    pub fn internal(manager: &str) -> WriteOptions {
        WriteOptions {
            field_validation: FieldValidation::Ignore,
            dry_run: false,
            manager: manager.into(),
            apply_fields: None,
        }
    }
}

/// The outcome of a write: the object and warnings for the `Warning` header.
#[derive(Debug, Clone)]
pub struct Written {
    /// A new object (not an update of one).
    pub created: bool,
    pub object: Value,
    pub warnings: Vec<String>,
    /// Annotations for the request's audit event (Pod Security's).
    pub audit: Vec<(String, String)>,
}

/// What a delete request asks for besides the object.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub uid: Option<String>,
    pub resource_version: Option<u64>,
    pub dry_run: bool,
    /// `gracePeriodSeconds`; `None` means the object's own default.
    pub grace: Option<i64>,
    /// What happens to the object's dependents.
    pub propagation: Option<Propagation>,
}

/// `propagationPolicy` of a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents lose their owner reference and stay.
    Orphan,
    /// The object goes now; the garbage collector deletes dependents after.
    Background,
    /// The object stays (finalizer `foregroundDeletion`) until its blocking
    /// dependents are gone.
    Foreground,
}

/// Finalizer that orphans dependents before the object goes.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// Finalizer that holds an object until its dependents are deleted.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

impl Propagation {
    pub fn parse(s: &str) -> ApiResult<Propagation> {
        match s {
            "Orphan" => Ok(Propagation::Orphan),
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            other => Err(ApiError::bad_request(format!(
                "unsupported propagationPolicy {other:?}: use Orphan, Background or Foreground"
            ))),
        }
    }

    /// The finalizer this policy adds, and the one it replaces.
    fn finalizers(self) -> Option<(&'static str, &'static str)> {
        match self {
            Propagation::Orphan => Some((ORPHAN_FINALIZER, FOREGROUND_FINALIZER)),
            Propagation::Foreground => Some((FOREGROUND_FINALIZER, ORPHAN_FINALIZER)),
            Propagation::Background => None,
        }
    }
}

/// "pods" or "deployments.apps": how Kubernetes names a resource in messages.
pub fn qualified(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.to_string()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// The object's metadata map, created when missing. Only called on objects
/// (admission refuses anything else before it gets here).
fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let m = obj.as_object_mut().expect("an object");
    let e = m.entry("metadata").or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("an object")
}

/// A plain stored value as the API shows it.
fn decode_plain(key: &str, bytes: &[u8], revision: u64) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object {key} is not json: {e}")))?;
    meta_mut(&mut v).insert("resourceVersion".into(), json!(revision.to_string()));
    Ok(v)
}

/// The largest object the store keeps (etcd's default request limit, which
/// Kubernetes inherits: 1.5 MiB).
pub const MAX_OBJECT: usize = 1536 * 1024;

fn encode_plain(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).expect("json value serialises")
}

impl Objects {
    /// A storage layer over `store` serving the built-in kinds, with the default
    /// Service ranges and nothing sealed.
    pub fn new(store: Store) -> Objects {
        Objects {
            store,
            registry: Arc::new(Registry::builtin()),
            services: Arc::new(ServiceRanges::default()),
            encryption: Encryption::default(),
            pod_security: crate::podsecurity::Policy::default(),
        }
    }

    /// A stored value as the API shows it (opened if sealed).
    pub fn decode(&self, kv: &KeyValue) -> ApiResult<Value> {
        let plain = self
            .encryption
            .open(&kv.key, &kv.value)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        decode_plain(&kv.key, &plain, kv.mod_revision)
    }

    /// The stored form of `obj` under `key` (sealed if its resource is).
    pub fn encode(&self, key: &str, obj: &Value) -> Vec<u8> {
        self.encryption.seal(key, encode_plain(obj))
    }

    /// [`Objects::encode`] for a client's write: an object larger than
    /// [`MAX_OBJECT`] is refused (413) before it reaches the store.
    pub fn encode_bounded(&self, key: &str, obj: &Value) -> ApiResult<Vec<u8>> {
        let plain = encode_plain(obj);
        if plain.len() > MAX_OBJECT {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "Request entity too large: the object is {} bytes, the limit is {MAX_OBJECT}",
                    plain.len()
                ),
            ));
        }
        Ok(self.encryption.seal(key, plain))
    }

    pub async fn get(&self, t: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        match self.store.get(&t.key(ns, name)).await? {
            Some(kv) => self.decode(&kv),
            None => Err(ApiError::not_found(&qualified(t), name)),
        }
    }

    /// An object as this replica holds it now, without a Raft round trip
    /// (it may lag the leader); `None` when absent or unreadable.
    pub fn get_local(&self, t: &ResourceType, ns: Option<&str>, name: &str) -> Option<Value> {
        let kv = self.store.get_local(&t.key(ns, name)).ok()??;
        self.decode(&kv).ok()
    }

    /// List objects with selectors and paging. Returns (items, revision, continue).
    pub async fn list(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> ApiResult<(Vec<Value>, u64, Option<String>)> {
        let prefix = t.ns_prefix(ns);
        let start = match cont {
            Some(c) if !c.is_empty() => Some(decode_continue(c)?),
            _ => None,
        };
        let want = limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut next_start = start.clone();
        let mut revision = 0;
        loop {
            let (kvs, rev) = self
                .store
                .list(&prefix, next_start.as_deref(), 1000)
                .await?;
            revision = revision.max(rev);
            let done = kvs.len() < 1000;
            for kv in &kvs {
                if items.len() >= want {
                    let token = encode_continue(&kv.key);
                    return Ok((items, revision, Some(token)));
                }
                let v = self.decode(kv)?;
                if labels.matches(&v) && fields.matches(&v) {
                    items.push(v);
                }
            }
            match kvs.last() {
                Some(last) if !done => next_start = Some(format!("{}\u{0}", last.key)),
                _ => break,
            }
        }
        Ok((items, revision, None))
    }

    /// Every object of a kind, in all namespaces (none when the kind is not
    /// served).
    pub async fn list_all(&self, api_version: &str, kind: &str) -> ApiResult<Vec<Value>> {
        let Some(t) = self.registry.by_kind(api_version, kind).cloned() else {
            return Ok(Vec::new());
        };
        let (items, _, _) = self
            .list(
                &t,
                None,
                &LabelSelector::default(),
                &FieldSelector::default(),
                None,
                None,
            )
            .await?;
        Ok(items)
    }
}

fn encode_continue(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_continue(token: &str) -> ApiResult<String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}
