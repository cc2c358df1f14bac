//! Admission checks of scaling settings: the scale-to-zero annotation of
//! Deployments (a non-negative Go duration) and a HorizontalPodAutoscaler's
//! replica bounds and targets (`minReplicas: 0` is allowed, as Kubernetes'
//! HPAScaleToZero gate allows it).

use serde_json::Value;
use skiff_common::scale::{SCALE_TO_ZERO_AFTER, parse_duration};

use super::validate::Cause;

/// The causes `obj` (of `kind` in `group`) is invalid for, if any.
pub fn check(group: &str, kind: &str, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(v) = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SCALE_TO_ZERO_AFTER))
    {
        match v.as_str().map(parse_duration) {
            // Deployments copy their annotations to their ReplicaSets,
            // so any kind may carry it; only Deployments act on it.
            Some(Ok(_)) => {}
            Some(Err(why)) => causes.push(Cause::invalid(
                &format!("metadata.annotations[{SCALE_TO_ZERO_AFTER}]"),
                v.as_str().unwrap_or(""),
                &why,
            )),
            None => causes.push(Cause::invalid(
                &format!("metadata.annotations[{SCALE_TO_ZERO_AFTER}]"),
                &v.to_string(),
                "must be a duration string such as \"60s\"",
            )),
        }
    }
    if group == "autoscaling" && kind == "HorizontalPodAutoscaler" {
        causes.extend(hpa(obj));
    }
    causes
}

fn hpa(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let min = obj.pointer("/spec/minReplicas").and_then(Value::as_i64);
    let max = obj.pointer("/spec/maxReplicas").and_then(Value::as_i64);
    if let Some(m) = min.filter(|m| *m < 0) {
        causes.push(Cause::invalid(
            "spec.minReplicas",
            &m.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    match max {
        Some(m) if m < 1 => causes.push(Cause::invalid(
            "spec.maxReplicas",
            &m.to_string(),
            "must be greater than 0",
        )),
        Some(m) if min.is_some_and(|n| m < n) => causes.push(Cause::invalid(
            "spec.maxReplicas",
            &m.to_string(),
            "must be greater than or equal to `minReplicas`",
        )),
        _ => {}
    }
    for (i, m) in obj
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
        let key = match ty {
            "Resource" => "resource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            "ContainerResource" => "containerResource",
            _ => {
                causes.push(Cause::new(
                    "FieldValueNotSupported",
                    format!("spec.metrics[{i}].type"),
                    format!(
                        "Unsupported value: \"{ty}\": supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\""
                    ),
                ));
                continue;
            }
        };
        let Some(target) = m.pointer(&format!("/{key}/target")) else {
            causes.push(Cause::required(&format!("spec.metrics[{i}].{key}.target")));
            continue;
        };
        if let Some(u) = target.get("averageUtilization").and_then(Value::as_i64)
            && u <= 0
        {
            causes.push(Cause::invalid(
                &format!("spec.metrics[{i}].{key}.target.averageUtilization"),
                &u.to_string(),
                "must be greater than 0",
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idle_windows_must_be_durations() {
        let d = |v: Value| json!({"metadata": {"annotations": {SCALE_TO_ZERO_AFTER: v}}});
        assert!(check("apps", "Deployment", &d(json!("60s"))).is_empty());
        let neg = check("apps", "Deployment", &d(json!("-5s")));
        assert!(neg[0].message.contains("negative"), "{neg:?}");
        assert!(!check("apps", "Deployment", &d(json!("soon"))).is_empty());
        assert!(check("apps", "ReplicaSet", &d(json!("60s"))).is_empty());
    }

    #[test]
    fn hpa_bounds() {
        let h = |min: i64, max: i64| {
            json!({"spec": {"minReplicas": min, "maxReplicas": max,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}]}})
        };
        assert!(check("autoscaling", "HorizontalPodAutoscaler", &h(0, 3)).is_empty());
        assert_eq!(
            check("autoscaling", "HorizontalPodAutoscaler", &h(-1, 3)).len(),
            1
        );
        assert_eq!(
            check("autoscaling", "HorizontalPodAutoscaler", &h(4, 3)).len(),
            1
        );
        assert_eq!(
            check("autoscaling", "HorizontalPodAutoscaler", &h(0, 0)).len(),
            1
        );
    }
}
