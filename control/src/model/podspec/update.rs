//! What an update of a Pod may change: container and init container images,
//! `activeDeadlineSeconds` (set, or lowered), `tolerations` (only added to),
//! `schedulingGates` (only removed) and `terminationGracePeriodSeconds` (from
//! negative to 1); anything else in `spec` is forbidden, as Kubernetes'
//! `ValidatePodUpdate`.

use serde_json::Value;

use super::super::validate::Cause;

const FORBIDDEN: &str = "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Copy the images of `new`'s containers under `key` onto `old`'s, when the
/// lists have the same length (any other change stays visible).
fn take_images(kept: &mut Value, new: &Value, key: &str) {
    let (Some(to), Some(from)) = (
        kept.get_mut(key).and_then(Value::as_array_mut),
        new.get(key).and_then(Value::as_array),
    ) else {
        return;
    };
    if to.len() != from.len() {
        return;
    }
    for (t, f) in to.iter_mut().zip(from) {
        if let (Some(o), Some(img)) = (t.as_object_mut(), f.get("image")) {
            o.insert("image".into(), img.clone());
        }
    }
}

fn list<'a>(spec: &'a Value, key: &str) -> &'a [Value] {
    spec.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The causes an update of a pod's `spec` from `old` to `new` is refused for.
pub fn pod_update(new: &Value, old: &Value) -> Vec<Cause> {
    let (Some(new_spec), Some(old_spec)) = (new.get("spec"), old.get("spec")) else {
        return Vec::new();
    };
    let mut causes = Vec::new();
    for key in ["containers", "initContainers"] {
        for (i, c) in list(new_spec, key).iter().enumerate() {
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required(&format!("spec.{key}[{i}].image")));
            }
        }
    }
    let mut kept = old_spec.clone();
    take_images(&mut kept, new_spec, "containers");
    take_images(&mut kept, new_spec, "initContainers");
    let Some(k) = kept.as_object_mut() else {
        return causes;
    };
    let deadline = |s: &Value| s.get("activeDeadlineSeconds").and_then(Value::as_i64);
    match (deadline(old_spec), deadline(new_spec)) {
        (None, Some(_)) => {
            k.insert(
                "activeDeadlineSeconds".into(),
                new_spec["activeDeadlineSeconds"].clone(),
            );
        }
        (Some(o), Some(n)) if n <= o && n > 0 => {
            k.insert("activeDeadlineSeconds".into(), n.into());
        }
        _ => {}
    }
    let (old_tol, new_tol) = (list(old_spec, "tolerations"), list(new_spec, "tolerations"));
    if old_tol.iter().all(|t| new_tol.contains(t)) {
        k.insert("tolerations".into(), Value::Array(new_tol.to_vec()));
    }
    let (old_gates, new_gates) = (
        list(old_spec, "schedulingGates"),
        list(new_spec, "schedulingGates"),
    );
    if new_gates.iter().all(|g| old_gates.contains(g)) {
        k.insert("schedulingGates".into(), Value::Array(new_gates.to_vec()));
    }
    let grace = |s: &Value| {
        s.get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
    };
    if grace(old_spec).is_some_and(|g| g < 0) && grace(new_spec) == Some(1) {
        k.insert("terminationGracePeriodSeconds".into(), 1.into());
    }
    // Empty lists and absent ones are the same to a client.
    let normal = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| !(x.is_null() || x.as_array().is_some_and(Vec::is_empty)));
        }
        v
    };
    if normal(&kept) != normal(new_spec) {
        causes.push(Cause::new("FieldValueForbidden", "spec", FORBIDDEN));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({ "spec": spec })
    }

    #[test]
    fn pod_update_table() {
        let old = json!({"containers": [{"name": "a", "image": "one"}],
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "activeDeadlineSeconds": 30});
        let cases = [
            (
                json!({"containers": [{"name": "a", "image": "two"}],
                "tolerations": [{"key": "k", "operator": "Exists"}, {"key": "x", "operator": "Exists"}],
                "activeDeadlineSeconds": 20}),
                vec![],
            ),
            (
                json!({"containers": [{"name": "a", "image": "one"}, {"name": "b", "image": "one"}],
                "tolerations": [{"key": "k", "operator": "Exists"}], "activeDeadlineSeconds": 30}),
                vec!["spec"],
            ),
            (
                json!({"containers": [{"name": "a", "image": ""}],
                "tolerations": [{"key": "k", "operator": "Exists"}], "activeDeadlineSeconds": 30}),
                vec!["spec.containers[0].image"],
            ),
            (
                json!({"containers": [{"name": "a", "image": "one"}], "tolerations": [],
                "activeDeadlineSeconds": 30}),
                vec!["spec"],
            ),
            (
                json!({"containers": [{"name": "a", "image": "one"}],
                "tolerations": [{"key": "k", "operator": "Exists"}], "activeDeadlineSeconds": 60}),
                vec!["spec"],
            ),
            (
                json!({"containers": [{"name": "a", "image": "one"}], "nodeName": "n",
                "tolerations": [{"key": "k", "operator": "Exists"}], "activeDeadlineSeconds": 30}),
                vec!["spec"],
            ),
        ];
        for (new, want) in cases {
            let got: Vec<String> = pod_update(&pod(new.clone()), &pod(old.clone()))
                .into_iter()
                .map(|c| c.field)
                .collect();
            assert_eq!(got, want, "{new}");
        }
    }
}
