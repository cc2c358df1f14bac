//! Discovery documents: `/api`, `/apis`, `/apis/{group}`, `/api/v1`,
//! `/apis/{group}/{version}` and `/version`.

use serde_json::{Value, json};

use crate::model::Registry;
use crate::model::kinds::VERBS;

/// The build of the running binary: git commit and build date (RFC 3339 UTC).
#[derive(Debug, Clone, Copy)]
pub struct BuildInfo {
    pub commit: &'static str,
    pub date: &'static str,
}

static BUILD: std::sync::OnceLock<BuildInfo> = std::sync::OnceLock::new();

/// Set once at start by the binary (whose build script knows them); `/version`
/// answers "unknown" without it.
pub fn set_build_info(info: BuildInfo) {
    let _ = BUILD.set(info);
}

pub fn version() -> Value {
    let build = BUILD.get().copied().unwrap_or(BuildInfo {
        commit: "unknown",
        date: "1970-01-01T00:00:00Z",
    });
    json!({
        "major": "1",
        "minor": "37",
        "gitVersion": format!("v1.37.0-skiff.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": build.commit,
        "gitTreeState": "clean",
        "buildDate": build.date,
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

pub fn api_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}],
    })
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": vs,
        "preferredVersion": vs[0],
    })
}

pub fn api_group_list(reg: &Registry) -> Value {
    let mut groups: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, &vs))
        .collect();
    // The metrics groups come last, as aggregated APIs do, so the built-in
    // `nodes` and `pods` win kubectl's resource mapping.
    groups.push(super::reviews::api_group());
    groups.push(super::tokens::api_group());
    groups.extend(super::metrics::api_groups());
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    reg.groups()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())
        .map(|(g, vs)| group_doc(g, &vs))
}

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in reg.in_group_version(group, version) {
        resources.push(json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": VERBS,
            "shortNames": t.short_names,
            "categories": t.categories,
        }));
        for sub in t.subresources {
            let (kind, verbs): (&str, &[&str]) = match *sub {
                "status" => (t.kind, &["get", "patch", "update"]),
                "scale" => ("Scale", &["get", "patch", "update"]),
                "binding" => ("Binding", &["create"]),
                "eviction" => ("Eviction", &["create"]),
                "log" => ("Pod", &["get"]),
                "exec" => ("PodExecOptions", &["create", "get"]),
                "finalize" => ("Namespace", &["update"]),
                "token" => ("TokenRequest", &["create"]),
                _ => (t.kind, &["get"]),
            };
            let mut r = json!({
                "name": format!("{}/{sub}", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if *sub == "scale" {
                r["group"] = json!("autoscaling");
                r["version"] = json!("v1");
            }
            if *sub == "token" {
                r["group"] = json!("authentication.k8s.io");
                r["version"] = json!("v1");
            }
            resources.push(r);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}
