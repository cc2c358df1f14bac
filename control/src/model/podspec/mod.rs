//! Admission checks of pod specs, wherever one appears (a Pod, a PodTemplate, a
//! workload's template, a CronJob's job template): container and volume names
//! are RFC 1123 labels, unique, and every volumeMount names a volume of the
//! pod, as Kubernetes' `ValidatePodSpec` requires; volume sources and paths
//! (`volumes`), container ports, mounts, resources and probes (`containers`);
//! what an update of a Pod may change (`update`).
//!
//! **A name that could address a host path (`/tmp/x`, `../x`, `a/b`) never
//! reaches the store, so no node ever sees it.**

use std::collections::HashSet;

use serde_json::Value;

use super::validate::{Cause, dns1123_label};

mod containers;
mod update;
mod volumes;

pub use update::pod_update;
pub use volumes::{descending_path, non_reserved_path};

/// Where the pod spec of an object of `kind` (in `group`) lives, as a JSON
/// pointer and as the field path Kubernetes reports.
pub fn spec_of(group: &str, kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match (group, kind) {
        ("", "Pod") => ("/spec", "spec"),
        ("", "PodTemplate") => ("/template/spec", "template.spec"),
        ("", "ReplicationController")
        | ("apps", "ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => ("/spec/template/spec", "spec.template.spec"),
        ("batch", "CronJob") => (
            "/spec/jobTemplate/spec/template/spec",
            "spec.jobTemplate.spec.template.spec",
        ),
        _ => return None,
    })
}

/// The causes the pod spec inside `obj` is invalid for, if any.
pub fn check(group: &str, kind: &str, obj: &Value) -> Vec<Cause> {
    let Some((pointer, field)) = spec_of(group, kind) else {
        return Vec::new();
    };
    match obj.pointer(pointer) {
        Some(spec) => pod_spec(spec, field),
        None => Vec::new(),
    }
}

pub(super) fn items<'a>(spec: &'a Value, key: &str) -> &'a [Value] {
    spec.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

pub(super) fn duplicate(field: &str, value: &str) -> Cause {
    Cause::new(
        "FieldValueDuplicate",
        field,
        format!("Duplicate value: \"{value}\""),
    )
}

/// Check one name: required, a DNS label, not seen before.
fn name(causes: &mut Vec<Cause>, seen: &mut HashSet<String>, field: &str, item: &Value) {
    let field = format!("{field}.name");
    match item.get("name").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required(&field)),
        Some(n) => {
            if let Err(why) = dns1123_label(n) {
                causes.push(Cause::invalid(&field, n, &why));
            } else if !seen.insert(n.to_string()) {
                causes.push(duplicate(&field, n));
            }
        }
    }
}

fn pod_spec(spec: &Value, at: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut volume_names = HashSet::new();
    for (i, v) in items(spec, "volumes").iter().enumerate() {
        let field = format!("{at}.volumes[{i}]");
        name(&mut causes, &mut volume_names, &field, v);
        volumes::volume(&mut causes, &field, v);
    }
    let mut container_names = HashSet::new();
    let mut port_names = HashSet::new();
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, c) in items(spec, key).iter().enumerate() {
            let field = format!("{at}.{key}[{i}]");
            name(&mut causes, &mut container_names, &field, c);
            containers::container(&mut causes, &mut port_names, &field, c);
            for (j, m) in items(c, "volumeMounts").iter().enumerate() {
                let mf = format!("{field}.volumeMounts[{j}]");
                match m.get("name").and_then(Value::as_str) {
                    None | Some("") => causes.push(Cause::required(&format!("{mf}.name"))),
                    Some(n) if !volume_names.contains(n) => causes.push(Cause::new(
                        "FieldValueNotFound",
                        format!("{mf}.name"),
                        format!("Not found: \"{n}\""),
                    )),
                    Some(_) => {}
                }
                if m.get("mountPath")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(&format!("{mf}.mountPath")));
                }
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(group: &str, kind: &str, obj: Value) -> Vec<(String, String)> {
        check(group, kind, &obj)
            .into_iter()
            .map(|c| (c.field, c.reason.to_string()))
            .collect()
    }

    #[test]
    fn pod_specs_are_checked_wherever_they_are() {
        let spec = json!({"volumes": [{"name": "/tmp/x", "emptyDir": {}}],
            "containers": [{"name": "c", "image": "i"}]});
        let cases = [
            ("", "Pod", json!({ "spec": spec }), "spec.volumes[0].name"),
            (
                "apps",
                "Deployment",
                json!({"spec": {"template": {"spec": spec}}}),
                "spec.template.spec.volumes[0].name",
            ),
            (
                "batch",
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
                "spec.jobTemplate.spec.template.spec.volumes[0].name",
            ),
            (
                "",
                "PodTemplate",
                json!({"template": {"spec": spec}}),
                "template.spec.volumes[0].name",
            ),
        ];
        for (g, k, obj, field) in cases {
            assert_eq!(
                fields(g, k, obj),
                vec![(field.to_string(), "FieldValueInvalid".to_string())],
                "{k}"
            );
        }
        assert!(fields("", "ConfigMap", json!({"spec": spec})).is_empty());
    }

    #[test]
    fn names_table() {
        let pod = |volumes: Value, containers: Value| {
            json!({"spec": {"volumes": volumes, "containers": containers,
                "initContainers": [{"name": "init", "image": "i"}]}})
        };
        let ok = json!([{"name": "c", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]);
        type Case = (Value, Value, Vec<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            (json!([{"name": "data"}]), ok.clone(), vec![]),
            (
                json!([{"name": "../x"}, {"name": "a/b"}]),
                json!([{"name": "c", "image": "i"}]),
                vec![
                    ("spec.volumes[0].name", "FieldValueInvalid"),
                    ("spec.volumes[1].name", "FieldValueInvalid"),
                ],
            ),
            (
                json!([{"name": "data"}, {"name": "data"}]),
                ok.clone(),
                vec![("spec.volumes[1].name", "FieldValueDuplicate")],
            ),
            (
                json!([{"name": "data"}]),
                json!([{"name": "init", "image": "i"}, {"name": "C", "image": "i"}, {"image": "i"}]),
                vec![
                    ("spec.containers[0].name", "FieldValueDuplicate"),
                    ("spec.containers[1].name", "FieldValueInvalid"),
                    ("spec.containers[2].name", "FieldValueRequired"),
                ],
            ),
            (
                json!([]),
                json!([{"name": "c", "image": "i", "volumeMounts": [{"name": "gone", "mountPath": "/d"}, {"name": "gone"}]}]),
                vec![
                    (
                        "spec.containers[0].volumeMounts[0].name",
                        "FieldValueNotFound",
                    ),
                    (
                        "spec.containers[0].volumeMounts[1].name",
                        "FieldValueNotFound",
                    ),
                    (
                        "spec.containers[0].volumeMounts[1].mountPath",
                        "FieldValueRequired",
                    ),
                ],
            ),
        ];
        for (volumes, containers, want) in cases {
            let got = fields("", "Pod", pod(volumes.clone(), containers));
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(f, r)| (f.to_string(), r.to_string()))
                .collect();
            assert_eq!(got, want, "{volumes}");
        }
    }
}
