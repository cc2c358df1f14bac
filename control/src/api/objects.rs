//! Generic object operations over the store: admission (typed decode, strict field
//! checks, metadata rules, defaults), create, get, update, delete and list.
//!
//! **An object is stored without `resourceVersion`; on read it gets the store
//! revision that last wrote it. Nothing reaches the store before admission passed.**

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::model::validate::{self, Cause};
use crate::model::{Registry, ResourceType, defaults};
use crate::store::{Expect, KeyValue, Op, Store, StoreError, Txn};

use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult};

/// Largest ConfigMap/Secret payload (1 MiB), as Kubernetes.
const MAX_DATA: usize = 1024 * 1024;

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> ApiResult<FieldValidation> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(o) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict, got {o:?}"
            ))),
        }
    }
}

/// Shared state of object handlers.
#[derive(Clone)]
pub struct Objects {
    pub store: Store,
    pub registry: std::sync::Arc<Registry>,
    /// Where ClusterIPs and NodePorts come from.
    pub services: std::sync::Arc<super::services::ServiceRanges>,
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
    pub apply_fields: Option<super::fieldset::FieldSet>,
}

/// The outcome of a write: the object and warnings for the `Warning` header.
pub struct Written {
    pub code: StatusCode,
    pub object: Value,
    pub warnings: Vec<String>,
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

/// The object's `metadata.finalizers`.
pub fn finalizers_of(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A deleting pod that no agent still has to stop: unbound, finished, or
/// already released by its agent (grace 0).
fn pod_may_go(pod: &Value) -> bool {
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

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        ["8", "9", "a", "b"][(b[8] & 3) as usize],
        &h[17..20],
        &h[20..32]
    )
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

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let m = obj.as_object_mut().expect("object");
    let e = m.entry("metadata").or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("object")
}

pub fn name_of(obj: &Value) -> String {
    meta(obj)
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A stored value as the API shows it.
pub fn decode_stored(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not json: {e}", kv.key)))?;
    meta_mut(&mut v).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(v)
}

fn encode_stored(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).expect("json value serialises")
}

fn validate_name(t: &ResourceType, name: &str) -> Result<(), String> {
    match (t.group, t.kind) {
        ("", "Namespace") => validate::dns1123_label(name),
        ("", "Service") => validate::dns1035_label(name),
        ("rbac.authorization.k8s.io", _) => validate::path_segment_name(name),
        _ => validate::dns1123_subdomain(name),
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

impl Objects {
    /// Admit an incoming object of type `t` in namespace `ns`: returns the object to
    /// store (typed-normalised, defaulted) and warnings.
    pub fn admit(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        fv: FieldValidation,
    ) -> ApiResult<(Value, Vec<String>)> {
        let api_version = t.api_version();
        let kind_ok = obj.get("kind").is_none_or(|k| k == t.kind);
        let av_ok = obj.get("apiVersion").is_none_or(|a| *a == api_version);
        if !kind_ok || !av_ok {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({api_version}) or kind ({}) does not match {}",
                obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                obj.get("kind").and_then(Value::as_str).unwrap_or(""),
                t.kind
            )));
        }
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(t.kind);
        let m = meta_mut(&mut obj);
        if t.namespaced {
            let ns = ns.unwrap_or("default");
            match m.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        if m.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            && let Some(prefix) = m.get("generateName").and_then(Value::as_str)
        {
            let suffix: String = (0..5)
                .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27)]))
                .collect();
            let name = format!("{prefix}{suffix}");
            m.insert("name".into(), json!(name));
        }
        let name = name_of(&obj);
        let mut causes = Vec::new();
        if name.is_empty() {
            causes.push(Cause::required("metadata.name"));
        } else if let Err(e) = validate_name(t, &name) {
            causes.push(Cause::invalid("metadata.name", &name, &e));
        }
        if let Some(m) = meta(&obj) {
            causes.extend(validate::metadata(m));
        }
        causes.extend(crate::model::scaling::check(t.group, t.kind, &obj));
        causes.extend(crate::model::podspec::check(t.group, t.kind, &obj));
        if matches!(t.kind, "ConfigMap" | "Secret") && t.group.is_empty() {
            let n = data_size(&obj);
            if n > MAX_DATA {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    "",
                    format!("Too long: may not be more than {MAX_DATA} bytes"),
                ));
            }
        }
        causes.extend(self.registry.check_schema(t, &obj));
        if !causes.is_empty() {
            return Err(ApiError::invalid(t.kind, &name, causes));
        }
        let typed = (t.decode)(&obj).map_err(|c| ApiError::invalid(t.kind, &name, c))?;
        let unknown = validate::unknown_fields(&obj, &typed);
        let mut warnings = Vec::new();
        if !unknown.is_empty() {
            match fv {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
                }
                FieldValidation::Ignore => {}
            }
        }
        let mut out = typed;
        defaults::apply(&api_version, t.kind, &mut out);
        Ok((out, warnings))
    }

    async fn namespace_ready(&self, ns: &str) -> ApiResult<()> {
        match self.store.get(&format!("/core/namespaces/_/{ns}")).await? {
            None => Err(ApiError::not_found("namespaces", ns)),
            Some(kv) => {
                let v = decode_stored(&kv)?;
                if v.pointer("/status/phase") == Some(&json!("Terminating")) {
                    Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Create an object (already admitted or not).
    pub async fn create(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        wo: &WriteOptions,
    ) -> ApiResult<Written> {
        let dry_run = wo.dry_run;
        // A created object starts from its default status, whatever the client sent.
        if t.has_subresource("status")
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        let (mut obj, warnings) = self.admit(t, ns, obj, wo.field_validation)?;
        if t.namespaced {
            self.namespace_ready(ns.unwrap_or("default")).await?;
        }
        let name = name_of(&obj);
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(new_uid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        if obj.get("spec").is_some() {
            meta_mut(&mut obj).insert("generation".into(), json!(1));
        }
        if t.group == "batch" && t.kind == "Job" {
            crate::model::defaults::job_selector(&mut obj);
        }
        let is_service = t.group.is_empty() && t.kind == "Service";
        let allocations = if is_service {
            self.allocate_service(&mut obj, None).await?
        } else {
            Vec::new()
        };
        match &wo.apply_fields {
            Some(fields) => super::apply::write(
                &mut obj,
                &[super::apply::Managed {
                    manager: wo.manager.clone(),
                    operation: "Apply".into(),
                    api_version: t.api_version(),
                    time: now_rfc3339(),
                    fields: fields.clone(),
                }],
            ),
            None => {
                meta_mut(&mut obj).remove("managedFields");
                super::apply::record_update(None, &mut obj, &wo.manager);
            }
        }
        if dry_run {
            return Ok(Written {
                code: StatusCode::CREATED,
                object: obj,
                warnings,
            });
        }
        let key = t.key(
            obj.pointer("/metadata/namespace").and_then(Value::as_str),
            &name,
        );
        let mut ops = vec![Op::create(key, encode_stored(&obj))];
        ops.extend(allocations);
        let rev = self
            .store
            .txn(Txn { ops })
            .await
            .map_err(|e| ApiError::from_store(e, &qualified(t), &name))?
            .revision;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(Written {
            code: StatusCode::CREATED,
            object: obj,
            warnings,
        })
    }

    pub async fn get(&self, t: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        match self.store.get(&t.key(ns, name)).await? {
            Some(kv) => decode_stored(&kv),
            None => Err(ApiError::not_found(&qualified(t), name)),
        }
    }

    /// Replace an object. `sub` = Some("status") updates only the status.
    pub async fn update(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<&str>,
        wo: &WriteOptions,
    ) -> ApiResult<Written> {
        let (fv, dry_run) = (wo.field_validation, wo.dry_run);
        let body_name = name_of(&obj);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut obj = obj;
        meta_mut(&mut obj).insert("name".into(), json!(name));
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))
            })
            .transpose()?;
        let key = t.key(ns, name);
        let current = match self.store.get(&key).await? {
            Some(kv) => kv,
            None => return Err(ApiError::not_found(&qualified(t), name)),
        };
        if let Some(rv) = rv
            && rv != current.mod_revision
        {
            return Err(ApiError::conflict(&qualified(t), name));
        }
        let old = decode_stored(&current)?;
        let (mut new, warnings) = self.admit(t, ns, obj, fv)?;
        // Immutable and server-owned metadata comes from the stored object.
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            let m = meta_mut(&mut new);
            match old.pointer(&format!("/metadata/{k}")) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        match sub {
            Some("status") => {
                // Only the status changes.
                let status = new.get("status").cloned();
                let mut kept = old.clone();
                match status {
                    Some(s) => kept["status"] = s,
                    None => {
                        kept.as_object_mut().map(|o| o.remove("status"));
                    }
                }
                new = kept;
            }
            _ if t.has_subresource("status") => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            },
            _ => {}
        }
        let allocations = if t.group.is_empty() && t.kind == "Service" && sub.is_none() {
            self.allocate_service(&mut new, Some(&old)).await?
        } else {
            Vec::new()
        };
        if wo.apply_fields.is_none() {
            super::apply::record_update(Some(&old), &mut new, &wo.manager);
        }
        let spec_changed = strip_for_generation(&old) != strip_for_generation(&new);
        if spec_changed && new.get("spec").is_some() {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        if dry_run {
            return Ok(Written {
                code: StatusCode::OK,
                object: new,
                warnings,
            });
        }
        if new_equals_stored(&old, &new) {
            return Ok(Written {
                code: StatusCode::OK,
                object: old,
                warnings,
            });
        }
        if deleting(&old) {
            let (before, after) = (finalizers_of(&old), finalizers_of(&new));
            if let Some(added) = after.iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    t.kind,
                    name,
                    vec![crate::model::validate::Cause::new(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizer {added:?}"
                        ),
                    )],
                ));
            }
            if after.is_empty() && !(t.group.is_empty() && t.kind == "Pod" && !pod_may_go(&new)) {
                // The last finalizer is gone: the deletion completes.
                self.store
                    .write(Op::delete(key, Some(current.mod_revision)))
                    .await
                    .map_err(|e| ApiError::from_store(e, &qualified(t), name))?;
                return Ok(Written {
                    code: StatusCode::OK,
                    object: new,
                    warnings,
                });
            }
        }
        let mut ops = vec![Op::update(key, encode_stored(&new), current.mod_revision)];
        ops.extend(allocations);
        let rev = self
            .store
            .txn(Txn { ops })
            .await
            .map_err(|e| ApiError::from_store(e, &qualified(t), name))?
            .revision;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(Written {
            code: StatusCode::OK,
            object: new,
            warnings,
        })
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
        let mut pod = decode_stored(&current)?;
        let bound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !bound.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
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
            .write(Op::update(key, encode_stored(&pod), current.mod_revision))
            .await
            .map_err(|e| ApiError::from_store(e, "pods", name))?;
        meta_mut(&mut pod).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(pod)
    }

    /// Delete one object; a namespace takes everything in it along.
    pub async fn delete(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let (precondition_uid, precondition_rv, dry_run) =
            (opts.uid.as_deref(), opts.resource_version, opts.dry_run);
        let key = t.key(ns, name);
        let current = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(&qualified(t), name))?;
        let obj = decode_stored(&current)?;
        if let Some(uid) = precondition_uid
            && obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(ApiError::conflict(&qualified(t), name));
        }
        if let Some(rv) = precondition_rv
            && rv != current.mod_revision
        {
            return Err(ApiError::conflict(&qualified(t), name));
        }
        if dry_run {
            return Ok(obj);
        }
        if t.group.is_empty()
            && t.kind == "Pod"
            && let Some(marked) = self.mark_pod_deleted(t, &current, &obj, opts.grace).await?
        {
            return Ok(marked);
        }
        if let Some(held) = self.hold_for_finalizers(t, &current, &obj, opts).await? {
            return Ok(held);
        }
        let mut expect_rev = Some(current.mod_revision);
        if t.group.is_empty() && t.kind == "Namespace" {
            self.terminate_namespace(name, &current).await?;
            expect_rev = None; // we just rewrote it as Terminating
        }
        let mut ops = vec![Op::delete(key, expect_rev)];
        if t.group.is_empty() && t.kind == "Service" {
            ops.extend(Objects::release_service(&obj));
        }
        self.store
            .txn(Txn { ops })
            .await
            .map_err(|e| ApiError::from_store(e, &qualified(t), name))?;
        Ok(obj)
    }

    /// A delete that must wait for finalizers (the object's own, or the one its
    /// propagation policy adds): mark the object deleted and keep it. Returns
    /// `None` when it can go at once.
    async fn hold_for_finalizers(
        &self,
        t: &ResourceType,
        current: &KeyValue,
        obj: &Value,
        opts: &DeleteOptions,
    ) -> ApiResult<Option<Value>> {
        let mut finalizers = finalizers_of(obj);
        let is_pod = t.group.is_empty() && t.kind == "Pod";
        if !is_pod && let Some((add, drop)) = opts.propagation.and_then(Propagation::finalizers) {
            finalizers.retain(|f| f != drop);
            if !finalizers.iter().any(|f| f == add) {
                finalizers.push(add.to_string());
            }
        }
        if finalizers.is_empty() {
            return Ok(None);
        }
        let mut marked = obj.clone();
        let m = meta_mut(&mut marked);
        if !deleting(obj) {
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        }
        if !deleting(obj) || is_pod {
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        m.insert("finalizers".into(), json!(finalizers));
        if marked == *obj {
            return Ok(Some(marked));
        }
        self.rewrite(t, current, marked).await.map(Some)
    }

    /// Store `obj` in place of `current` (if `current` is still the stored
    /// version) and return it with its new resourceVersion.
    async fn rewrite(
        &self,
        t: &ResourceType,
        current: &KeyValue,
        mut obj: Value,
    ) -> ApiResult<Value> {
        let rev = self
            .store
            .write(Op::update(
                current.key.clone(),
                encode_stored(&obj),
                current.mod_revision,
            ))
            .await
            .map_err(|e| ApiError::from_store(e, &qualified(t), &name_of(&obj)))?;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(obj)
    }

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

    /// Mark a namespace Terminating, then delete every object in it.
    async fn terminate_namespace(&self, name: &str, current: &KeyValue) -> ApiResult<()> {
        let mut ns = decode_stored(current)?;
        ns["status"] = json!({"phase": "Terminating"});
        meta_mut(&mut ns).insert("deletionTimestamp".into(), json!(now_rfc3339()));
        self.store
            .write(Op::update(
                current.key.clone(),
                encode_stored(&ns),
                current.mod_revision,
            ))
            .await
            .map_err(|e| ApiError::from_store(e, "namespaces", name))?;
        for t in self.registry.all().iter().filter(|t| t.namespaced) {
            loop {
                let (kvs, _) = self.store.list(&t.ns_prefix(Some(name)), None, 500).await?;
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
                let v = decode_stored(kv)?;
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

    pub fn store_error(&self, e: StoreError) -> ApiError {
        e.into()
    }
}

/// The object without metadata and status: a change here bumps `generation`.
fn strip_for_generation(v: &Value) -> Value {
    let mut o = v.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

fn new_equals_stored(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut o = v.clone();
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        o
    };
    strip(old) == strip(new)
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
