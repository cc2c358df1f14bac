//! ResourceQuota arithmetic, shared by quota admission and the quota
//! controller: what one object uses of each quota resource (`pods`,
//! `count/<resource>[.<group>]`, object counts, the compute resources of
//! pods, `requests.storage` of claims), which objects a quota's scopes
//! select, and quantities as the API writes them.
//!
//! **A finished pod (Succeeded or Failed) uses nothing, as in Kubernetes.**

use std::collections::BTreeMap;

use serde_json::Value;

/// Resource name -> amount (counts, cores, bytes).
pub type Usage = BTreeMap<String, f64>;

/// Kinds whose objects are counted by their plain plural (`pods`,
/// `services`...), besides `count/<plural>`.
const COUNTED: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

fn terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn q(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_str)
        .and_then(skiff_common::quantity::parse)
}

fn containers<'a>(spec: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    spec.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A container's request of `res` (its limit when no request is given).
fn request(c: &Value, res: &str) -> Option<f64> {
    q(c.pointer(&format!("/resources/requests/{res}")))
        .or_else(|| q(c.pointer(&format!("/resources/limits/{res}"))))
}

fn limit(c: &Value, res: &str) -> Option<f64> {
    q(c.pointer(&format!("/resources/limits/{res}")))
}

/// A pod's effective amount: the larger of its app containers' sum (with
/// restartable init containers, which run alongside) and any one init
/// container, as Kubernetes' `PodRequests`.
fn pod_amount(spec: &Value, f: impl Fn(&Value) -> Option<f64>) -> f64 {
    let mut sum: f64 = containers(spec, "containers").filter_map(&f).sum();
    let mut init_max: f64 = 0.0;
    for c in containers(spec, "initContainers") {
        let v = f(c).unwrap_or(0.0);
        if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            sum += v;
        } else {
            init_max = init_max.max(v);
        }
    }
    sum.max(init_max)
}

/// What one object of `plural` (in `group`) uses.
pub fn usage_of(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let is_pod = group.is_empty() && plural == "pods";
    if is_pod && terminal(obj) {
        return u;
    }
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    u.insert(count, 1.0);
    if group.is_empty() && COUNTED.contains(&plural) {
        u.insert(plural.to_string(), 1.0);
    }
    if is_pod && let Some(spec) = obj.get("spec") {
        for res in ["cpu", "memory", "ephemeral-storage"] {
            let req = pod_amount(spec, |c| request(c, res));
            let lim = pod_amount(spec, |c| limit(c, res));
            u.insert(format!("requests.{res}"), req);
            u.insert(res.to_string(), req);
            u.insert(format!("limits.{res}"), lim);
        }
    }
    if group.is_empty() && plural == "services" {
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let ports = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as f64;
        if ty == "LoadBalancer" {
            u.insert("services.loadbalancers".into(), 1.0);
        }
        if matches!(ty, "NodePort" | "LoadBalancer") {
            u.insert("services.nodeports".into(), ports);
        }
    }
    if group.is_empty() && plural == "persistentvolumeclaims" {
        let s = q(obj.pointer("/spec/resources/requests/storage")).unwrap_or(0.0);
        u.insert("requests.storage".into(), s);
    }
    u
}

fn best_effort(pod: &Value) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    ["initContainers", "containers"].iter().all(|k| {
        containers(spec, k).all(|c| {
            ["requests", "limits"].iter().all(|r| {
                c.pointer(&format!("/resources/{r}"))
                    .and_then(Value::as_object)
                    .is_none_or(|m| m.is_empty())
            })
        })
    })
}

fn scope_matches(scope: &str, pod: &Value) -> bool {
    let terminating = pod
        .pointer("/spec/activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null());
    match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        _ => false,
    }
}

/// Whether a quota with `spec` counts the object of `plural`: a quota with
/// scopes counts only pods its scopes all select.
pub fn selects(spec: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let mut scopes: Vec<(String, bool)> = spec
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), true))
        .collect();
    for e in spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        scopes.push((name.to_string(), op != "DoesNotExist" && op != "NotIn"));
    }
    if scopes.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    scopes
        .iter()
        .all(|(s, want)| scope_matches(s, obj) == *want)
}

/// The compute resources a quota tracks that some container of `pod` does
/// not specify: `(resource, containers)`.
pub fn unspecified(
    hard: &serde_json::Map<String, Value>,
    pod: &Value,
) -> Vec<(String, Vec<String>)> {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut out = Vec::new();
    for res in hard.keys() {
        let (kind, name) = match res.split_once('.') {
            Some((k @ ("requests" | "limits"), n)) => (k, n),
            None if matches!(res.as_str(), "cpu" | "memory") => ("requests", res.as_str()),
            _ => continue,
        };
        if !matches!(name, "cpu" | "memory") {
            continue;
        }
        let missing: Vec<String> = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| containers(spec, k))
            .filter(|c| {
                if kind == "requests" {
                    request(c, name).is_none()
                } else {
                    limit(c, name).is_none()
                }
            })
            .map(|c| {
                c.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        if !missing.is_empty() {
            out.push((format!("{kind}.{name}"), missing));
        }
    }
    out
}

/// An amount of `resource` as the API writes it: millicores for a
/// fraction of a core, whole numbers otherwise.
pub fn format(resource: &str, v: f64) -> String {
    if resource.ends_with("cpu") && (v.fract().abs() > 1e-9) {
        format!("{}m", (v * 1000.0).round() as i64)
    } else {
        format!("{}", v.round() as i64)
    }
}

/// `a > b`, allowing for float rounding of quantities.
pub fn exceeds(a: f64, b: f64) -> bool {
    a > b + 1e-9 * b.abs().max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_table() {
        let pod = json!({"spec": {
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}},
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "250m"}}}]}});
        let u = usage_of("", "pods", &pod);
        assert_eq!(u["pods"], 1.0);
        assert_eq!(u["count/pods"], 1.0);
        assert!((u["requests.cpu"] - 2.0).abs() < 1e-9, "{u:?}");
        assert_eq!(u["requests.memory"], 64.0 * 1024.0 * 1024.0);
        assert_eq!(u["limits.memory"], 128.0 * 1024.0 * 1024.0);
        let done = json!({"spec": {}, "status": {"phase": "Succeeded"}});
        assert!(usage_of("", "pods", &done).is_empty());
        let d = usage_of("apps", "deployments", &json!({}));
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["count/deployments.apps"]);
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        assert_eq!(usage_of("", "services", &svc)["services.nodeports"], 2.0);
        assert_eq!(format("requests.cpu", 2.5), "2500m");
        assert_eq!(format("pods", 3.0), "3");
    }

    #[test]
    fn scopes_and_unspecified() {
        let be = json!({"spec": {"containers": [{"name": "c"}]}});
        let burst = json!({"spec": {"activeDeadlineSeconds": 5, "containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}});
        let scoped = json!({"scopes": ["BestEffort"]});
        assert!(selects(&scoped, "", "pods", &be));
        assert!(!selects(&scoped, "", "pods", &burst));
        assert!(!selects(&scoped, "", "services", &json!({})));
        let sel = json!({"scopeSelector": {"matchExpressions": [{"scopeName": "Terminating", "operator": "Exists"}]}});
        assert!(selects(&sel, "", "pods", &burst) && !selects(&sel, "", "pods", &be));
        let hard = json!({"requests.cpu": "1", "limits.memory": "1Gi", "pods": "3"});
        let miss = unspecified(hard.as_object().unwrap(), &burst);
        assert_eq!(
            miss,
            vec![("limits.memory".to_string(), vec!["c".to_string()])]
        );
    }
}
