//! Tokens over HTTP: `TokenRequest` (`POST .../serviceaccounts/NAME/token`,
//! what `kubectl create token` and the node agents ask for) and
//! `authentication.k8s.io/v1`: `TokenReview` (is this token valid, and
//! whose is it?) and `SelfSubjectReview` (`kubectl auth whoami`).
//!
//! **A token is bound to what exists: the ServiceAccount and, if asked, a
//! Pod, Secret or Node of its namespace, by uid; deleting either ends it.**

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::auth::authn::{Authenticator, Unauthenticated};
use crate::auth::tokens::{self, Grant, ISSUER, Ref};
use crate::model::meta::strings;
use crate::model::status::{ApiError, ApiResult};
use crate::model::validate::Cause;
use crate::storage::Objects;

pub const GROUP: &str = "authentication.k8s.io";
const VERSION: &str = "v1";

/// What a path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Group,
    Resources,
    TokenReview,
    SelfReview,
    /// `TokenRequest` for ServiceAccount (namespace, name).
    Request(String, String),
    Unknown,
}

/// The route of `path`, if it is one of these.
pub fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    Some(match segs.as_slice() {
        [
            "api",
            "v1",
            "namespaces",
            ns,
            "serviceaccounts",
            name,
            "token",
        ] => Route::Request(ns.to_string(), name.to_string()),
        ["apis", GROUP] => Route::Group,
        ["apis", GROUP, VERSION] => Route::Resources,
        ["apis", GROUP, VERSION, "tokenreviews"] => Route::TokenReview,
        ["apis", GROUP, VERSION, "selfsubjectreviews"] => Route::SelfReview,
        ["apis", GROUP, ..] => Route::Unknown,
        _ => return None,
    })
}

/// The APIGroup document.
pub fn api_group() -> Value {
    super::reviews::group_doc(GROUP, VERSION)
}

fn resource_list() -> Value {
    let r = |name: &str, kind: &str| json!({"name": name, "singularName": "", "namespaced": false, "kind": kind, "verbs": ["create"]});
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [r("selfsubjectreviews", "SelfSubjectReview"), r("tokenreviews", "TokenReview")],
    })
}

/// Answer `route` for `user` with the request body `doc`.
pub async fn serve(
    s: &super::ApiState,
    user: &UserInfo,
    method: &Method,
    route: Route,
    doc: Value,
) -> Response {
    let (objects, authn) = (&s.rest.objects, &s.authn);
    let answer = match (route, method) {
        (Route::Group, &Method::GET) => Ok(api_group()),
        (Route::Resources, &Method::GET) => Ok(resource_list()),
        (Route::Unknown, _) => Err(ApiError::not_found(GROUP, "")),
        (_, m) if m != Method::POST => Err(ApiError::method_not_allowed(&format!(
            "{method} here; only POST"
        ))),
        (Route::TokenReview, _) => Ok(token_review(authn, doc)),
        (Route::SelfReview, _) => Ok(json!({
            "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": now_rfc3339()},
            "status": {"userInfo": user.to_json()},
        })),
        (Route::Request(ns, name), _) => match authn.signer() {
            Some(signer) => match node_binding(s, user, &ns, &name, &doc) {
                Ok(()) => token_request(objects, signer, &ns, &name, doc).await,
                Err(e) => Err(e),
            },
            None => Err(ApiError::internal("this server issues no tokens")),
        },
        (Route::Group | Route::Resources, _) => Err(ApiError::method_not_allowed("discovery")),
    };
    super::reviews::created(answer)
}

/// NodeRestriction for tokens: a node asks only for tokens bound to a pod
/// bound to it.
fn node_binding(
    s: &super::ApiState,
    user: &UserInfo,
    ns: &str,
    account: &str,
    doc: &Value,
) -> ApiResult<()> {
    use crate::auth::node;
    let Some(me) = node::node_of(user) else {
        return Ok(());
    };
    let bound = doc.pointer("/spec/boundObjectRef");
    let kind = bound.and_then(|b| b.get("kind")).and_then(Value::as_str);
    let pod = bound.and_then(|b| b.get("name")).and_then(Value::as_str);
    let ok = |g: &node::Graph| kind == Some("Pod") && pod.is_some_and(|p| g.on_node(me, ns, p));
    if s.nodes.read(ok) || ok(&s.nodes.fresh(&s.rest.objects)) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "serviceaccounts {account:?} is forbidden: node {me:?} may only ask for tokens bound to a pod it runs (asked: {} {ns}/{})",
        kind.unwrap_or("no object"),
        pod.unwrap_or("")
    )))
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Complete a TokenReview: whether `spec.token` authenticates, as whom.
fn token_review(authn: &Authenticator, mut doc: Value) -> Value {
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
    let mut audiences = strings(spec.get("audiences"));
    if audiences.is_empty() {
        audiences.push(ISSUER.into());
    }
    let wanted: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let status = match authn.authenticate_token(token, &wanted) {
        Ok((user, accepted)) => {
            let accepted = if accepted.is_empty() {
                audiences.clone()
            } else {
                accepted
            };
            json!({"authenticated": true, "user": user.to_json(), "audiences": accepted})
        }
        Err(Unauthenticated::NoCredential) => {
            json!({"authenticated": false, "user": {}, "error": "no token given"})
        }
        Err(Unauthenticated::Invalid(why)) => {
            json!({"authenticated": false, "user": {}, "error": format!("[invalid bearer token, {why}]")})
        }
    };
    doc["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    doc["kind"] = json!("TokenReview");
    if doc.get("metadata").is_none_or(Value::is_null) {
        doc["metadata"] = json!({});
    }
    doc["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    doc["status"] = status;
    doc
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(
        "TokenRequest",
        "",
        vec![Cause::new("FieldValueInvalid", field, message)],
    )
}

/// Issue a token for ServiceAccount `ns/name` as `doc` (a TokenRequest) asks.
async fn token_request(
    objects: &Objects,
    signer: &tokens::Signer,
    ns: &str,
    name: &str,
    mut doc: Value,
) -> ApiResult<Value> {
    let t = |kind: &str| {
        objects
            .registry
            .by_kind("v1", kind)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("no {kind} kind")))
    };
    let sa = objects.get(&t("ServiceAccount")?, Some(ns), name).await?;
    let uid_of = |v: &Value| {
        v.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    let lifetime = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => tokens::DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid("spec.expirationSeconds", "must be an integer"))?,
    };
    if lifetime < tokens::MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            "may not specify a duration less than 10 minutes",
        ));
    }
    if lifetime > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences = strings(spec.get("audiences"));
    if audiences.is_empty() {
        audiences.push(ISSUER.into());
    }
    let mut grant = Grant {
        namespace: ns.to_string(),
        service_account: Ref {
            name: name.to_string(),
            uid: uid_of(&sa),
        },
        audiences: audiences.clone(),
        lifetime_seconds: lifetime,
        pod: None,
        secret: None,
        node: None,
    };
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
        let s = |k: &str| bound.get(k).and_then(Value::as_str).unwrap_or("");
        let (kind, bname) = (s("kind"), s("name"));
        let namespace = match kind {
            "Pod" | "Secret" => Some(ns),
            "Node" => None,
            other => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {other:?}: only Pod, Secret and Node"
                )));
            }
        };
        let obj = objects
            .get(&t(kind)?, namespace, bname)
            .await
            .map_err(|e| match e.reason {
                "NotFound" => ApiError::bad_request(format!(
                    "cannot bind token to {kind} {bname:?}: it does not exist"
                )),
                _ => e,
            })?;
        let uid = uid_of(&obj);
        if !s("uid").is_empty() && s("uid") != uid {
            let mut e = ApiError::conflict(&kind.to_lowercase(), bname);
            e.message = format!(
                "the UID in the bound object reference ({}) does not match the UID in record ({uid}); the object might have been deleted and then recreated",
                s("uid")
            );
            return Err(e);
        }
        if kind == "Pod" {
            let sa_of_pod = obj
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default");
            if sa_of_pod != name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name {sa_of_pod:?}"
                )));
            }
        }
        let r = Some(Ref {
            name: bname.to_string(),
            uid: uid.clone(),
        });
        match kind {
            "Pod" => grant.pod = r,
            "Secret" => grant.secret = r,
            _ => grant.node = r,
        }
        doc["spec"]["boundObjectRef"]["uid"] = json!(uid);
    }
    let (token, exp) = signer
        .issue(&grant, tokens::now())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = jiff::Timestamp::from_second(exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    doc["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    doc["kind"] = json!("TokenRequest");
    doc["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": now_rfc3339()});
    doc["spec"]["audiences"] = json!(audiences);
    doc["spec"]["expirationSeconds"] = json!(lifetime);
    doc["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            (
                "/api/v1/namespaces/a/serviceaccounts/b/token",
                Some(Route::Request("a".into(), "b".into())),
            ),
            ("/apis/authentication.k8s.io", Some(Route::Group)),
            ("/apis/authentication.k8s.io/v1", Some(Route::Resources)),
            (
                "/apis/authentication.k8s.io/v1/tokenreviews",
                Some(Route::TokenReview),
            ),
            (
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                Some(Route::SelfReview),
            ),
            ("/apis/authentication.k8s.io/v2/x", Some(Route::Unknown)),
            ("/api/v1/namespaces/a/serviceaccounts/b", None),
            ("/apis/apps/v1", None),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), want, "{path}");
        }
    }
}
