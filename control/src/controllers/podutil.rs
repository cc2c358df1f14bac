//! What the workload controllers share about pods: label selectors, whether a
//! pod is active, ready or available, the order in which surplus pods go, pods
//! made from a template, and controller owner references.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

pub use skiff_common::labels::selector_matches;

/// Whether a selector has no requirement at all.
pub fn empty_selector(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Refuse an empty selector: a workload controller would own everything.
pub fn require_selector(sel: &LabelSelector) -> Result<(), super::framework::ControllerError> {
    if empty_selector(sel) {
        return Err(super::framework::ControllerError::Invalid(
            "empty selector selects nothing".into(),
        ));
    }
    Ok(())
}

/// A selector that selects nothing when empty (what workload controllers want).
pub fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    !empty_selector(sel) && selector_matches(sel, labels)
}

pub fn terminating<K: Resource>(o: &K) -> bool {
    o.meta().deletion_timestamp.is_some()
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Neither finished nor being deleted.
pub fn active(p: &Pod) -> bool {
    !terminating(p) && !matches!(phase(p), "Succeeded" | "Failed")
}

/// When the pod's Ready condition turned True, if it is True.
pub fn ready_since(p: &Pod) -> Option<Option<Timestamp>> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

pub fn ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn available(p: &Pod, min_ready: i32, now: Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => now.as_second() - t.as_second() >= i64::from(min_ready),
    }
}

/// Seconds until a ready pod becomes available (for a requeue), if it is not yet.
pub fn until_available(p: &Pod, min_ready: i32, now: Timestamp) -> Option<i64> {
    let since = ready_since(p)??;
    let left = i64::from(min_ready) - (now.as_second() - since.as_second());
    (left > 0).then_some(left)
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

/// Sort so the pods to remove first come first: unscheduled before scheduled,
/// pending before running, not ready before ready, ready for less time first,
/// more restarts first, newer first (as Kubernetes' `ActivePods` order).
pub fn deletion_order(pods: &mut [Arc<Pod>]) {
    let key = |p: &Arc<Pod>| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let phase_rank = match phase(p) {
            "Pending" => 0,
            "Unknown" => 1,
            _ => 2,
        };
        let ready_for = ready_since(p)
            .map(|t| t.map(|t| -t.as_second()).unwrap_or(0))
            .unwrap_or(i64::MIN);
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        (
            scheduled,
            phase_rank,
            ready(p),
            ready_for,
            -restarts(p),
            -created,
        )
    };
    pods.sort_by_key(key);
}

/// An owner reference naming `owner` as the controller.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller reference of an object, if any.
pub fn controller_of<K: Resource>(o: &K) -> Option<&OwnerReference> {
    o.meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `o` is controlled by the object with `uid`.
pub fn controlled_by<K: Resource>(o: &K, uid: &str) -> bool {
    controller_of(o).is_some_and(|r| r.uid == uid)
}

/// A new pod from a template: its labels, annotations and spec, a name made
/// from `generate_name` (or exactly `name`), and `owner` as controller.
pub fn pod_from_template(
    t: &PodTemplateSpec,
    ns: &str,
    generate_name: Option<String>,
    name: Option<String>,
    owner: OwnerReference,
) -> Pod {
    let m = t.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            generate_name,
            name,
            labels: m.labels,
            annotations: m.annotations,
            finalizers: m.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: t.spec.clone(),
        status: None,
    }
}

/// `name-` cut so a generated suffix still fits a 63-character name.
pub fn generate_prefix(name: &str) -> String {
    let max = 58;
    let mut p: String = name.chars().take(max).collect();
    p.push('-');
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_table() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let cases = [
            (vec![("app", "web"), ("tier", "a")], true),
            (vec![("app", "web"), ("tier", "c")], false),
            (vec![("app", "web")], false),
            (vec![("app", "web"), ("tier", "b"), ("canary", "1")], false),
            (vec![("app", "db"), ("tier", "a")], false),
        ];
        for (l, want) in cases {
            assert_eq!(selects(&sel, &labels(&l)), want, "{l:?}");
        }
        assert!(!selects(&LabelSelector::default(), &labels(&[("a", "b")])));
        assert!(selector_matches(&LabelSelector::default(), &labels(&[])));
    }
}
