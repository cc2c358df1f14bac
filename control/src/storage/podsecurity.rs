//! Pod Security admission on create: a Pod that fails its namespace's
//! `enforce` level is refused (403); a Pod or a workload whose template fails
//! the `warn` level is admitted with a warning (workloads are never refused,
//! their pods are).

use serde_json::Value;

use crate::model::ResourceType;
use crate::model::meta::name_of;
use crate::model::status::{ApiError, ApiResult};
use crate::podsecurity::{self, Policy};

use super::Objects;

impl Objects {
    /// The warnings of admitting `obj` (of type `t`, in `namespace`), or the
    /// refusal of a pod its namespace's level forbids.
    pub(super) fn admit_pod_security(
        &self,
        t: &ResourceType,
        namespace: Option<&Value>,
        obj: &Value,
    ) -> ApiResult<Judged> {
        let Some((meta, spec)) = podsecurity::pod_parts(t.group, t.kind, obj) else {
            return Ok(Judged::default());
        };
        let policy = Policy::of_namespace(namespace, self.pod_security);
        let is_pod = t.group.is_empty() && t.kind == "Pod";
        let mut judged = Judged::default();
        if is_pod {
            let found = podsecurity::evaluate(policy.enforce, meta, spec);
            if !found.is_empty() {
                tracing::info!(pod = %name_of(obj), level = policy.enforce.as_str(), "pod security refused a pod");
                return Err(ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: violates {}",
                    name_of(obj),
                    podsecurity::describe(policy.enforce, &found)
                )));
            }
            // The audit log records the level enforced, and what the
            // `audit` level would have refused, as Kubernetes annotates it.
            judged.audit.push((
                "pod-security.kubernetes.io/enforce-policy".into(),
                format!("{}:latest", policy.enforce.as_str()),
            ));
            if policy.audit > policy.enforce {
                let found = podsecurity::evaluate(policy.audit, meta, spec);
                if !found.is_empty() {
                    judged.audit.push((
                        "pod-security.kubernetes.io/audit-violations".into(),
                        format!(
                            "would violate {}",
                            podsecurity::describe(policy.audit, &found)
                        ),
                    ));
                }
            }
        }
        // A pod that passed enforce gets no warning for a level at or below it.
        if is_pod && policy.warn <= policy.enforce {
            return Ok(judged);
        }
        let found = podsecurity::evaluate(policy.warn, meta, spec);
        if !found.is_empty() {
            judged.warnings.push(format!(
                "would violate {}",
                podsecurity::describe(policy.warn, &found)
            ));
        }
        Ok(judged)
    }

    /// Warnings for an update of a namespace that tightens its `enforce`
    /// level: the pods already there that the new level would refuse (they
    /// keep running), as Kubernetes warns.
    pub(super) fn namespace_level_warnings(
        &self,
        t: &ResourceType,
        old: &Value,
        new: &Value,
    ) -> Vec<String> {
        if !(t.group.is_empty() && t.kind == "Namespace") {
            return Vec::new();
        }
        let before = Policy::of_namespace(Some(old), self.pod_security).enforce;
        let after = Policy::of_namespace(Some(new), self.pod_security).enforce;
        if after <= before {
            return Vec::new();
        }
        let ns = name_of(new);
        let Some(pt) = self.registry.by_kind("v1", "Pod").cloned() else {
            return Vec::new();
        };
        let pods = self.list_local(&pt, &ns).unwrap_or_default();
        let mut lines = Vec::new();
        for pod in &pods {
            let Some((meta, spec)) = podsecurity::pod_parts("", "Pod", pod) else {
                continue;
            };
            let found = podsecurity::evaluate(after, meta, spec);
            if !found.is_empty() {
                let checks: Vec<&str> = found.iter().map(|v| v.check).collect();
                lines.push(format!("{}: {}", name_of(pod), checks.join(", ")));
            }
        }
        if lines.is_empty() {
            return lines;
        }
        let mut out = vec![format!(
            "existing pods in namespace \"{ns}\" violate the new PodSecurity enforce level \"{}:latest\"",
            after.as_str()
        )];
        out.extend(lines);
        out
    }
}

/// What Pod Security says of an admitted object: warnings for the client and
/// annotations for the audit log.
#[derive(Debug, Default)]
pub(super) struct Judged {
    pub warnings: Vec<String>,
    pub audit: Vec<(String, String)>,
}
