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
pub mod rbac;

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
}

impl UserInfo {
    /// A user with these groups (and `system:authenticated`).
    pub fn new(name: impl Into<String>, groups: &[&str]) -> UserInfo {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups,
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
