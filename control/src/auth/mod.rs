//! Who is asking and what they may do: the user a request authenticated as
//! ([`UserInfo`]), what the request does in RBAC terms ([`Attributes`]), and
//! the RBAC authorizer over Roles, ClusterRoles and their bindings
//! ([`rbac`]), as Kubernetes evaluates them.
//!
//! **The evaluation is pure: it reads roles and bindings through the
//! [`rbac::Rules`] trait and never touches the store, so every rule of
//! Kubernetes' RBAC semantics is a table test.**

pub mod authn;
pub mod cache;
pub mod defaults;
pub mod node;
pub mod rbac;
pub mod tokens;

use axum::http::Method;

/// The group whose members may do everything (Kubernetes' `system:masters`).
pub const SUPERUSERS: &str = "system:masters";
/// Every authenticated user is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";

/// An authenticated user: a name, and the groups it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// What the authenticator adds (a ServiceAccount token's pod, its id).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with these groups (and `system:authenticated`).
    /// A user with owned group names (a client certificate's O values).
    pub fn with_groups(name: &str, groups: &[String]) -> UserInfo {
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        UserInfo::new(name, &groups)
    }

    pub fn new(name: impl Into<String>, groups: &[&str]) -> UserInfo {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups,
            extra: Default::default(),
        }
    }

    /// The user of ServiceAccount `ns/name`: `system:serviceaccount:NS:NAME`,
    /// in `system:serviceaccounts` and `system:serviceaccounts:NS`.
    pub fn service_account(ns: &str, name: &str) -> UserInfo {
        UserInfo::new(
            service_account_user(ns, name),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{ns}"),
            ],
        )
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// As `authentication.k8s.io` UserInfo (reviews, the audit log).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = serde_json::json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }
}

/// The user name of ServiceAccount `ns/name`.
pub fn service_account_user(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// What a request asks to do, as RBAC rules name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    /// On a resource (`/api/...`, `/apis/...` with a resource).
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: Option<String>,
        namespace: Option<String>,
        name: Option<String>,
    },
    /// On any other path (`/version`, `/metrics`, discovery).
    NonResource { verb: String, path: String },
}

impl Attributes {
    /// A resource request (tests' shorthand).
    #[cfg(test)]
    pub(crate) fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        sub: Option<&str>,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.map(str::to_string),
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
        }
    }

    /// A non-resource request (tests' shorthand).
    #[cfg(test)]
    pub(crate) fn path(verb: &str, path: &str) -> Attributes {
        Attributes::NonResource {
            verb: verb.into(),
            path: path.into(),
        }
    }

    pub fn verb(&self) -> &str {
        match self {
            Attributes::Resource { verb, .. } | Attributes::NonResource { verb, .. } => verb,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        match self {
            Attributes::Resource { namespace, .. } => namespace.as_deref(),
            Attributes::NonResource { .. } => None,
        }
    }
}

impl Attributes {
    /// What a request does, from its method, path and query alone, as
    /// Kubernetes' `RequestInfoFactory` reads them (no knowledge of which
    /// resources exist): `/api/v1/...` and `/apis/GROUP/VERSION/...` with a
    /// resource are resource requests, everything else (discovery included)
    /// is a path.
    pub fn of_request(method: &Method, path: &str, query: Option<&str>) -> Attributes {
        let non_resource = || Attributes::NonResource {
            verb: non_resource_verb(method),
            path: path.to_string(),
        };
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segs.as_slice() {
            ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
            ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
            _ => return non_resource(),
        };
        if rest.iter().any(|s| s.is_empty()) {
            return non_resource();
        }
        let mut parts = rest;
        let mut namespace = None;
        if parts[0] == "namespaces" && parts.len() >= 2 {
            namespace = Some(parts[1].to_string());
            // `namespaces/NAME/status` and `/finalize` are the namespace's
            // own subresources; anything else is a resource inside it.
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts = &parts[2..];
            }
        }
        let name = parts.get(1).map(|s| s.to_string());
        // `pods/NAME/proxy/any/path`: the subresource is `proxy`, the rest is
        // the proxied path.
        let subresource = parts.get(2).map(|s| s.to_string());
        let watch = query.is_some_and(|q| {
            q.split('&')
                .any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True"))
        });
        Attributes::Resource {
            verb: resource_verb(method, name.is_some(), watch),
            group: group.to_string(),
            resource: parts[0].to_string(),
            subresource,
            namespace,
            name,
        }
    }
}

/// The RBAC verb of a resource request: `get`/`list`/`watch` for reads (by
/// whether a name is given and whether it watches), `create`, `update`,
/// `patch`, `delete`/`deletecollection`; other methods are named as Kubernetes
/// names them for non-resource paths (lower-case).
pub fn resource_verb(method: &Method, named: bool, watch: bool) -> String {
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return method.as_str().to_ascii_lowercase(),
    }
    .into()
}

/// The RBAC verb of a non-resource request: the method, lower-case.
pub fn non_resource_verb(method: &Method) -> String {
    method.as_str().to_ascii_lowercase()
}

/// The text of a 403, as Kubernetes words it: `pods is forbidden: User "u"
/// cannot list resource "pods" in API group "" in the namespace "default"`.
pub fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    match a {
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let full = match subresource {
                Some(s) => format!("{resource}/{s}"),
                None => resource.clone(),
            };
            let what = match name {
                Some(n) => format!("{full} \"{n}\""),
                None => full.clone(),
            };
            let scope = match namespace {
                Some(ns) => format!(" in the namespace \"{ns}\""),
                None => " at the cluster scope".into(),
            };
            format!(
                "{what} is forbidden: User \"{}\" cannot {verb} resource \"{full}\" in API group \"{group}\"{scope}",
                user.name
            )
        }
        Attributes::NonResource { verb, path } => format!(
            "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
            user.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_table() {
        let table = [
            (Method::GET, true, false, "get"),
            (Method::GET, false, false, "list"),
            (Method::GET, false, true, "watch"),
            (Method::GET, true, true, "watch"),
            (Method::POST, false, false, "create"),
            (Method::PUT, true, false, "update"),
            (Method::PATCH, true, false, "patch"),
            (Method::DELETE, true, false, "delete"),
            (Method::DELETE, false, false, "deletecollection"),
        ];
        for (m, named, watch, want) in table {
            assert_eq!(resource_verb(&m, named, watch), want, "{m} {named} {watch}");
        }
        assert_eq!(non_resource_verb(&Method::GET), "get");
    }

    #[test]
    fn attributes_of_requests_table() {
        let r = Attributes::resource;
        let p = Attributes::path;
        #[rustfmt::skip]
        let table = [
            (Method::GET, "/api/v1/namespaces/team/pods", None, r("list", "", "pods", None, Some("team"), None)),
            (Method::GET, "/api/v1/namespaces/team/pods", Some("watch=true&rv=1"), r("watch", "", "pods", None, Some("team"), None)),
            (Method::GET, "/api/v1/pods", None, r("list", "", "pods", None, None, None)),
            (Method::GET, "/api/v1/namespaces/team/pods/web/log", None, r("get", "", "pods", Some("log"), Some("team"), Some("web"))),
            (Method::GET, "/api/v1/namespaces/team/pods/web/proxy/healthz/x", None, r("get", "", "pods", Some("proxy"), Some("team"), Some("web"))),
            (Method::POST, "/api/v1/namespaces/team/pods/web/exec", None, r("create", "", "pods", Some("exec"), Some("team"), Some("web"))),
            (Method::PATCH, "/apis/apps/v1/namespaces/team/deployments/d/scale", None, r("patch", "apps", "deployments", Some("scale"), Some("team"), Some("d"))),
            (Method::DELETE, "/apis/batch/v1/namespaces/team/jobs", None, r("deletecollection", "batch", "jobs", None, Some("team"), None)),
            (Method::GET, "/api/v1/namespaces/team", None, r("get", "", "namespaces", None, Some("team"), Some("team"))),
            (Method::PUT, "/api/v1/namespaces/team/finalize", None, r("update", "", "namespaces", Some("finalize"), Some("team"), Some("team"))),
            (Method::GET, "/api/v1/namespaces", None, r("list", "", "namespaces", None, None, None)),
            (Method::GET, "/api/v1/nodes/n1/status", None, r("get", "", "nodes", Some("status"), None, Some("n1"))),
            (Method::POST, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", None, r("create", "authorization.k8s.io", "selfsubjectaccessreviews", None, None, None)),
            (Method::GET, "/api", None, p("get", "/api")),
            (Method::GET, "/api/v1", None, p("get", "/api/v1")),
            (Method::GET, "/apis/apps/v1", None, p("get", "/apis/apps/v1")),
            (Method::GET, "/version", None, p("get", "/version")),
            (Method::POST, "/v2/img/blobs/uploads/", None, p("post", "/v2/img/blobs/uploads/")),
        ];
        for (m, path, q, want) in table {
            assert_eq!(Attributes::of_request(&m, path, q), want, "{m} {path}");
        }
    }

    #[test]
    fn forbidden_messages_read_as_kubernetes_writes_them() {
        let sa = UserInfo::service_account("team", "reader");
        assert_eq!(sa.name, "system:serviceaccount:team:reader");
        assert!(sa.in_group("system:serviceaccounts:team") && sa.in_group(AUTHENTICATED));
        let a = Attributes::Resource {
            verb: "list".into(),
            group: String::new(),
            resource: "secrets".into(),
            subresource: None,
            namespace: Some("team".into()),
            name: None,
        };
        assert_eq!(
            forbidden_message(&sa, &a),
            "secrets is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""
        );
        let a = Attributes::Resource {
            verb: "get".into(),
            group: String::new(),
            resource: "nodes".into(),
            subresource: Some("status".into()),
            namespace: None,
            name: Some("n1".into()),
        };
        assert_eq!(
            forbidden_message(&sa, &a),
            "nodes/status \"n1\" is forbidden: User \"system:serviceaccount:team:reader\" cannot get resource \"nodes/status\" in API group \"\" at the cluster scope"
        );
    }
}
