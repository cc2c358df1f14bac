//! Table tests of the Pod Security checks, their wording and the policy a
//! namespace's labels give.

use super::*;
use serde_json::json;

fn checks_at(level: Level, spec: Value) -> Vec<&'static str> {
    evaluate(level, &json!({}), &spec)
        .into_iter()
        .map(|v| v.check)
        .collect()
}

fn restricted_ok() -> Value {
    json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "i", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
        "volumes": [{"name": "v", "configMap": {"name": "x"}}]})
}

#[test]
fn levels_table() {
    let plain = json!({"containers": [{"name": "c", "image": "i"}]});
    assert!(checks_at(Level::Baseline, plain.clone()).is_empty());
    assert_eq!(
        checks_at(Level::Restricted, plain),
        vec![
            "allowPrivilegeEscalation != false",
            "runAsNonRoot != true",
            "seccompProfile",
            "unrestricted capabilities"
        ]
    );
    assert!(checks_at(Level::Restricted, restricted_ok()).is_empty());
    let cases = [
        (
            json!({"hostNetwork": true, "containers": []}),
            "host namespaces",
        ),
        (
            json!({"containers": [{"name": "c", "securityContext": {"privileged": true}}]}),
            "privileged",
        ),
        (
            json!({"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
            "non-default capabilities",
        ),
        (
            json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}], "containers": []}),
            "hostPath volumes",
        ),
        (
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
            "hostPort",
        ),
        (
            json!({"containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]}),
            "procMount",
        ),
        (
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": []}),
            "seccompProfile",
        ),
        (
            json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}, "containers": []}),
            "forbidden sysctls",
        ),
        (
            json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}, "containers": []}),
            "seLinuxOptions",
        ),
    ];
    for (spec, check) in cases {
        assert_eq!(
            checks_at(Level::Baseline, spec.clone()),
            vec![check],
            "{spec}"
        );
        assert!(checks_at(Level::Privileged, spec).is_empty());
    }
    // Safe sysctls pass baseline.
    let safe = json!({"securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 2048"}]}, "containers": []});
    assert!(checks_at(Level::Baseline, safe).is_empty());
}

#[test]
fn messages_are_kubernetes_words() {
    let spec = json!({"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]});
    let found = evaluate(Level::Restricted, &json!({}), &spec);
    let text = describe(Level::Restricted, &found);
    assert!(
        text.starts_with("PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"),
        "{text}"
    );
    assert!(
        text.contains("unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]; container \"c\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)"),
        "{text}"
    );
}

#[test]
fn namespace_labels_choose_the_levels() {
    let ns = |labels: Value| json!({"metadata": {"labels": labels}});
    let d = Policy::default();
    assert_eq!(
        Policy::of_namespace(None, d),
        Policy::uniform(Level::Baseline)
    );
    let p = Policy::of_namespace(
        Some(&ns(
            json!({"pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "privileged"}),
        )),
        d,
    );
    assert_eq!(
        (p.enforce, p.warn, p.audit),
        (Level::Restricted, Level::Privileged, Level::Baseline)
    );
    let typo = ns(json!({"pod-security.kubernetes.io/enforce": "privilegd"}));
    assert_eq!(
        Policy::of_namespace(Some(&typo), d).enforce,
        Level::Restricted
    );
    assert_eq!(invalid_labels(&typo).len(), 1);
}
