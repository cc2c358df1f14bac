//! The ClusterRoles and ClusterRoleBindings every cluster starts with, as
//! Kubernetes bootstraps them (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`):
//! `cluster-admin` (bound to `system:masters`), the user-facing `admin`,
//! `edit` and `view` (meant for RoleBindings), and the discovery, basic-user
//! and public-info roles every authenticated user holds. Unlike Kubernetes,
//! anonymous users hold nothing (no `/version` without credentials).
//!
//! **Created when missing and never overwritten: a cluster's own changes to
//! them stay.**

use serde_json::{Value, json};

use super::AUTHENTICATED;
use super::SUPERUSERS;

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

/// The workload resources `view` reads and `edit` writes, by API group.
const WORKLOADS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "pods",
            "services",
            "endpoints",
            "persistentvolumeclaims",
            "configmaps",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "events",
            "limitranges",
            "resourcequotas",
        ],
    ),
    (
        "apps",
        &[
            "deployments",
            "deployments/scale",
            "daemonsets",
            "replicasets",
            "replicasets/scale",
            "statefulsets",
            "statefulsets/scale",
            "controllerrevisions",
        ],
    ),
    ("autoscaling", &["horizontalpodautoscalers"]),
    ("batch", &["jobs", "cronjobs"]),
    ("policy", &["poddisruptionbudgets"]),
    ("networking.k8s.io", &["ingresses", "networkpolicies"]),
    ("discovery.k8s.io", &["endpointslices"]),
];

/// What `view` may also read but not write: statuses, logs, namespaces.
const VIEW_ONLY: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "pods/log",
            "pods/status",
            "services/status",
            "persistentvolumeclaims/status",
            "replicationcontrollers/status",
            "resourcequotas/status",
            "namespaces",
            "namespaces/status",
            "bindings",
        ],
    ),
    (
        "apps",
        &[
            "deployments/status",
            "daemonsets/status",
            "replicasets/status",
            "statefulsets/status",
        ],
    ),
    ("autoscaling", &["horizontalpodautoscalers/status"]),
    ("batch", &["jobs/status", "cronjobs/status"]),
    ("policy", &["poddisruptionbudgets/status"]),
    ("networking.k8s.io", &["ingresses/status"]),
];

fn rule(verbs: &[&str], group: &str, resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": [group], "resources": resources})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn rules_of(table: &[(&str, &[&str])], verbs: &[&str]) -> Vec<Value> {
    table.iter().map(|(g, r)| rule(verbs, g, r)).collect()
}

fn view_rules() -> Vec<Value> {
    let mut r = rules_of(WORKLOADS, READ);
    r.extend(rules_of(VIEW_ONLY, READ));
    r
}

fn edit_rules() -> Vec<Value> {
    let mut r = view_rules();
    r.extend(rules_of(WORKLOADS, WRITE));
    r.push(rule(
        &[
            "get",
            "list",
            "watch",
            "create",
            "delete",
            "deletecollection",
            "patch",
            "update",
        ],
        "",
        &["secrets"],
    ));
    r.push(rule(
        &["get", "create"],
        "",
        &["pods/exec", "pods/attach", "pods/portforward", "pods/proxy"],
    ));
    r.push(rule(
        &["create"],
        "",
        &["pods/eviction", "serviceaccounts/token"],
    ));
    r.push(rule(&["impersonate"], "", &["serviceaccounts"]));
    r
}

fn admin_rules() -> Vec<Value> {
    let mut r = edit_rules();
    let all: Vec<&str> = READ.iter().chain(WRITE).copied().collect();
    r.push(rule(
        &all,
        "rbac.authorization.k8s.io",
        &["roles", "rolebindings"],
    ));
    r.push(rule(
        &["create"],
        "authorization.k8s.io",
        &["localsubjectaccessreviews"],
    ));
    r
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        },
        "rules": rules
    })
}

const AGGREGATE: &str = "rbac.authorization.k8s.io/aggregate-to-";

/// `name` made of every ClusterRole labelled `aggregate-to-<name>` (the
/// aggregation controller keeps its rules), starting with `rules`, and
/// itself aggregated into `into`, as Kubernetes has admin, edit and view.
fn aggregated(name: &str, rules: Vec<Value>, into: Option<&str>) -> Value {
    let mut role = cluster_role(name, rules);
    role["aggregationRule"] = json!({"clusterRoleSelectors": [
        {"matchLabels": {format!("{AGGREGATE}{name}"): "true"}}]});
    if let Some(into) = into {
        role["metadata"]["labels"][format!("{AGGREGATE}{into}")] = json!("true");
    }
    role
}

/// The rules `aggregate-to-<name>` brings (`system:aggregate-to-<name>`).
fn aggregate_to(name: &str, rules: Vec<Value>) -> Value {
    let mut role = cluster_role(&format!("system:aggregate-to-{name}"), rules);
    role["metadata"]["labels"][format!("{AGGREGATE}{name}")] = json!("true");
    role
}

fn bind_group(name: &str, role: &str, group: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]
    })
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            vec![
                json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                urls(&["*"], &["*"]),
            ],
        ),
        aggregated("admin", admin_rules(), None),
        aggregated("edit", edit_rules(), Some("admin")),
        aggregated("view", view_rules(), Some("edit")),
        aggregate_to("admin", admin_rules()),
        aggregate_to("edit", edit_rules()),
        aggregate_to("view", view_rules()),
        cluster_role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/openapi",
                    "/openapi/*",
                    "/version",
                    "/version/",
                    "/healthz",
                    "/livez",
                    "/readyz",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    "authentication.k8s.io",
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        bind_group("cluster-admin", "cluster-admin", SUPERUSERS),
        bind_group("system:discovery", "system:discovery", AUTHENTICATED),
        bind_group("system:basic-user", "system:basic-user", AUTHENTICATED),
        bind_group(
            "system:public-info-viewer",
            "system:public-info-viewer",
            AUTHENTICATED,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rbac::{self, Policy};
    use crate::auth::{Attributes, UserInfo};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
    use std::sync::Arc;

    fn defaults() -> Policy {
        Policy {
            cluster_roles: cluster_roles()
                .into_iter()
                .map(|v| Arc::new(serde_json::from_value::<ClusterRole>(v).expect("role")))
                .collect(),
            cluster_role_bindings: cluster_role_bindings()
                .into_iter()
                .map(|v| {
                    Arc::new(serde_json::from_value::<ClusterRoleBinding>(v).expect("binding"))
                })
                .collect(),
            ..Default::default()
        }
    }

    fn res(verb: &str, group: &str, resource: &str, sub: Option<&str>, ns: &str) -> Attributes {
        Attributes::resource(verb, group, resource, sub, Some(ns), None)
    }

    #[test]
    fn the_default_roles_grant_what_their_names_say() {
        let mut p = defaults();
        // view, edit and admin bound in namespace "team" to three users.
        for (user, role) in [("v", "view"), ("e", "edit"), ("a", "admin")] {
            p.role_bindings.push(Arc::new(
                serde_json::from_value::<RoleBinding>(json!({
                    "metadata": {"name": role, "namespace": "team"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "User", "name": user}]
                }))
                .expect("binding"),
            ));
        }
        let u = |n: &str| UserInfo::new(n, &[]);
        #[rustfmt::skip]
        let table = [
            ("v", res("list", "apps", "deployments", None, "team"), true),
            ("v", res("get", "", "pods", Some("log"), "team"), true),
            ("v", res("list", "", "secrets", None, "team"), false),
            ("v", res("create", "", "pods", None, "team"), false),
            ("e", res("create", "apps", "deployments", None, "team"), true),
            ("e", res("patch", "apps", "deployments", Some("scale"), "team"), true),
            ("e", res("get", "", "secrets", None, "team"), true),
            ("e", res("create", "", "pods", Some("exec"), "team"), true),
            ("e", res("create", "rbac.authorization.k8s.io", "rolebindings", None, "team"), false),
            ("a", res("create", "rbac.authorization.k8s.io", "rolebindings", None, "team"), true),
            ("a", res("list", "", "pods", None, "prod"), false),
            ("a", res("list", "", "nodes", None, "team"), false),
        ];
        for (user, attrs, want) in table {
            assert_eq!(
                rbac::allows(&p, &u(user), &attrs),
                want,
                "{user}: {attrs:?}"
            );
        }
        // Every authenticated user may discover and ask what it may do, and
        // nothing more.
        let nobody = u("nobody");
        let path = |p: &str| Attributes::path("get", p);
        for p_ in [
            "/api",
            "/apis/apps/v1",
            "/openapi/v3",
            "/version",
            "/healthz",
        ] {
            assert!(rbac::allows(&p, &nobody, &path(p_)), "{p_}");
        }
        assert!(!rbac::allows(&p, &nobody, &path("/metrics")));
        let review = Attributes::Resource {
            verb: "create".into(),
            group: "authorization.k8s.io".into(),
            resource: "selfsubjectaccessreviews".into(),
            subresource: None,
            namespace: None,
            name: None,
        };
        assert!(rbac::allows(&p, &nobody, &review));
        assert!(!rbac::allows(
            &p,
            &nobody,
            &res("list", "", "pods", None, "default")
        ));
        // cluster-admin through system:masters' binding, by rule (not only
        // by the superuser short-cut).
        let admins = rbac::rules_for(&p, &UserInfo::new("root", &[SUPERUSERS]), None);
        assert!(admins.iter().any(|r| r.verbs == ["*"]));
    }
}
