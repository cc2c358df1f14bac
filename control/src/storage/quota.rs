//! ResourceQuota admission: creating an object its namespace's quotas count
//! is refused (403, naming the quota and the figures) when it would take a
//! resource past a quota's `hard`; otherwise each quota's `status.used` is
//! written in the same transaction as the object, guarded by the quota's
//! revision, so two racing creates cannot both take the last unit (the loser
//! is judged again). The quota controller recomputes usage as objects go.

use serde_json::{Map, Value, json};

use crate::model::ResourceType;
use crate::model::meta::name_of;
use crate::model::quota::{self, Usage};
use crate::model::selector::{FieldSelector, LabelSelector};
use crate::model::status::{ApiError, ApiResult};
use crate::store::Op;

use super::{Objects, qualified};

/// A resource a create would take past a quota: (name, requested, used,
/// limit).
type Over = (String, f64, f64, f64);

/// The (group, plural) a quota resource name counts.
fn counted_type(resource: &str) -> Option<(String, String)> {
    if let Some(rest) = resource.strip_prefix("count/") {
        return Some(match rest.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), rest.to_string()),
        });
    }
    let plural = match resource {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => "pods",
        r if r.starts_with("requests.") && r != "requests.storage" => "pods",
        r if r.starts_with("limits.") => "pods",
        "services" | "services.loadbalancers" | "services.nodeports" => "services",
        "persistentvolumeclaims" | "requests.storage" => "persistentvolumeclaims",
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => resource,
        _ => return None,
    };
    Some((String::new(), plural.to_string()))
}

fn hard_of(quota: &Value) -> Map<String, Value> {
    quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

impl Objects {
    /// The objects of `t` in `ns` as this server's replica holds them (no
    /// Raft round trip: admission reads what it needs this way).
    pub(super) fn list_local(&self, t: &ResourceType, ns: &str) -> ApiResult<Vec<Value>> {
        self.store
            .list_local(&t.ns_prefix(Some(ns)), usize::MAX)?
            .iter()
            .map(|kv| self.decode(kv))
            .collect()
    }

    /// What the objects of `ns` that a quota (`spec`) selects use of the
    /// resources it limits.
    pub async fn quota_usage(&self, ns: &str, spec: &Value) -> ApiResult<Usage> {
        let hard = spec
            .get("hard")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut types: Vec<(String, String)> =
            hard.keys().filter_map(|r| counted_type(r)).collect();
        types.sort();
        types.dedup();
        let mut used: Usage = hard.keys().map(|k| (k.clone(), 0.0)).collect();
        for (group, plural) in types {
            let Some(t) = self.type_of(&group, &plural) else {
                continue;
            };
            let (items, _, _) = self
                .list(
                    &t,
                    Some(ns),
                    &LabelSelector::default(),
                    &FieldSelector::default(),
                    None,
                    None,
                )
                .await?;
            for obj in items
                .iter()
                .filter(|o| quota::selects(spec, &group, &plural, o))
            {
                for (k, v) in quota::usage_of(&group, &plural, obj) {
                    if let Some(u) = used.get_mut(&k) {
                        *u += v;
                    }
                }
            }
        }
        Ok(used)
    }

    fn type_of(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.registry
            .all()
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    /// Quota admission of creating `obj` (of `t`, in `ns`), or of updating
    /// `old` to it: the writes of the quotas' new usage to put in the
    /// write's transaction, or the refusal. An update is charged what it
    /// adds (a Service turned NodePort, a claim asking for more storage);
    /// what it gives back is left to the quota controller's recount, as
    /// Kubernetes does.
    pub(super) async fn charge_quota(
        &self,
        t: &ResourceType,
        ns: &str,
        obj: &Value,
        old: Option<&Value>,
    ) -> ApiResult<Vec<Op>> {
        let Some(qt) = self.registry.by_kind("v1", "ResourceQuota").cloned() else {
            return Ok(Vec::new());
        };
        // This server's replica: a quota created a moment ago elsewhere may
        // be missed once; the revision each charge is written under keeps
        // racing creates from both taking the last unit.
        let quotas = self.list_local(&qt, ns)?;
        let mut ops = Vec::new();
        for quota in quotas {
            let spec = quota.get("spec").cloned().unwrap_or(json!({}));
            if !quota::selects(&spec, t.group, t.plural, obj) {
                continue;
            }
            let hard = hard_of(&quota);
            let before: Usage = old
                .filter(|o| quota::selects(&spec, t.group, t.plural, o))
                .map(|o| quota::usage_of(t.group, t.plural, o))
                .unwrap_or_default();
            let delta: Usage = quota::usage_of(t.group, t.plural, obj)
                .into_iter()
                .map(|(k, v)| {
                    let was = before.get(&k).copied().unwrap_or(0.0);
                    (k, v - was)
                })
                .filter(|(k, v)| hard.contains_key(k) && *v > 0.0)
                .collect();
            let qname = name_of(&quota);
            if old.is_none() && t.group.is_empty() && t.plural == "pods" {
                let missing = quota::unspecified(&hard, obj);
                if !missing.is_empty() {
                    let parts: Vec<String> = missing
                        .iter()
                        .map(|(r, cs)| format!("{r} for: {}", cs.join(",")))
                        .collect();
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: failed quota: {qname}: must specify {}",
                        qualified(t),
                        name_of(obj),
                        parts.join("; ")
                    )));
                }
            }
            if delta.is_empty() {
                continue;
            }
            // The quota's recorded usage, as Kubernetes' admission uses it
            // (every admitted create adds to it under the quota's revision;
            // the controller recounts as objects go); a recount when it
            // does not cover what the quota limits yet.
            let recorded: Option<Usage> = quota
                .pointer("/status/used")
                .and_then(Value::as_object)
                .filter(|u| hard.keys().all(|k| u.contains_key(k)))
                .map(|u| {
                    u.iter()
                        .map(|(k, v)| {
                            let n = v.as_str().and_then(skiff_common::quantity::parse);
                            (k.clone(), n.unwrap_or(0.0))
                        })
                        .collect()
                });
            let used = match recorded {
                Some(u) => u,
                None => self.quota_usage(ns, &spec).await?,
            };
            let mut over = Vec::new();
            for (res, d) in &delta {
                let limit = hard
                    .get(res)
                    .and_then(Value::as_str)
                    .and_then(skiff_common::quantity::parse)
                    .unwrap_or(0.0);
                let now = used.get(res).copied().unwrap_or(0.0);
                if quota::exceeds(now + d, limit) {
                    over.push((res.clone(), *d, now, limit));
                }
            }
            if !over.is_empty() {
                let list =
                    |f: &dyn Fn(&Over) -> String| over.iter().map(f).collect::<Vec<_>>().join(",");
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                    qualified(t),
                    name_of(obj),
                    list(&|o| format!("{}={}", o.0, quota::format(&o.0, o.1))),
                    list(&|o| format!("{}={}", o.0, quota::format(&o.0, o.2))),
                    list(&|o| format!("{}={}", o.0, quota::format(&o.0, o.3))),
                )));
            }
            let mut charged = quota.clone();
            let after: Map<String, Value> = used
                .iter()
                .map(|(k, v)| {
                    let total = v + delta.get(k).copied().unwrap_or(0.0);
                    (k.clone(), json!(quota::format(k, total)))
                })
                .collect();
            charged["status"] = json!({"hard": hard, "used": after});
            let rev = quota
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            let key = qt.key(Some(ns), &qname);
            ops.push(Op::update(key.clone(), self.encode(&key, &charged), rev));
        }
        Ok(ops)
    }
}

/// Whether a failed transaction lost a race on a quota (judge it again).
pub(super) fn quota_raced(e: &crate::store::StoreError) -> bool {
    matches!(e, crate::store::StoreError::Conflict { key, .. } if key.starts_with("/core/resourcequotas/"))
}
