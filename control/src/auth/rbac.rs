//! RBAC as Kubernetes evaluates it (`plugin/pkg/auth/authorizer/rbac`): a
//! request is allowed when some rule of a role bound to the user covers it.
//! ClusterRoleBindings apply everywhere; a RoleBinding applies in its own
//! namespace, to a Role there or to a ClusterRole's rules. There are no deny
//! rules. Aggregated ClusterRoles are evaluated by their stored rules (the
//! aggregation controller writes them).
//!
//! **Matching follows Kubernetes exactly: `*` in verbs, apiGroups and
//! resources; `*/sub` and `res/sub` for subresources; resourceNames only for
//! requests that name an object; nonResourceURLs exact or with a trailing
//! `*`. A ServiceAccount subject without a namespace means the binding's.**

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::{Attributes, SUPERUSERS, UserInfo};

/// The API group of roles and bindings.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Where the authorizer reads roles and bindings from (informer caches in
/// the server, plain lists in tests).
pub trait Rules {
    fn cluster_role_bindings(&self) -> Vec<Arc<ClusterRoleBinding>>;
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<RoleBinding>>;
    fn cluster_role(&self, name: &str) -> Option<Arc<ClusterRole>>;
    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Role>>;
}

/// Roles and bindings held in memory.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    pub cluster_roles: Vec<Arc<ClusterRole>>,
    pub cluster_role_bindings: Vec<Arc<ClusterRoleBinding>>,
    pub roles: Vec<Arc<Role>>,
    pub role_bindings: Vec<Arc<RoleBinding>>,
}

impl Rules for Policy {
    fn cluster_role_bindings(&self) -> Vec<Arc<ClusterRoleBinding>> {
        self.cluster_role_bindings.clone()
    }

    fn role_bindings(&self, namespace: &str) -> Vec<Arc<RoleBinding>> {
        self.role_bindings
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }

    fn cluster_role(&self, name: &str) -> Option<Arc<ClusterRole>> {
        self.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .cloned()
    }

    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Role>> {
        self.roles
            .iter()
            .find(|r| {
                r.metadata.namespace.as_deref() == Some(namespace)
                    && r.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }
}

/// Whether `user` may do `a`: members of `system:masters` may do anything;
/// everyone else needs a rule.
pub fn allows(src: &impl Rules, user: &UserInfo, a: &Attributes) -> bool {
    if user.in_group(SUPERUSERS) {
        return true;
    }
    let mut found = false;
    visit_rules(src, user, a.namespace(), |rule| {
        found = rule_allows(rule, a);
        !found
    });
    found
}

/// Every rule that applies to `user` in `namespace` (cluster-wide rules
/// included), for `SelfSubjectRulesReview` and `kubectl auth can-i --list`.
pub fn rules_for(src: &impl Rules, user: &UserInfo, namespace: Option<&str>) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    visit_rules(src, user, namespace, |rule| {
        out.push(rule.clone());
        true
    });
    out
}

/// Call `visit` with each rule bound to `user` (cluster bindings first, then
/// the bindings of `namespace`) until it returns false. Rules are read in
/// place (this runs on every request).
fn visit_rules(
    src: &impl Rules,
    user: &UserInfo,
    namespace: Option<&str>,
    mut visit: impl FnMut(&PolicyRule) -> bool,
) {
    for b in src.cluster_role_bindings() {
        if applies(b.subjects.as_deref(), user, "")
            && !visit_role(src, &b.role_ref, None, &mut visit)
        {
            return;
        }
    }
    let Some(ns) = namespace.filter(|ns| !ns.is_empty()) else {
        return;
    };
    for b in src.role_bindings(ns) {
        if applies(b.subjects.as_deref(), user, ns)
            && !visit_role(src, &b.role_ref, Some(ns), &mut visit)
        {
            return;
        }
    }
}

/// Visit the rules of the role a binding refers to (none if it does not
/// exist); false when `visit` asked to stop.
fn visit_role(
    src: &impl Rules,
    r: &RoleRef,
    binding_ns: Option<&str>,
    visit: &mut impl FnMut(&PolicyRule) -> bool,
) -> bool {
    if r.api_group.as_deref().is_some_and(|g| g != RBAC_GROUP) {
        return true;
    }
    let mut each = |rules: Option<&Vec<PolicyRule>>| rules.into_iter().flatten().all(&mut *visit);
    match (r.kind.as_str(), binding_ns) {
        ("ClusterRole", _) => src
            .cluster_role(&r.name)
            .is_none_or(|c| each(c.rules.as_ref())),
        ("Role", Some(ns)) => src.role(ns, &r.name).is_none_or(|c| each(c.rules.as_ref())),
        _ => true,
    }
}

/// Whether one of `subjects` is `user` (`namespace` is the binding's, or ""
/// for a ClusterRoleBinding).
fn applies(subjects: Option<&[Subject]>, user: &UserInfo, namespace: &str) -> bool {
    subjects
        .unwrap_or_default()
        .iter()
        .any(|s| match s.kind.as_str() {
            "User" => s.name == user.name,
            "Group" => user.in_group(&s.name),
            "ServiceAccount" => {
                let ns = s
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(namespace);
                !ns.is_empty()
                    && user
                        .name
                        .strip_prefix("system:serviceaccount:")
                        .and_then(|rest| rest.strip_prefix(ns))
                        .and_then(|rest| rest.strip_prefix(':'))
                        == Some(s.name.as_str())
            }
            _ => false,
        })
}

/// Whether `rule` covers the request.
pub fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    if !has(&rule.verbs, a.verb()) {
        return false;
    }
    match a {
        Attributes::Resource {
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            has(rule.api_groups.as_deref().unwrap_or_default(), group)
                && resource_matches(
                    rule.resources.as_deref().unwrap_or_default(),
                    resource,
                    subresource.as_deref(),
                )
                && name_matches(rule.resource_names.as_deref().unwrap_or_default(), name)
        }
        Attributes::NonResource { path, .. } => rule
            .non_resource_urls
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|u| url_matches(u, path)),
    }
}

/// `want` is in `list`, or the list has `*`.
fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

fn resource_matches(rule: &[String], resource: &str, sub: Option<&str>) -> bool {
    let combined = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    };
    rule.iter()
        .any(|r| r == "*" || *r == combined || sub.is_some_and(|s| r.strip_prefix("*/") == Some(s)))
}

/// A rule with resourceNames covers only requests that name one of them (so
/// never `list`, `watch` of a collection or `create`).
fn name_matches(names: &[String], name: &Option<String>) -> bool {
    names.is_empty() || name.as_ref().is_some_and(|n| names.iter().any(|v| v == n))
}

fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyRule {
            verbs: v(verbs),
            api_groups: Some(v(groups)),
            resources: Some(v(resources)),
            resource_names: (!names.is_empty()).then(|| v(names)),
            non_resource_urls: None,
        }
    }

    fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            non_resource_urls: Some(urls.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    use Attributes as A;

    #[test]
    fn rule_matching_table() {
        let pods_read = rule(&["get", "list", "watch"], &[""], &["pods"], &[]);
        let all = rule(&["*"], &["*"], &["*"], &[]);
        let any_status = rule(&["update"], &["*"], &["*/status"], &[]);
        let deploy_scale = rule(&["patch"], &["apps"], &["deployments/scale"], &[]);
        let one_cm = rule(&["get", "update"], &[""], &["configmaps"], &["settings"]);
        let health = urls(&["get"], &["/healthz", "/metrics/*"]);
        #[rustfmt::skip]
        let table = [
            ("read rule reads", &pods_read, A::resource("list", "", "pods", None, Some("a"), None), true),
            ("read rule does not write", &pods_read, A::resource("delete", "", "pods", None, Some("a"), Some("p")), false),
            ("other group", &pods_read, A::resource("get", "apps", "pods", None, Some("a"), Some("p")), false),
            ("a subresource is not the resource", &pods_read, A::resource("get", "", "pods", Some("log"), Some("a"), Some("p")), false),
            ("star covers all", &all, A::resource("deletecollection", "batch", "jobs", None, Some("a"), None), true),
            ("star covers subresources", &all, A::resource("create", "", "pods", Some("exec"), Some("a"), Some("p")), true),
            ("*/status covers any status", &any_status, A::resource("update", "apps", "deployments", Some("status"), Some("a"), Some("d")), true),
            ("*/status is not the object", &any_status, A::resource("update", "apps", "deployments", None, Some("a"), Some("d")), false),
            ("res/sub exact", &deploy_scale, A::resource("patch", "apps", "deployments", Some("scale"), Some("a"), Some("d")), true),
            ("res/sub only that sub", &deploy_scale, A::resource("patch", "apps", "deployments", Some("status"), Some("a"), Some("d")), false),
            ("resourceNames: that name", &one_cm, A::resource("get", "", "configmaps", None, Some("a"), Some("settings")), true),
            ("resourceNames: another name", &one_cm, A::resource("get", "", "configmaps", None, Some("a"), Some("other")), false),
            ("resourceNames never cover list", &one_cm, A::resource("list", "", "configmaps", None, Some("a"), None), false),
            ("non-resource exact", &health, A::path("get", "/healthz"), true),
            ("non-resource prefix", &health, A::path("get", "/metrics/cadvisor"), true),
            ("non-resource other path", &health, A::path("get", "/version"), false),
            ("non-resource verb", &health, A::path("post", "/healthz"), false),
            ("resource rule never covers a path", &all, A::path("get", "/version"), false),
            ("path rule never covers a resource", &health, A::resource("get", "", "pods", None, Some("a"), Some("p")), false),
        ];
        for (case, rule, attrs, want) in table {
            assert_eq!(rule_allows(rule, &attrs), want, "{case}");
        }
    }

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(str::to_string),
            ..Default::default()
        }
    }

    fn subject(kind: &str, name: &str, ns: Option<&str>) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(str::to_string),
            api_group: (kind != "ServiceAccount").then(|| "rbac.authorization.k8s.io".into()),
        }
    }

    fn role_ref(kind: &str, name: &str) -> RoleRef {
        RoleRef {
            api_group: Some(RBAC_GROUP.into()),
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn policy() -> Policy {
        Policy {
            cluster_roles: vec![
                Arc::new(ClusterRole {
                    metadata: meta(None, "view"),
                    rules: Some(vec![rule(
                        &["get", "list", "watch"],
                        &["", "apps"],
                        &["pods", "deployments"],
                        &[],
                    )]),
                    ..Default::default()
                }),
                Arc::new(ClusterRole {
                    metadata: meta(None, "node-reader"),
                    rules: Some(vec![rule(&["get", "list"], &[""], &["nodes"], &[])]),
                    ..Default::default()
                }),
            ],
            cluster_role_bindings: vec![Arc::new(ClusterRoleBinding {
                metadata: meta(None, "ops-nodes"),
                role_ref: role_ref("ClusterRole", "node-reader"),
                subjects: Some(vec![subject("Group", "ops", None)]),
            })],
            roles: vec![Arc::new(Role {
                metadata: meta(Some("team"), "pod-reader"),
                rules: Some(vec![rule(&["get", "list"], &[""], &["pods"], &[])]),
            })],
            role_bindings: vec![
                // A ServiceAccount without a namespace is the binding's.
                Arc::new(RoleBinding {
                    metadata: meta(Some("team"), "reader"),
                    role_ref: role_ref("Role", "pod-reader"),
                    subjects: Some(vec![subject("ServiceAccount", "reader", None)]),
                }),
                // A ClusterRole bound in one namespace applies only there.
                Arc::new(RoleBinding {
                    metadata: meta(Some("team"), "alice-view"),
                    role_ref: role_ref("ClusterRole", "view"),
                    subjects: Some(vec![subject("User", "alice", None)]),
                }),
                // A binding to a Role that does not exist grants nothing.
                Arc::new(RoleBinding {
                    metadata: meta(Some("team"), "dangling"),
                    role_ref: role_ref("Role", "missing"),
                    subjects: Some(vec![subject("User", "bob", None)]),
                }),
            ],
        }
    }

    #[test]
    fn bindings_table() {
        let p = policy();
        let sa = UserInfo::service_account("team", "reader");
        let other_sa = UserInfo::service_account("elsewhere", "reader");
        let alice = UserInfo::new("alice", &[]);
        let bob = UserInfo::new("bob", &[]);
        let op = UserInfo::new("carol", &["ops"]);
        let admin = UserInfo::new("admin", &[SUPERUSERS]);
        #[rustfmt::skip]
        let table = [
            ("sa lists pods in its namespace", &sa, A::resource("list", "", "pods", None, Some("team"), None), true),
            ("sa gets a pod", &sa, A::resource("get", "", "pods", None, Some("team"), Some("p")), true),
            ("sa may not read secrets", &sa, A::resource("list", "", "secrets", None, Some("team"), None), false),
            ("sa may not list pods elsewhere", &sa, A::resource("list", "", "pods", None, Some("other"), None), false),
            ("sa may not list pods of all namespaces", &sa, A::resource("list", "", "pods", None, None, None), false),
            ("same name, other namespace", &other_sa, A::resource("list", "", "pods", None, Some("team"), None), false),
            ("cluster role bound in a namespace", &alice, A::resource("list", "apps", "deployments", None, Some("team"), None), true),
            ("…only in that namespace", &alice, A::resource("list", "apps", "deployments", None, Some("prod"), None), false),
            ("…not cluster-wide", &alice, A::resource("list", "apps", "deployments", None, None, None), false),
            ("dangling binding", &bob, A::resource("list", "", "pods", None, Some("team"), None), false),
            ("group binding, cluster-wide", &op, A::resource("list", "", "nodes", None, None, None), true),
            ("group binding covers only its rules", &op, A::resource("delete", "", "nodes", None, None, Some("n")), false),
            ("superusers may do anything", &admin, A::resource("delete", "", "nodes", None, None, Some("n")), true),
            ("superusers reach any path", &admin, A::path("get", "/metrics"), true),
        ];
        for (case, user, attrs, want) in table {
            assert_eq!(allows(&p, user, &attrs), want, "{case}");
        }
    }

    #[test]
    fn rules_for_lists_cluster_then_namespace_rules() {
        let p = policy();
        let alice = UserInfo::new("alice", &["ops"]);
        let team = rules_for(&p, &alice, Some("team"));
        assert_eq!(team.len(), 2, "{team:?}");
        assert_eq!(
            team[0].resources.as_deref(),
            Some(&["nodes".to_string()][..])
        );
        assert!(
            team[1]
                .resources
                .as_ref()
                .unwrap()
                .contains(&"deployments".to_string())
        );
        assert_eq!(rules_for(&p, &alice, Some("prod")).len(), 1);
        assert_eq!(rules_for(&p, &alice, None).len(), 1);
    }
}
