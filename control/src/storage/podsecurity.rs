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
    ) -> ApiResult<Vec<String>> {
        let Some((meta, spec)) = podsecurity::pod_parts(t.group, t.kind, obj) else {
            return Ok(Vec::new());
        };
        let policy = Policy::of_namespace(namespace, self.pod_security);
        let is_pod = t.group.is_empty() && t.kind == "Pod";
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
        }
        // A pod that passed enforce gets no warning for a level at or below it.
        if is_pod && policy.warn <= policy.enforce {
            return Ok(Vec::new());
        }
        let found = podsecurity::evaluate(policy.warn, meta, spec);
        if found.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![format!(
            "would violate {}",
            podsecurity::describe(policy.warn, &found)
        )])
    }
}
