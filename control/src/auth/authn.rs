//! Who a request is from: its bearer token, then the identity it asks to act
//! as (`Impersonate-User`, `Impersonate-Group`, as `kubectl --as` and
//! `--as-group` send them), which needs the `impersonate` verb on that user,
//! ServiceAccount and each group.
//!
//! **Tokens are compared in constant time. The join token is not a
//! credential of the Kubernetes API.**

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use super::rbac::{self, Rules};
use super::{AUTHENTICATED, Attributes, SUPERUSERS, UserInfo, forbidden_message};

/// The user of the admin token (the kubeconfig's credential).
pub const ADMIN_USER: &str = "skiff-admin";

/// The bearer tokens the API knows.
#[derive(Clone)]
pub struct Authenticator {
    admin_token: String,
}

impl Authenticator {
    pub fn new(admin_token: impl Into<String>) -> Authenticator {
        Authenticator {
            admin_token: admin_token.into(),
        }
    }

    /// The user behind the request's bearer token; `None` when it has none
    /// or an unknown one (a 401).
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let token = bearer(headers)?;
        if !self.admin_token.is_empty() && same(token, &self.admin_token) {
            return Some(UserInfo::new(ADMIN_USER, &[SUPERUSERS]));
        }
        None
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// `a == b` without leaking where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Why an impersonation was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Groups (or a uid) without a user.
    BadRequest(String),
    /// The requester may not impersonate this user or group.
    Forbidden(String),
}

/// The identity `requester` acts as: itself, or the one the impersonation
/// headers name if it may impersonate each part of it.
pub fn effective_user(
    src: &impl Rules,
    requester: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, Refused> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let user = values("impersonate-user").into_iter().next();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let Some(user) = user else {
        if !groups.is_empty() || uid.is_some() {
            return Err(Refused::BadRequest(
                "impersonating groups or a uid needs Impersonate-User".into(),
            ));
        }
        return Ok(requester);
    };
    let may = |a: Attributes| -> Result<(), Refused> {
        if rbac::allows(src, &requester, &a) {
            Ok(())
        } else {
            Err(Refused::Forbidden(forbidden_message(&requester, &a)))
        }
    };
    let target = |resource: &str, namespace: Option<&str>, name: &str| Attributes::Resource {
        verb: "impersonate".into(),
        group: String::new(),
        resource: resource.into(),
        subresource: None,
        namespace: namespace.map(str::to_string),
        name: Some(name.into()),
    };
    let service_account = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    let mut out = match service_account {
        Some((ns, name)) => {
            may(target("serviceaccounts", Some(ns), name))?;
            if groups.is_empty() {
                UserInfo::service_account(ns, name)
            } else {
                UserInfo::new(&user, &[])
            }
        }
        None => {
            may(target("users", None, &user))?;
            UserInfo::new(&user, &[])
        }
    };
    for g in &groups {
        may(target("groups", None, g))?;
        if !out.in_group(g) {
            out.groups.push(g.clone());
        }
    }
    if let Some(uid) = uid {
        may(target("uids", None, &uid))?;
        out.uid = uid;
    }
    if user == "system:anonymous" {
        out.groups.retain(|g| g != AUTHENTICATED);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use k8s_openapi::api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Arc;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_admin_token_and_nothing_else() {
        let a = Authenticator::new("s3cret");
        let user = a
            .authenticate(&headers(&[("authorization", "Bearer s3cret")]))
            .expect("admin");
        assert_eq!(user.name, ADMIN_USER);
        assert!(user.in_group(SUPERUSERS) && user.in_group(AUTHENTICATED));
        for h in [
            headers(&[]),
            headers(&[("authorization", "Bearer s3cre")]),
            headers(&[("authorization", "Bearer s3cret2")]),
            headers(&[("authorization", "Basic s3cret")]),
        ] {
            assert_eq!(a.authenticate(&h), None, "{h:?}");
        }
        assert_eq!(
            Authenticator::new("").authenticate(&headers(&[("authorization", "Bearer ")])),
            None
        );
    }

    /// `carol` may impersonate user `alice` and group `devs`, nothing else.
    fn policy() -> rbac::Policy {
        let rule = |resources: &[&str], names: &[&str]| PolicyRule {
            verbs: vec!["impersonate".into()],
            api_groups: Some(vec![String::new()]),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            resource_names: Some(names.iter().map(|s| s.to_string()).collect()),
            non_resource_urls: None,
        };
        rbac::Policy {
            cluster_roles: vec![Arc::new(ClusterRole {
                metadata: ObjectMeta {
                    name: Some("as-alice".into()),
                    ..Default::default()
                },
                rules: Some(vec![
                    rule(&["users"], &["alice"]),
                    rule(&["groups"], &["devs"]),
                ]),
                ..Default::default()
            })],
            cluster_role_bindings: vec![Arc::new(ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some("carol-as-alice".into()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some(rbac::RBAC_GROUP.into()),
                    kind: "ClusterRole".into(),
                    name: "as-alice".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "User".into(),
                    name: "carol".into(),
                    ..Default::default()
                }]),
            })],
            ..Default::default()
        }
    }

    #[test]
    fn impersonation_table() {
        let p = policy();
        let admin = UserInfo::new(ADMIN_USER, &[SUPERUSERS]);
        let carol = UserInfo::new("carol", &[]);
        // Nothing asked: the requester itself.
        assert_eq!(
            effective_user(&p, carol.clone(), &headers(&[])),
            Ok(carol.clone())
        );
        // The admin may be anyone; a ServiceAccount gets its groups.
        let sa = effective_user(
            &p,
            admin.clone(),
            &headers(&[("impersonate-user", "system:serviceaccount:team:reader")]),
        )
        .expect("admin as sa");
        assert_eq!(sa, UserInfo::service_account("team", "reader"));
        let with_groups = effective_user(
            &p,
            admin,
            &headers(&[
                ("impersonate-user", "dave"),
                ("impersonate-group", "ops"),
                ("impersonate-group", "devs"),
            ]),
        )
        .expect("admin as dave");
        assert_eq!(with_groups.name, "dave");
        assert!(with_groups.in_group("ops") && with_groups.in_group("devs"));
        assert!(!with_groups.in_group(SUPERUSERS));
        // carol: alice and devs yes; bob or admins no.
        let alice = effective_user(
            &p,
            carol.clone(),
            &headers(&[("impersonate-user", "alice"), ("impersonate-group", "devs")]),
        )
        .expect("carol as alice");
        assert_eq!(alice.name, "alice");
        for (h, what) in [
            (headers(&[("impersonate-user", "bob")]), "users \"bob\""),
            (
                headers(&[
                    ("impersonate-user", "alice"),
                    ("impersonate-group", SUPERUSERS),
                ]),
                "groups \"system:masters\"",
            ),
            (
                headers(&[("impersonate-user", "system:serviceaccount:team:reader")]),
                "serviceaccounts \"reader\"",
            ),
        ] {
            match effective_user(&p, carol.clone(), &h) {
                Err(Refused::Forbidden(m)) => {
                    assert!(m.starts_with(what), "{m}");
                    assert!(m.contains("User \"carol\" cannot impersonate"), "{m}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        assert!(matches!(
            effective_user(&p, carol, &headers(&[("impersonate-group", "devs")])),
            Err(Refused::BadRequest(_))
        ));
    }
}
