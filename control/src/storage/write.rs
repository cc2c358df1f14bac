//! The generic writes: create, update (whole object or its status), delete and
//! delete of a collection, each calling the kind's strategy at fixed points.

use serde_json::{Value, json};

use crate::model::ResourceType;
use crate::model::managed::{self, Managed};
use crate::model::meta::{deleting, finalizers_of, name_of, new_uid, now_rfc3339};
use crate::model::selector::{FieldSelector, LabelSelector};
use crate::model::status::{ApiError, ApiResult};
use crate::model::validate::Cause;
use crate::store::{KeyValue, Op, Txn};

use super::strategy::{self, Strategy};
use super::{DeleteOptions, Objects, Propagation, WriteOptions, Written, meta_mut, qualified};

impl Objects {
    /// Create an object (already admitted or not).
    pub async fn create(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        wo: &WriteOptions,
    ) -> ApiResult<Written> {
        let s = strategy::for_type(t);
        s.prepare_for_create(t, &mut obj);
        let (mut obj, mut warnings) = self.admit(s, t, ns, obj, wo.field_validation)?;
        let namespace = if t.namespaced {
            Some(self.namespace_ready(ns.unwrap_or("default")).await?)
        } else {
            None
        };
        if t.namespaced {
            self.admit_limit_ranges(t, ns.unwrap_or("default"), &mut obj)
                .await?;
        }
        if t.group.is_empty() && t.kind == "Pod" {
            self.admit_service_account(ns.unwrap_or("default"), &mut obj)
                .await?;
        }
        if t.group == "networking.k8s.io" && t.kind == "Ingress" {
            self.admit_ingress_class(&mut obj)?;
        }
        let judged = self.admit_pod_security(t, namespace.as_ref(), &obj)?;
        warnings.extend(judged.warnings);
        let name = name_of(&obj);
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(new_uid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        if obj.get("spec").is_some() {
            meta_mut(&mut obj).insert("generation".into(), json!(1));
        }
        s.complete_create(&mut obj);
        let allocations = s.allocate(self, &mut obj, None).await?;
        match &wo.apply_fields {
            Some(fields) => managed::write(
                &mut obj,
                &[Managed {
                    manager: wo.manager.clone(),
                    operation: "Apply".into(),
                    api_version: t.api_version(),
                    time: now_rfc3339(),
                    fields: fields.clone(),
                }],
            ),
            None => {
                meta_mut(&mut obj).remove("managedFields");
                managed::record_update(None, &mut obj, &wo.manager);
            }
        }
        if wo.dry_run {
            // A dry run is judged by quota admission too, and charges nothing.
            if let Some(ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str) {
                self.charge_quota(t, ns, &obj, None).await?;
            }
            return Ok(Written {
                created: true,
                object: obj,
                warnings,
                audit: judged.audit,
            });
        }
        let key = t.key(
            obj.pointer("/metadata/namespace").and_then(Value::as_str),
            &name,
        );
        let value = self.encode_bounded(&key, &obj)?;
        let ns_name = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut attempt = 0;
        let rev = loop {
            // Quota admission, judged again when a racing create took the
            // quota's last unit first.
            let charges = match &ns_name {
                Some(ns) => self.charge_quota(t, ns, &obj, None).await?,
                None => Vec::new(),
            };
            let mut ops = vec![Op::create(key.clone(), value.clone())];
            ops.extend(allocations.iter().cloned());
            ops.extend(charges);
            match self.store.txn(Txn { ops }).await {
                Ok(out) => break out.revision,
                Err(e) if super::quota::quota_raced(&e) && attempt < 8 => attempt += 1,
                Err(e) => return Err(ApiError::from_store(e, &qualified(t), &name)),
            }
        };
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(Written {
            created: true,
            object: obj,
            warnings,
            audit: judged.audit,
        })
    }

    /// Replace an object. `sub` = Some("status") updates only the status.
    /// An object that names no `resourceVersion` is replaced whatever was
    /// written meanwhile (Kubernetes' unconditional update): a write that
    /// races it between the read and the commit makes it try again, never a
    /// 409.
    pub async fn update(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<&str>,
        wo: &WriteOptions,
    ) -> ApiResult<Written> {
        let pinned = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty());
        until_not_raced(|| async {
            self.update_once(t, ns, name, obj.clone(), sub, wo)
                .await
                .map_err(|e| Attempt::of(e, pinned))
        })
        .await
    }

    async fn update_once(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<&str>,
        wo: &WriteOptions,
    ) -> ApiResult<Written> {
        let s = strategy::for_type(t);
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
        let old = self.decode(&current)?;
        let (mut new, warnings) = self.admit(s, t, ns, obj, wo.field_validation)?;
        let mut warnings = warnings;
        if sub.is_none() {
            let causes = s.validate_update(&new, &old);
            if !causes.is_empty() {
                return Err(ApiError::invalid(t.kind, name, causes));
            }
            warnings.extend(self.namespace_level_warnings(t, &old, &new));
        }
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
        s.prepare_for_update(t, &mut new, &old, sub);
        let allocations = if sub.is_none() {
            s.allocate(self, &mut new, Some(&old)).await?
        } else {
            Vec::new()
        };
        if wo.apply_fields.is_none() {
            managed::record_update(Some(&old), &mut new, &wo.manager);
        }
        let spec_changed = strip_for_generation(&old) != strip_for_generation(&new);
        if spec_changed && new.get("spec").is_some() {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        // Quota admission of what the update adds (not of status writes).
        let quota_ns = ns.filter(|_| t.namespaced && sub.is_none());
        if wo.dry_run {
            if let Some(ns) = quota_ns {
                self.charge_quota(t, ns, &new, Some(&old)).await?;
            }
            return Ok(Written {
                created: false,
                object: new,
                warnings,
                audit: Vec::new(),
            });
        }
        if new_equals_stored(&old, &new) {
            return Ok(Written {
                created: false,
                object: old,
                warnings,
                audit: Vec::new(),
            });
        }
        if deleting(&old) {
            let (before, after) = (finalizers_of(&old), finalizers_of(&new));
            if let Some(added) = after.iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    t.kind,
                    name,
                    vec![Cause::new(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizer {added:?}"
                        ),
                    )],
                ));
            }
            if after.is_empty() && s.may_complete_deletion(&new) {
                // The last finalizer is gone: the deletion completes.
                self.store
                    .write(Op::delete(key, Some(current.mod_revision)))
                    .await
                    .map_err(|e| ApiError::from_store(e, &qualified(t), name))?;
                return Ok(Written {
                    created: false,
                    object: new,
                    warnings,
                    audit: Vec::new(),
                });
            }
        }
        let value = self.encode_bounded(&key, &new)?;
        let mut attempt = 0;
        let rev = loop {
            let charges = match quota_ns {
                Some(ns) => self.charge_quota(t, ns, &new, Some(&old)).await?,
                None => Vec::new(),
            };
            let mut ops = vec![Op::update(key.clone(), value.clone(), current.mod_revision)];
            ops.extend(allocations.iter().cloned());
            ops.extend(charges);
            match self.store.txn(Txn { ops }).await {
                Ok(out) => break out.revision,
                Err(e) if super::quota::quota_raced(&e) && attempt < 8 => attempt += 1,
                Err(e) => return Err(ApiError::from_store(e, &qualified(t), name)),
            }
        };
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(Written {
            created: false,
            object: new,
            warnings,
            audit: Vec::new(),
        })
    }

    /// Delete one object: the kind may defer it (graceful pod deletion),
    /// finalizers may hold it, and the kind's delete hook runs before it goes
    /// (a namespace takes everything in it along).
    ///
    /// A write that raced another (a controller's status update between the
    /// read and the write) is retried on the fresh object, as Kubernetes'
    /// `GuaranteedUpdate` does: the caller's preconditions are checked again
    /// each time, and only they can make a delete a conflict.
    pub async fn delete(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        until_not_raced(|| self.delete_once(t, ns, name, opts)).await
    }

    async fn delete_once(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, Attempt> {
        let s = strategy::for_type(t);
        let key = t.key(ns, name);
        let current = self
            .store
            .get(&key)
            .await
            .map_err(|e| Attempt::Failed(e.into()))?
            .ok_or_else(|| Attempt::Failed(ApiError::not_found(&qualified(t), name)))?;
        let obj = self.decode(&current)?;
        let stored_uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(uid) = opts.uid.as_deref()
            && stored_uid != uid
        {
            return Err(Attempt::Failed(ApiError::precondition_failed(
                &qualified(t),
                name,
                &format!("UID in precondition: {uid}, UID in object meta: {stored_uid}"),
            )));
        }
        if let Some(rv) = opts.resource_version
            && rv != current.mod_revision
        {
            return Err(Attempt::Failed(ApiError::precondition_failed(
                &qualified(t),
                name,
                &format!(
                    "ResourceVersion in precondition: {rv}, ResourceVersion in meta: {}",
                    current.mod_revision
                ),
            )));
        }
        if opts.dry_run {
            return Ok(obj);
        }
        if let Some(marked) = s
            .delete_gracefully(self, t, &current, &obj, opts.grace)
            .await?
        {
            return Ok(marked);
        }
        if let Some(held) = self.hold_for_finalizers(s, t, &current, &obj, opts).await? {
            return Ok(held);
        }
        let rewritten = s.before_delete(self, &current).await?;
        // A hook that rewrote the object has moved its revision on.
        let expect_rev = (!rewritten).then_some(current.mod_revision);
        let mut ops = vec![Op::delete(key, expect_rev)];
        ops.extend(s.release(&obj));
        self.store
            .txn(Txn { ops })
            .await
            .map_err(|e| ApiError::from_store(e, &qualified(t), name))?;
        Ok(obj)
    }

    /// Delete every object of `t` in `ns` the selectors match, as one `delete`
    /// each; objects gone meanwhile are skipped. Returns the deleted objects and
    /// the revision of the list.
    pub async fn delete_collection(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        opts: &DeleteOptions,
    ) -> ApiResult<(Vec<Value>, u64)> {
        let (items, rev, _) = self.list(t, ns, labels, fields, None, None).await?;
        let mut deleted = Vec::new();
        for item in items {
            let name = name_of(&item);
            let item_ns = item
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            match self.delete(t, item_ns.as_deref(), &name, opts).await {
                Ok(v) => deleted.push(v),
                Err(e) if e.code == axum::http::StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        Ok((deleted, rev))
    }

    /// A delete that must wait for finalizers (the object's own, or the one its
    /// propagation policy adds): mark the object deleted and keep it. Returns
    /// `None` when it can go at once.
    async fn hold_for_finalizers(
        &self,
        s: &dyn Strategy,
        t: &ResourceType,
        current: &KeyValue,
        obj: &Value,
        opts: &DeleteOptions,
    ) -> ApiResult<Option<Value>> {
        let mut finalizers = finalizers_of(obj);
        if s.propagates()
            && let Some((add, drop)) = opts.propagation.and_then(Propagation::finalizers)
        {
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
        if let Some(grace) = s.held_grace(deleting(obj)) {
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        m.insert("finalizers".into(), json!(finalizers));
        if marked == *obj {
            return Ok(Some(marked));
        }
        self.rewrite(t, current, marked).await.map(Some)
    }

    /// Store `obj` in place of `current` (if `current` is still the stored
    /// version) and return it with its new resourceVersion.
    pub(super) async fn rewrite(
        &self,
        t: &ResourceType,
        current: &KeyValue,
        mut obj: Value,
    ) -> ApiResult<Value> {
        let rev = self
            .store
            .write(Op::update(
                current.key.clone(),
                self.encode(&current.key, &obj),
                current.mod_revision,
            ))
            .await
            .map_err(|e| ApiError::from_store(e, &qualified(t), &name_of(&obj)))?;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(obj)
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

/// How one read-modify-write attempt failed: lost a race (another write came
/// between the read and the write: try again) or failed for good.
pub enum Attempt {
    Raced(ApiError),
    Failed(ApiError),
}

impl Attempt {
    /// How a write that failed with `e` ended: a conflict is a lost race,
    /// unless the caller pinned the resourceVersion (then it is the answer).
    pub fn of(e: ApiError, pinned: bool) -> Attempt {
        if pinned {
            Attempt::Failed(e)
        } else {
            Attempt::from(e)
        }
    }
}

/// Run a read-modify-write `attempt` again while it loses races (at most 16
/// times), as Kubernetes' `GuaranteedUpdate` does: each try reads afresh, so
/// only the caller's own preconditions can end it in a conflict.
pub async fn until_not_raced<T, F>(mut attempt: impl FnMut() -> F) -> ApiResult<T>
where
    F: std::future::Future<Output = Result<T, Attempt>>,
{
    const RACES: usize = 16;
    let mut raced = 0;
    loop {
        match attempt().await {
            Err(Attempt::Raced(_)) if raced < RACES => raced += 1,
            Err(Attempt::Raced(e) | Attempt::Failed(e)) => return Err(e),
            Ok(v) => return Ok(v),
        }
    }
}

impl From<ApiError> for Attempt {
    fn from(e: ApiError) -> Attempt {
        if e.code == axum::http::StatusCode::CONFLICT && e.reason == "Conflict" {
            Attempt::Raced(e)
        } else {
            Attempt::Failed(e)
        }
    }
}
