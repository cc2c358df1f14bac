//! Pod Security admission with the real kubectl: `baseline` enforced where a
//! namespace says nothing, the namespace labels choosing other levels,
//! warnings at the `warn` level, workloads warned about (their pods are the
//! ones refused), and labels that name no level refused.

use crate::common;

use std::time::Duration;

use anyhow::Result;
use common::{Kubectl, Server, eventually, single_server};

fn create(s: &Server, ns: &str, name: &str, spec: &str) -> Kubectl {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    );
    let f = s.dir.with_extension(format!("{ns}-{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    s.kubectl(&["create", "-f", f.to_str().unwrap()])
}

fn assert_refused(r: &Kubectl, level: &str, check: &str) {
    assert!(!r.ok, "admitted, wanted {check} refused");
    assert!(
        r.stderr.contains("(Forbidden)")
            && r.stderr
                .contains(&format!("violates PodSecurity \"{level}:latest\""))
            && r.stderr.contains(check),
        "wanted a 403 naming {check}, got:\n{}",
        r.stderr
    );
}

const PLAIN: &str = "  containers:\n  - name: c\n    image: i\n";

const RESTRICTED: &str = "  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n    seccompProfile: {type: RuntimeDefault}\n  containers:\n  - name: c\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities: {drop: [ALL]}\n";

#[test]
fn pod_security_levels_refuse_and_warn_as_kubernetes() -> Result<()> {
    let (_root, s) = single_server()?;
    // baseline, where the namespace says nothing.
    assert!(create(&s, "default", "plain", PLAIN).ok);
    let cases = [
        (
            "  containers:\n  - name: c\n    image: i\n    securityContext:\n      capabilities: {add: [SYS_ADMIN]}\n",
            "non-default capabilities (container \"c\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)",
        ),
        (
            "  containers:\n  - name: c\n    image: i\n    securityContext: {privileged: true}\n",
            "privileged (container \"c\" must not set securityContext.privileged=true)",
        ),
        (
            "  hostNetwork: true\n  hostPID: true\n",
            "host namespaces (hostNetwork=true, hostPID=true)",
        ),
        (
            "  volumes:\n  - name: root\n    hostPath: {path: /}\n  containers:\n  - name: c\n    image: i\n",
            "hostPath volumes (volume \"root\")",
        ),
        (
            "  securityContext:\n    seccompProfile: {type: Unconfined}\n  containers:\n  - name: c\n    image: i\n",
            "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
        ),
    ];
    for (i, (spec, check)) in cases.iter().enumerate() {
        let spec = if spec.contains("containers") {
            spec.to_string()
        } else {
            format!("{spec}{PLAIN}")
        };
        assert_refused(
            &create(&s, "default", &format!("b{i}"), &spec),
            "baseline",
            check,
        );
    }

    // restricted, by label.
    s.k(&["create", "namespace", "locked"]);
    s.k(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    assert_refused(
        &create(&s, "locked", "root", PLAIN),
        "restricted",
        "runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)",
    );
    let ok = create(&s, "locked", "good", RESTRICTED);
    assert!(ok.ok, "{}", ok.stderr);

    // privileged enforced, restricted warned about: admitted with a warning.
    s.k(&["create", "namespace", "open"]);
    s.k(&[
        "label",
        "namespace",
        "open",
        "pod-security.kubernetes.io/enforce=privileged",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let r = create(
        &s,
        "open",
        "priv",
        "  containers:\n  - name: c\n    image: i\n    securityContext: {privileged: true}\n",
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("Warning: would violate PodSecurity \"restricted:latest\"")
            && r.stderr.contains("privileged (container \"c\""),
        "{}",
        r.stderr
    );

    // A label that names no level is refused.
    let r = s.kubectl(&[
        "label",
        "namespace",
        "open",
        "pod-security.kubernetes.io/enforce=privilegd",
        "--overwrite",
    ]);
    assert!(
        !r.ok && r.stderr.contains("Unsupported value: \"privilegd\""),
        "{}",
        r.stderr
    );

    // Tightening a namespace warns about the pods already there (they keep
    // running).
    let r = s.kubectl(&[
        "label",
        "namespace",
        "open",
        "pod-security.kubernetes.io/enforce=baseline",
        "--overwrite",
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "existing pods in namespace \"open\" violate the new PodSecurity enforce level \"baseline:latest\""
        ) && r.stderr.contains("priv: privileged"),
        "{}",
        r.stderr
    );
    assert!(!s.not_found(&["pod", "-n", "open", "priv"]));

    // A workload is admitted with a warning; its pods are refused.
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: rooty\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: rooty}\n  template:\n    metadata:\n      labels: {app: rooty}\n    spec:\n      containers:\n      - name: c\n        image: i\n        securityContext:\n          capabilities: {add: [NET_ADMIN]}\n";
    let r = s.try_apply(deploy);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("would violate PodSecurity \"baseline:latest\": non-default capabilities"),
        "{}",
        r.stderr
    );
    let why = eventually(Duration::from_secs(30), || {
        let ev = s.k(&[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ]);
        ev.lines()
            .find(|l| l.starts_with("FailedCreate") && l.contains("violates PodSecurity"))
            .map(str::to_string)
    });
    assert!(why.is_some(), "no FailedCreate event naming Pod Security");
    let pods = s.k(&["get", "pods", "-l", "app=rooty", "-o", "name"]);
    assert!(pods.trim().is_empty(), "{pods}");
    Ok(())
}

#[test]
fn the_audit_level_annotates_the_audit_log() -> Result<()> {
    let (_root, s) = single_server()?;
    s.k(&["create", "namespace", "audited"]);
    s.k(&[
        "label",
        "namespace",
        "audited",
        "pod-security.kubernetes.io/audit=restricted",
    ]);
    // Admitted (baseline is enforced), and no warning: only the audit log
    // hears what `restricted` would say.
    let r = create(&s, "audited", "plain", PLAIN);
    assert!(r.ok && !r.stderr.contains("Warning"), "{}", r.stderr);
    assert!(create(&s, "audited", "tidy", RESTRICTED).ok);
    let log = s.dir.join("audit/audit.log");
    // The two creates, in order (a create's URI names no pod).
    let creates = eventually(Duration::from_secs(10), || {
        let found: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["verb"] == "create"
                    && e["responseStatus"]["code"] == 201
                    && e["requestURI"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("/api/v1/namespaces/audited/pods?"))
            })
            .collect();
        (found.len() == 2).then_some(found)
    })
    .unwrap_or_else(|| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let seen: Vec<&str> = text.lines().filter(|l| l.contains("audited")).collect();
        panic!("both creates are audited: {seen:#?}")
    });
    let (plain, tidy) = (&creates[0], &creates[1]);
    assert_eq!(
        tidy["annotations"]["pod-security.kubernetes.io/enforce-policy"],
        "baseline:latest"
    );
    assert!(
        tidy["annotations"]
            .get("pod-security.kubernetes.io/audit-violations")
            .is_none()
    );
    let notes = &plain["annotations"];
    assert_eq!(
        notes["pod-security.kubernetes.io/enforce-policy"],
        "baseline:latest"
    );
    let violations = notes["pod-security.kubernetes.io/audit-violations"]
        .as_str()
        .unwrap_or_default();
    assert!(
        violations.starts_with("would violate PodSecurity \"restricted:latest\": ")
            && violations.contains("runAsNonRoot != true"),
        "{plain}"
    );
    Ok(())
}
