//! The checks of the Pod Security Standards, each as Kubernetes'
//! pod-security-admission words its finding: `baseline` (host namespaces,
//! privileged, capabilities beyond the default set, hostPath, hostPort,
//! AppArmor, SELinux, procMount, seccomp `Unconfined`, unsafe sysctls) and
//! `restricted` on top (volume types, privilege escalation, non-root,
//! seccomp profile required, capabilities dropped).

use serde_json::Value;

/// One failed check: its name and what in the pod fails it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

/// Capabilities `baseline` lets a container add (the container runtime's
/// default set).
const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Volume sources `restricted` allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
    "image",
];

const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// A pod's containers of every kind, with their names.
fn containers(spec: &Value) -> Vec<(&str, &Value)> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec.get(*k).and_then(Value::as_array).into_iter().flatten())
        .map(|c| (c.get("name").and_then(Value::as_str).unwrap_or(""), c))
        .collect()
}

fn quoted(names: &[String]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    q.join(", ")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 { one.into() } else { many.into() }
}

/// "container "a"" or "containers "a", "b"".
fn who(names: &[String]) -> String {
    format!(
        "{} {}",
        plural(names.len(), "container", "containers"),
        quoted(names)
    )
}

/// Per container, the capabilities it adds that `allowed` does not allow,
/// worded as a finding.
fn added_caps(cs: &[(&str, &Value)], allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (n, c) in cs {
        let added: Vec<String> = sc(c, "capabilities/add")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|a| !allowed(a))
            .map(str::to_string)
            .collect();
        if !added.is_empty() {
            out.push(format!(
                "container {n:?} must not include {} in securityContext.capabilities.add",
                quoted(&added)
            ));
        }
    }
    out
}

/// The names of the containers `pred` picks.
fn named(cs: &[(&str, &Value)], pred: impl Fn(&Value) -> bool) -> Vec<String> {
    cs.iter()
        .filter(|(_, c)| pred(c))
        .map(|(n, _)| n.to_string())
        .collect()
}

fn sc<'a>(c: &'a Value, field: &str) -> Option<&'a Value> {
    c.pointer(&format!("/securityContext/{field}"))
        .filter(|v| !v.is_null())
}

fn push(out: &mut Vec<Violation>, check: &'static str, detail: String) {
    out.push(Violation { check, detail });
}

fn seccomp_type(v: &Value) -> Option<&str> {
    v.pointer("/securityContext/seccompProfile/type")
        .and_then(Value::as_str)
}

/// The `baseline` findings of a pod spec (and its annotations).
pub fn baseline(meta: &Value, spec: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let cs = containers(spec);
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec.get(**k) == Some(&Value::Bool(true)))
        .map(|k| format!("{k}=true"))
        .collect();
    if !host.is_empty() {
        push(&mut out, "host namespaces", host.join(", "));
    }
    let privileged: Vec<String> = named(&cs, |c| sc(c, "privileged") == Some(&Value::Bool(true)));
    if !privileged.is_empty() {
        push(
            &mut out,
            "privileged",
            format!(
                "{} must not set securityContext.privileged=true",
                who(&privileged)
            ),
        );
    }
    let caps = added_caps(&cs, |a| BASELINE_CAPS.contains(&a));
    if !caps.is_empty() {
        push(&mut out, "non-default capabilities", caps.join("; "));
    }
    let volumes = spec.get("volumes").and_then(Value::as_array);
    let host_paths: Vec<String> = volumes
        .into_iter()
        .flatten()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(|v| {
            v.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    if !host_paths.is_empty() {
        push(
            &mut out,
            "hostPath volumes",
            format!(
                "{} {}",
                plural(host_paths.len(), "volume", "volumes"),
                quoted(&host_paths)
            ),
        );
    }
    let mut ports = Vec::new();
    for (n, c) in &cs {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(hp) = p
                .get("hostPort")
                .and_then(Value::as_i64)
                .filter(|p| *p != 0)
            {
                ports.push(format!("container {n:?} uses hostPort {hp}"));
            }
        }
    }
    if !ports.is_empty() {
        push(&mut out, "hostPort", ports.join(", "));
    }
    apparmor(&mut out, meta, spec, &cs);
    selinux(&mut out, spec, &cs);
    let unmasked: Vec<String> = named(&cs, |c| {
        sc(c, "procMount")
            .and_then(Value::as_str)
            .is_some_and(|m| m != "Default")
    });
    if !unmasked.is_empty() {
        push(
            &mut out,
            "procMount",
            format!(
                "{} must not set securityContext.procMount to \"Unmasked\"",
                who(&unmasked)
            ),
        );
    }
    let mut unconfined = Vec::new();
    if seccomp_type(spec) == Some("Unconfined") {
        unconfined.push(
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_string(),
        );
    }
    let names: Vec<String> = named(&cs, |c| seccomp_type(c) == Some("Unconfined"));
    if !names.is_empty() {
        unconfined.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            who(&names)
        ));
    }
    if !unconfined.is_empty() {
        push(&mut out, "seccompProfile", unconfined.join("; "));
    }
    let sysctls: Vec<String> = spec
        .pointer("/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !skiff_common::sysctl::SAFE.contains(n))
        .map(str::to_string)
        .collect();
    if !sysctls.is_empty() {
        push(&mut out, "forbidden sysctls", sysctls.join(", "));
    }
    out
}

fn apparmor(out: &mut Vec<Violation>, meta: &Value, spec: &Value, cs: &[(&str, &Value)]) {
    let mut bad = Vec::new();
    if let Some(a) = meta.get("annotations").and_then(Value::as_object) {
        for (k, v) in a {
            if let Some(c) = k.strip_prefix("container.apparmor.security.beta.kubernetes.io/") {
                let v = v.as_str().unwrap_or("");
                if v != "runtime/default" && !v.starts_with("localhost/") {
                    bad.push(format!(
                        "container {c:?} must not set annotation {k:?} to {v:?}"
                    ));
                }
            }
        }
    }
    let unconfined = |v: &Value| {
        v.pointer("/securityContext/appArmorProfile/type")
            .and_then(Value::as_str)
            == Some("Unconfined")
    };
    if unconfined(spec) {
        bad.push("pod must not set securityContext.appArmorProfile.type to \"Unconfined\"".into());
    }
    for (n, c) in cs {
        if unconfined(c) {
            bad.push(format!(
                "container {n:?} must not set securityContext.appArmorProfile.type to \"Unconfined\""
            ));
        }
    }
    if !bad.is_empty() {
        push(out, "appArmorProfile", bad.join("; "));
    }
}

fn selinux(out: &mut Vec<Violation>, spec: &Value, cs: &[(&str, &Value)]) {
    let bad = |v: &Value| -> bool {
        let Some(o) = v
            .pointer("/securityContext/seLinuxOptions")
            .filter(|o| !o.is_null())
        else {
            return false;
        };
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
        !SELINUX_TYPES.contains(&ty)
            || o.get("user")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            || o.get("role")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
    };
    let mut found = Vec::new();
    if bad(spec) {
        found.push("pod".to_string());
    }
    for (n, c) in cs {
        if bad(c) {
            found.push(format!("container {n:?}"));
        }
    }
    if !found.is_empty() {
        push(
            out,
            "seLinuxOptions",
            format!(
                "{} set forbidden securityContext.seLinuxOptions",
                found.join(", ")
            ),
        );
    }
}

/// The further `restricted` findings of a pod spec.
pub fn restricted(spec: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let cs = containers(spec);
    let mut types = Vec::new();
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if let Some(o) = v.as_object() {
            for (k, x) in o {
                if k != "name" && !x.is_null() && !RESTRICTED_VOLUMES.contains(&k.as_str()) {
                    types.push(format!("volume {name:?} uses restricted volume type {k:?}"));
                }
            }
        }
    }
    if !types.is_empty() {
        push(&mut out, "restricted volume types", types.join(", "));
    }
    let escalating: Vec<String> = named(&cs, |c| {
        sc(c, "allowPrivilegeEscalation") != Some(&Value::Bool(false))
    });
    if !escalating.is_empty() {
        push(
            &mut out,
            "allowPrivilegeEscalation != false",
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                who(&escalating)
            ),
        );
    }
    let pod_non_root = spec
        .pointer("/securityContext/runAsNonRoot")
        .and_then(Value::as_bool);
    let mut root_containers = Vec::new();
    let mut explicit_root = Vec::new();
    for (n, c) in &cs {
        match sc(c, "runAsNonRoot").and_then(Value::as_bool) {
            Some(true) => {}
            Some(false) => explicit_root.push(n.to_string()),
            None if pod_non_root == Some(true) => {}
            None => root_containers.push(n.to_string()),
        }
    }
    if pod_non_root == Some(false) || !explicit_root.is_empty() || !root_containers.is_empty() {
        let mut parts = Vec::new();
        if pod_non_root == Some(false) {
            parts.push("pod must not set securityContext.runAsNonRoot=false".to_string());
        }
        if !explicit_root.is_empty() {
            parts.push(format!(
                "{} must not set securityContext.runAsNonRoot=false",
                who(&explicit_root)
            ));
        }
        if !root_containers.is_empty() && pod_non_root != Some(true) {
            parts.push(format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                who(&root_containers)
            ));
        }
        push(&mut out, "runAsNonRoot != true", parts.join("; "));
    }
    let mut zero = Vec::new();
    if spec
        .pointer("/securityContext/runAsUser")
        .and_then(Value::as_i64)
        == Some(0)
    {
        zero.push("pod must not set runAsUser=0".to_string());
    }
    let zero_containers: Vec<String> = named(&cs, |c| {
        sc(c, "runAsUser").and_then(Value::as_i64) == Some(0)
    });
    if !zero_containers.is_empty() {
        zero.push(format!(
            "{} must not set runAsUser=0",
            who(&zero_containers)
        ));
    }
    if !zero.is_empty() {
        push(&mut out, "runAsUser=0", zero.join("; "));
    }
    let profile_ok = |v: &Value| {
        matches!(
            v.pointer("/securityContext/seccompProfile/type")
                .and_then(Value::as_str),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let pod_profile = profile_ok(spec);
    let unset: Vec<String> = named(&cs, |c| {
        let t = c
            .pointer("/securityContext/seccompProfile/type")
            .and_then(Value::as_str);
        match t {
            None => !pod_profile,
            Some(_) => !profile_ok(c),
        }
    });
    if !unset.is_empty() {
        push(
            &mut out,
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                who(&unset)
            ),
        );
    }
    let mut caps = Vec::new();
    let no_drop_all: Vec<String> = named(&cs, |c| {
        !sc(c, "capabilities/drop")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")))
    });
    if !no_drop_all.is_empty() {
        caps.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            who(&no_drop_all)
        ));
    }
    caps.extend(added_caps(&cs, |a| a == "NET_BIND_SERVICE"));
    if !caps.is_empty() {
        push(&mut out, "unrestricted capabilities", caps.join("; "));
    }
    out
}
