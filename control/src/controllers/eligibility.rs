//! Whether a DaemonSet's pod belongs on a node: the template's nodeSelector and
//! required node affinity (matchExpressions on labels, matchFields on
//! `metadata.name`), and its tolerations, plus the ones Kubernetes gives every
//! daemon pod, against the node's NoSchedule and NoExecute taints.
//!
//! **Pure: decided from the pod spec and the node only.**

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, PodSpec, Taint, Toleration};

/// Where a daemon pod may be: `run` (a new pod may go there) and `keep` (an
/// existing one may stay: NoSchedule taints do not evict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub run: bool,
    pub keep: bool,
}

/// The tolerations Kubernetes adds to every DaemonSet pod.
pub fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// `tols` plus the daemon tolerations it lacks.
pub fn with_daemon_tolerations(tols: Option<&Vec<Toleration>>) -> Vec<Toleration> {
    let mut out = tols.cloned().unwrap_or_default();
    for t in daemon_tolerations() {
        if !out.iter().any(|o| o.key == t.key && o.effect == t.effect) {
            out.push(t);
        }
    }
    out
}

/// Kubernetes' `ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    crate::model::scheduling::toleration_matches(
        (
            t.key.as_deref().unwrap_or(""),
            t.operator.as_deref().unwrap_or("Equal"),
            t.value.as_deref().unwrap_or(""),
            t.effect.as_deref().unwrap_or(""),
        ),
        (
            &taint.key,
            taint.value.as_deref().unwrap_or(""),
            &taint.effect,
        ),
    )
}

fn requirement(r: &NodeSelectorRequirement, get: impl Fn(&str) -> Option<String>) -> bool {
    crate::model::scheduling::requirement_matches(
        get(&r.key).as_deref(),
        &r.operator,
        r.values.as_deref().unwrap_or_default(),
    )
}

/// The template's nodeSelector and required node affinity match the node.
pub fn selected(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    let name = node.metadata.name.clone().unwrap_or_default();
    // Terms are ORed; an empty term matches nothing (as Kubernetes has it).
    req.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        (!exprs.is_empty() || !fields.is_empty())
            && exprs
                .iter()
                .all(|r| requirement(r, |k| labels.get(k).cloned()))
            && fields
                .iter()
                .all(|r| requirement(r, |k| (k == "metadata.name").then(|| name.clone())))
    })
}

/// Where a pod with `spec` (plus the daemon tolerations) may run on `node`.
pub fn fit(spec: &PodSpec, node: &Node) -> Fit {
    if !selected(spec, node) {
        return Fit {
            run: false,
            keep: false,
        };
    }
    let tols = with_daemon_tolerations(spec.tolerations.as_ref());
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|t| t.effect == effect && !tols.iter().any(|o| tolerates(o, t)))
    };
    let keep = !untolerated("NoExecute");
    Fit {
        run: keep && !untolerated("NoSchedule"),
        keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(v: Value) -> Node {
        let mut n = json!({"metadata": {"name": "n1", "labels": {"disk": "ssd", "cores": "8"}}});
        json_patch::merge(&mut n, &v);
        serde_json::from_value(n).unwrap()
    }

    fn spec(v: Value) -> PodSpec {
        let mut s = json!({"containers": [{"name": "c"}]});
        json_patch::merge(&mut s, &v);
        serde_json::from_value(s).unwrap()
    }

    fn affinity(exprs: Value, fields: Value) -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": exprs, "matchFields": fields}]}}}})
    }

    fn taint(key: &str, effect: &str) -> Value {
        json!({"spec": {"taints": [{"key": key, "value": "v", "effect": effect}]}})
    }

    #[test]
    fn fit_table() {
        let yes = Fit {
            run: true,
            keep: true,
        };
        let no = Fit {
            run: false,
            keep: false,
        };
        let keep_only = Fit {
            run: false,
            keep: true,
        };
        let e =
            |k: &str, op: &str, vals: &[&str]| json!([{"key": k, "operator": op, "values": vals}]);
        let cases: Vec<(&str, Value, Value, Fit)> = vec![
            ("plain", json!({}), json!({}), yes),
            (
                "selector hit",
                json!({}),
                json!({"nodeSelector": {"disk": "ssd"}}),
                yes,
            ),
            (
                "selector miss",
                json!({}),
                json!({"nodeSelector": {"disk": "hdd"}}),
                no,
            ),
            (
                "In",
                json!({}),
                affinity(e("disk", "In", &["ssd", "nvme"]), json!([])),
                yes,
            ),
            (
                "In miss",
                json!({}),
                affinity(e("disk", "In", &["hdd"]), json!([])),
                no,
            ),
            (
                "NotIn",
                json!({}),
                affinity(e("disk", "NotIn", &["hdd"]), json!([])),
                yes,
            ),
            (
                "NotIn miss",
                json!({}),
                affinity(e("disk", "NotIn", &["ssd"]), json!([])),
                no,
            ),
            (
                "Exists",
                json!({}),
                affinity(e("disk", "Exists", &[]), json!([])),
                yes,
            ),
            (
                "DoesNotExist",
                json!({}),
                affinity(e("gpu", "DoesNotExist", &[]), json!([])),
                yes,
            ),
            (
                "DoesNotExist miss",
                json!({}),
                affinity(e("disk", "DoesNotExist", &[]), json!([])),
                no,
            ),
            (
                "Gt",
                json!({}),
                affinity(e("cores", "Gt", &["4"]), json!([])),
                yes,
            ),
            (
                "Gt miss",
                json!({}),
                affinity(e("cores", "Gt", &["8"]), json!([])),
                no,
            ),
            (
                "Lt",
                json!({}),
                affinity(e("cores", "Lt", &["16"]), json!([])),
                yes,
            ),
            (
                "Lt not a number",
                json!({}),
                affinity(e("disk", "Lt", &["16"]), json!([])),
                no,
            ),
            (
                "matchFields",
                json!({}),
                affinity(json!([]), e("metadata.name", "In", &["n1"])),
                yes,
            ),
            (
                "matchFields miss",
                json!({}),
                affinity(json!([]), e("metadata.name", "In", &["n2"])),
                no,
            ),
            (
                "NoSchedule taint",
                taint("gpu", "NoSchedule"),
                json!({}),
                keep_only,
            ),
            ("NoExecute taint", taint("gpu", "NoExecute"), json!({}), no),
            (
                "PreferNoSchedule taint",
                taint("gpu", "PreferNoSchedule"),
                json!({}),
                yes,
            ),
            (
                "tolerated by key",
                taint("gpu", "NoSchedule"),
                json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]}),
                yes,
            ),
            (
                "tolerated by value",
                taint("gpu", "NoExecute"),
                json!({"tolerations": [{"key": "gpu", "operator": "Equal", "value": "v", "effect": "NoExecute"}]}),
                yes,
            ),
            (
                "wrong value",
                taint("gpu", "NoExecute"),
                json!({"tolerations": [{"key": "gpu", "value": "w"}]}),
                no,
            ),
            (
                "wrong effect",
                taint("gpu", "NoExecute"),
                json!({"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}),
                no,
            ),
            (
                "tolerate everything",
                taint("gpu", "NoExecute"),
                json!({"tolerations": [{"operator": "Exists"}]}),
                yes,
            ),
            (
                "automatic: not-ready",
                taint("node.kubernetes.io/not-ready", "NoExecute"),
                json!({}),
                yes,
            ),
            (
                "automatic: unreachable",
                taint("node.kubernetes.io/unreachable", "NoExecute"),
                json!({}),
                yes,
            ),
            (
                "automatic: unschedulable",
                taint("node.kubernetes.io/unschedulable", "NoSchedule"),
                json!({}),
                yes,
            ),
            (
                "automatic: disk-pressure",
                taint("node.kubernetes.io/disk-pressure", "NoSchedule"),
                json!({}),
                yes,
            ),
            (
                "unreachable NoSchedule is not automatic",
                taint("node.kubernetes.io/unreachable", "NoSchedule"),
                json!({}),
                keep_only,
            ),
        ];
        for (what, n, s, want) in cases {
            assert_eq!(fit(&spec(s), &node(n)), want, "{what}");
        }
    }

    #[test]
    fn daemon_tolerations_are_added_once() {
        let own = vec![Toleration {
            key: Some("node.kubernetes.io/not-ready".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(30),
            ..Default::default()
        }];
        let all = with_daemon_tolerations(Some(&own));
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].toleration_seconds, Some(30));
    }
}
