//! `authorization.k8s.io/v1`: the access reviews `kubectl auth can-i` asks.
//! SelfSubjectAccessReview (may I?), SelfSubjectRulesReview (what may I, in a
//! namespace: `can-i --list`), SubjectAccessReview and
//! LocalSubjectAccessReview (may this user?). They are answered, never
//! stored; asking needs `create` on them like any other write.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::rbac::{self, Rules};
use crate::auth::{Attributes, UserInfo};
use crate::model::status::{ApiError, ApiResult};

pub const GROUP: &str = "authorization.k8s.io";
const VERSION: &str = "v1";

/// Which document or review a path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Group,
    Resources,
    SelfAccess,
    SelfRules,
    Access,
    LocalAccess(String),
    Unknown,
}

/// The route of `path`, if it is in the group.
pub fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.as_slice() {
        ["apis", GROUP, rest @ ..] => rest,
        _ => return None,
    };
    Some(match rest {
        [] => Route::Group,
        [VERSION] => Route::Resources,
        [VERSION, "selfsubjectaccessreviews"] => Route::SelfAccess,
        [VERSION, "selfsubjectrulesreviews"] => Route::SelfRules,
        [VERSION, "subjectaccessreviews"] => Route::Access,
        [VERSION, "namespaces", ns, "localsubjectaccessreviews"] => {
            Route::LocalAccess(ns.to_string())
        }
        _ => Route::Unknown,
    })
}

/// The APIGroup document.
pub fn api_group() -> Value {
    group_doc(GROUP, VERSION)
}

/// The APIGroup document of a group served in one version.
pub fn group_doc(group: &str, version: &str) -> Value {
    let v = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [v.clone()], "preferredVersion": v})
}

fn resource_list() -> Value {
    let r = |name: &str, kind: &str, namespaced: bool| json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["create"]});
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            r("localsubjectaccessreviews", "LocalSubjectAccessReview", true),
            r("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
            r("selfsubjectrulesreviews", "SelfSubjectRulesReview", false),
            r("subjectaccessreviews", "SubjectAccessReview", false),
        ],
    })
}

/// Answer `route` for `user` (the authenticated, possibly impersonated
/// requester) with the review `doc` (decoded from JSON, YAML or protobuf).
pub fn serve(
    policy: &impl Rules,
    user: &UserInfo,
    method: &Method,
    route: Route,
    doc: Value,
) -> Response {
    let answer = match (route, method) {
        (Route::Group, &Method::GET) => Ok(api_group()),
        (Route::Resources, &Method::GET) => Ok(resource_list()),
        (Route::Unknown, _) => Err(ApiError::not_found("authorization.k8s.io", "")),
        (Route::Group | Route::Resources, _) => Err(ApiError::method_not_allowed(&format!(
            "{method} on discovery"
        ))),
        (_, m) if m != Method::POST => Err(ApiError::method_not_allowed(&format!(
            "{method} on a review"
        ))),
        (route, _) => review(policy, user, route, doc),
    };
    created(answer)
}

/// A review's answer (201 with the completed review), or its error.
pub fn created(answer: ApiResult<Value>) -> Response {
    match answer {
        Ok(v) => (
            StatusCode::CREATED,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn review(policy: &impl Rules, user: &UserInfo, route: Route, mut doc: Value) -> ApiResult<Value> {
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    let kind = match &route {
        Route::SelfAccess => "SelfSubjectAccessReview",
        Route::SelfRules => "SelfSubjectRulesReview",
        Route::Access => "SubjectAccessReview",
        _ => "LocalSubjectAccessReview",
    };
    let status = match &route {
        Route::SelfRules => {
            let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
            rules_status(policy, user, ns)
        }
        Route::SelfAccess => access_status(policy, user, &attributes(&spec, kind)?),
        Route::Access | Route::LocalAccess(_) => {
            let subject = subject(&spec, kind)?;
            let a = attributes(&spec, kind)?;
            if let Route::LocalAccess(ns) = &route
                && a.namespace() != Some(ns.as_str())
            {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must be {ns:?}, the namespace of the review"
                )));
            }
            access_status(policy, &subject, &a)
        }
        _ => unreachable!("discovery is answered before"),
    };
    doc["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    doc["kind"] = json!(kind);
    if doc.get("metadata").is_none_or(Value::is_null) {
        doc["metadata"] = json!({});
    }
    doc["status"] = status;
    Ok(doc)
}

/// The request a review asks about.
fn attributes(spec: &Value, kind: &str) -> ApiResult<Attributes> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let opt = |v: &Value, k: &str| Some(s(v, k)).filter(|x| !x.is_empty());
    if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        return Ok(Attributes::Resource {
            verb: s(r, "verb"),
            group: s(r, "group"),
            resource: s(r, "resource"),
            subresource: opt(r, "subresource"),
            namespace: opt(r, "namespace"),
            name: opt(r, "name"),
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        return Ok(Attributes::NonResource {
            verb: s(n, "verb"),
            path: s(n, "path"),
        });
    }
    Err(ApiError::invalid(
        kind,
        "",
        vec![crate::model::validate::Cause::new(
            "FieldValueRequired",
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )],
    ))
}

/// The user a SubjectAccessReview asks about.
fn subject(spec: &Value, kind: &str) -> ApiResult<UserInfo> {
    let user = spec.get("user").and_then(Value::as_str).unwrap_or("");
    let groups: Vec<&str> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if user.is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(
            kind,
            "",
            vec![crate::model::validate::Cause::new(
                "FieldValueRequired",
                "spec.user",
                "at least one of user or group must be specified",
            )],
        ));
    }
    let mut u = UserInfo::new(user, &[]);
    // As asked: only the groups given (not system:authenticated).
    u.groups = groups.iter().map(|g| g.to_string()).collect();
    Ok(u)
}

fn access_status(policy: &impl Rules, user: &UserInfo, a: &Attributes) -> Value {
    if rbac::allows(policy, user, a) {
        json!({"allowed": true, "reason": "RBAC: allowed by a role bound to the user"})
    } else {
        json!({"allowed": false})
    }
}

/// The rules `user` holds in `ns`, as `kubectl auth can-i --list` prints
/// them.
fn rules_status(policy: &impl Rules, user: &UserInfo, ns: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    let rules = rbac::rules_for(policy, user, Some(ns).filter(|n| !n.is_empty()));
    for r in rules {
        if r.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
        if r.resources.as_ref().is_some_and(|u| !u.is_empty()) {
            let mut rule = json!({"verbs": r.verbs, "apiGroups": r.api_groups.unwrap_or_default(), "resources": r.resources});
            if let Some(names) = r.resource_names.filter(|n| !n.is_empty()) {
                rule["resourceNames"] = json!(names);
            }
            resource_rules.push(rule);
        }
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/apis/authorization.k8s.io"), Some(Route::Group));
        assert_eq!(
            route("/apis/authorization.k8s.io/v1"),
            Some(Route::Resources)
        );
        assert_eq!(
            route("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
            Some(Route::SelfAccess)
        );
        assert_eq!(
            route("/apis/authorization.k8s.io/v1/namespaces/team/localsubjectaccessreviews"),
            Some(Route::LocalAccess("team".into()))
        );
        assert_eq!(route("/apis/apps/v1"), None);
    }
}
