//! Who a request is from: its bearer token, then the identity it asks to act
//! as (`Impersonate-User`, `Impersonate-Group`, as `kubectl --as` and
//! `--as-group` send them), which needs the `impersonate` verb on that user,
//! ServiceAccount and each group.
//!
//! The tokens: the admin token (the kubeconfig's), and ServiceAccount
//! tokens (`tokens`), valid while the account and the object they are bound
//! to exist.
//!
//! **Tokens are compared in constant time. The join token is not a
//! credential of the Kubernetes API.**

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use std::sync::Arc;

use super::rbac::{self, Rules};
use super::tokens::{self, ISSUER, Signer};
use super::{AUTHENTICATED, Attributes, SUPERUSERS, UserInfo, forbidden_message};

/// The user of the admin token (the kubeconfig's credential).
pub const ADMIN_USER: &str = "skiff-admin";

/// Why a request has no user (a 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No bearer token at all.
    NoCredential,
    /// A token no authenticator accepts, and why.
    Invalid(String),
}

/// The uid a stored object has now, for the objects ServiceAccount tokens
/// name (`ServiceAccount`, `Pod`, `Secret`, `Node`): a token outlives
/// neither its account nor the object it is bound to.
pub trait Lookup: Send + Sync {
    fn uid(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<String>;
}

/// ServiceAccount tokens: the key that verifies them and where the objects
/// they name are looked up.
#[derive(Clone)]
pub struct AccountTokens {
    pub signer: Signer,
    pub lookup: Arc<dyn Lookup>,
}

/// The bearer tokens the API knows.
#[derive(Clone)]
pub struct Authenticator {
    admin_token: String,
    accounts: Option<AccountTokens>,
}

impl Authenticator {
    pub fn new(admin_token: impl Into<String>) -> Authenticator {
        Authenticator {
            admin_token: admin_token.into(),
            accounts: None,
        }
    }

    /// Also accept the ServiceAccount tokens `accounts` verifies.
    pub fn with_accounts(mut self, accounts: AccountTokens) -> Authenticator {
        self.accounts = Some(accounts);
        self
    }

    /// The ServiceAccount token signer, if tokens are issued here.
    pub fn signer(&self) -> Option<&Signer> {
        self.accounts.as_ref().map(|a| &a.signer)
    }

    /// The user behind a request to the OCI registry (`/v2/`): a bearer
    /// token, or HTTP Basic whose password is one (what `docker login`,
    /// `skopeo --creds` and `oras` send; the user name is not checked).
    pub fn authenticate_registry(&self, headers: &HeaderMap) -> Result<UserInfo, Unauthenticated> {
        match basic_password(headers) {
            Some(token) if bearer(headers).is_none() => self
                .authenticate_token(&token, &[ISSUER])
                .map(|(user, _)| user),
            _ => self.authenticate(headers),
        }
    }

    /// The user behind the request's bearer token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<UserInfo, Unauthenticated> {
        let token = bearer(headers).ok_or(Unauthenticated::NoCredential)?;
        self.authenticate_token(token, &[ISSUER])
            .map(|(user, _)| user)
    }

    /// The user behind `token` when presented to one of `audiences`, with
    /// the audiences it was accepted for (TokenReview answers them).
    pub fn authenticate_token(
        &self,
        token: &str,
        audiences: &[&str],
    ) -> Result<(UserInfo, Vec<String>), Unauthenticated> {
        if token.is_empty() {
            return Err(Unauthenticated::NoCredential);
        }
        if !self.admin_token.is_empty() && same(token, &self.admin_token) {
            return Ok((UserInfo::new(ADMIN_USER, &[SUPERUSERS]), Vec::new()));
        }
        if let Some(accounts) = &self.accounts
            && tokens::looks_like_jwt(token)
        {
            return accounts.authenticate(token, audiences, tokens::now());
        }
        Err(Unauthenticated::Invalid("unknown bearer token".into()))
    }
}

impl AccountTokens {
    /// A ServiceAccount token's user, if it verifies and everything it names
    /// still exists with the uid it had when the token was issued.
    pub fn authenticate(
        &self,
        token: &str,
        audiences: &[&str],
        now: i64,
    ) -> Result<(UserInfo, Vec<String>), Unauthenticated> {
        let invalid = |m: String| Unauthenticated::Invalid(m);
        let c = self
            .signer
            .verify(token, audiences, now)
            .map_err(|e| invalid(e.to_string()))?;
        let k = &c.kubernetes;
        if k.serviceaccount.name.is_empty() && k.node.is_some() {
            // A node's credential (from the join-token exchange).
            let mut user = UserInfo::new(&c.sub, &[super::node::NODES_GROUP]);
            user.extra.insert(
                "authentication.kubernetes.io/credential-id".into(),
                vec![format!("JTI={}", c.jti)],
            );
            return Ok((user, c.aud.clone()));
        }
        let ns = k.namespace.as_str();
        let alive = |kind: &str, namespace: Option<&str>, r: &tokens::Ref| match self
            .lookup
            .uid(kind, namespace, &r.name)
        {
            Some(uid) if r.uid.is_empty() || uid == r.uid => Ok(()),
            Some(_) => Err(invalid(format!(
                "{kind} {:?} the token was issued for was deleted and created again",
                r.name
            ))),
            None => Err(invalid(format!("{kind} {:?} does not exist", r.name))),
        };
        alive("ServiceAccount", Some(ns), &k.serviceaccount)?;
        let mut user = UserInfo::service_account(ns, &k.serviceaccount.name);
        user.uid = k.serviceaccount.uid.clone();
        let mut extra = |key: &str, v: &str| {
            user.extra.insert(
                format!("authentication.kubernetes.io/{key}"),
                vec![v.to_string()],
            );
        };
        if let Some(p) = &k.pod {
            alive("Pod", Some(ns), p)?;
            extra("pod-name", &p.name);
            extra("pod-uid", &p.uid);
        }
        if let Some(s) = &k.secret {
            alive("Secret", Some(ns), s)?;
        }
        if let Some(n) = &k.node {
            alive("Node", None, n)?;
            extra("node-name", &n.name);
            extra("node-uid", &n.uid);
        }
        extra("credential-id", &format!("JTI={}", c.jti));
        let accepted = c
            .aud
            .iter()
            .filter(|a| audiences.contains(&a.as_str()))
            .cloned()
            .collect();
        Ok((user, accepted))
    }
}

/// Objects as this server's replica has them now (no Raft round trip per
/// request: a token may outlive its pod by the replica's lag).
impl Lookup for crate::storage::Objects {
    fn uid(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<String> {
        let t = self.registry.by_kind("v1", kind)?;
        let v = self.get_local(t, namespace, name)?;
        v.pointer("/metadata/uid")?.as_str().map(str::to_string)
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case,
/// as HTTP has it: the Python client sends `bearer`).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let (scheme, token) = v.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The password of an HTTP Basic `Authorization`.
pub fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let v = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let (scheme, encoded) = v.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_string())
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
    fn registry_clients_may_send_the_token_as_a_basic_password() {
        use base64::Engine;
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let h = headers(&[("authorization", &basic("skiff:tok:en"))]);
        assert_eq!(basic_password(&h).as_deref(), Some("tok:en"));
        assert_eq!(
            basic_password(&headers(&[("authorization", "Bearer x")])),
            None
        );
        assert_eq!(
            basic_password(&headers(&[("authorization", "Basic !!")])),
            None
        );
        let a = Authenticator::new("admin-token");
        let with = headers(&[("authorization", &basic("any:admin-token"))]);
        assert_eq!(a.authenticate_registry(&with).unwrap().name, ADMIN_USER);
        // Only the registry takes Basic; elsewhere it is no credential.
        assert!(a.authenticate(&with).is_err());
        let wrong = headers(&[("authorization", &basic("any:nope"))]);
        assert!(a.authenticate_registry(&wrong).is_err());
    }

    /// Objects by (kind, name) with their uids.
    struct Stored(Vec<(&'static str, &'static str, &'static str)>);

    impl Lookup for Stored {
        fn uid(&self, kind: &str, _ns: Option<&str>, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, n, _)| *k == kind && *n == name)
                .map(|(_, _, u)| u.to_string())
        }
    }

    #[test]
    fn an_account_token_lives_as_long_as_what_it_names() {
        use crate::auth::tokens::{Grant, Ref, SigningKeyPem};
        let signer = Signer::new(&SigningKeyPem::generate().unwrap()).unwrap();
        let r = |name: &str, uid: &str| Ref {
            name: name.into(),
            uid: uid.into(),
        };
        let grant = Grant {
            namespace: "ns".into(),
            service_account: r("robot", "sa-1"),
            audiences: vec![ISSUER.into()],
            lifetime_seconds: 3600,
            pod: Some(r("web", "pod-1")),
            secret: None,
            node: None,
        };
        let now = tokens::now();
        let (token, _) = signer.issue(&grant, now).unwrap();
        let check = |stored: Vec<(&'static str, &'static str, &'static str)>| {
            AccountTokens {
                signer: signer.clone(),
                lookup: Arc::new(Stored(stored)),
            }
            .authenticate(&token, &[ISSUER], now)
        };
        let (user, auds) = check(vec![
            ("ServiceAccount", "robot", "sa-1"),
            ("Pod", "web", "pod-1"),
        ])
        .expect("valid while both exist");
        assert_eq!(user.name, "system:serviceaccount:ns:robot");
        assert!(user.in_group("system:serviceaccounts:ns"));
        assert_eq!(user.extra["authentication.kubernetes.io/pod-name"], ["web"]);
        assert_eq!(auds, [ISSUER]);
        for (stored, why) in [
            (vec![("Pod", "web", "pod-1")], "the account is gone"),
            (vec![("ServiceAccount", "robot", "sa-1")], "the pod is gone"),
            (
                vec![("ServiceAccount", "robot", "sa-2"), ("Pod", "web", "pod-1")],
                "the account was made again",
            ),
            (
                vec![("ServiceAccount", "robot", "sa-1"), ("Pod", "web", "pod-2")],
                "the pod was made again",
            ),
        ] {
            assert!(
                matches!(check(stored), Err(Unauthenticated::Invalid(_))),
                "{why}"
            );
        }
    }

    #[test]
    fn the_admin_token_and_nothing_else() {
        let a = Authenticator::new("s3cret");
        let user = a
            .authenticate(&headers(&[("authorization", "Bearer s3cret")]))
            .expect("admin");
        assert!(
            a.authenticate(&headers(&[("authorization", "bearer s3cret")]))
                .is_ok(),
            "the scheme in any case"
        );
        assert_eq!(user.name, ADMIN_USER);
        assert!(user.in_group(SUPERUSERS) && user.in_group(AUTHENTICATED));
        for h in [
            headers(&[]),
            headers(&[("authorization", "Bearer s3cre")]),
            headers(&[("authorization", "Bearer s3cret2")]),
            headers(&[("authorization", "Basic s3cret")]),
        ] {
            assert!(a.authenticate(&h).is_err(), "{h:?}");
        }
        assert_eq!(
            Authenticator::new("").authenticate(&headers(&[("authorization", "Bearer ")])),
            Err(Unauthenticated::NoCredential)
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
