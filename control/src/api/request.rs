//! Parsing a REST path into what it addresses: a group/version, a resource type,
//! a namespace, an object name and a subresource.

use std::collections::HashMap;

use crate::model::{Registry, ResourceType};

use crate::model::status::{ApiError, ApiResult};

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/api` or `/apis`.
    Root { legacy: bool },
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`: the resource list.
    GroupVersion { group: String, version: String },
    /// A collection or an object (with an optional subresource).
    Resource(ResourceRef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl ResourceRef {
    pub fn resource_type<'a>(&self, reg: &'a Registry) -> ApiResult<&'a ResourceType> {
        reg.lookup(&self.group, &self.version, &self.plural)
            .ok_or_else(|| {
                ApiError::no_route(&format!(
                    "{}/{}, Resource={}",
                    if self.group.is_empty() {
                        "core"
                    } else {
                        &self.group
                    },
                    self.version,
                    self.plural
                ))
            })
    }
}

/// Split `/api/...` or `/apis/...` into a target.
pub fn parse(path: &str, reg: &Registry) -> ApiResult<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return Ok(Target::Root { legacy: true }),
        ["apis"] => return Ok(Target::Root { legacy: false }),
        ["apis", g] => return Ok(Target::Group((*g).to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    if rest.is_empty() {
        return Ok(Target::GroupVersion {
            group: group.into(),
            version: version.into(),
        });
    }
    let mk = |plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Target::Resource(ResourceRef {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
        })
    };
    let namespaced_plural = |p: &str| reg.lookup(group, version, p).is_some_and(|t| t.namespaced);
    let t = match rest {
        [plural] => mk(plural, None, None, None),
        ["namespaces", ns, plural] if namespaced_plural(plural) => mk(plural, Some(ns), None, None),
        ["namespaces", ns, plural, name] => mk(plural, Some(ns), Some(name), None),
        ["namespaces", ns, plural, name, sub] => mk(plural, Some(ns), Some(name), Some(sub)),
        [plural, name] => mk(plural, None, Some(name), None),
        [plural, name, sub] => mk(plural, None, Some(name), Some(sub)),
        _ => return Err(ApiError::no_route(path)),
    };
    Ok(t)
}

/// Query parameters as a map (last value wins).
pub fn query_map(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k), decode(v));
    }
    out
}

/// Every value of a repeated query parameter (`command=a&command=b`), in order.
pub fn query_all(q: Option<&str>, key: &str) -> Vec<String> {
    q.unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == key).then(|| decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_table() {
        let reg = Registry::builtin();
        let r = |g: &str, p: &str, ns: Option<&str>, n: Option<&str>, s: Option<&str>| {
            Target::Resource(ResourceRef {
                group: g.into(),
                version: "v1".into(),
                plural: p.into(),
                namespace: ns.map(Into::into),
                name: n.map(Into::into),
                sub: s.map(Into::into),
            })
        };
        let cases = vec![
            ("/api", Target::Root { legacy: true }),
            ("/apis/apps", Target::Group("apps".into())),
            (
                "/api/v1",
                Target::GroupVersion {
                    group: "".into(),
                    version: "v1".into(),
                },
            ),
            ("/api/v1/pods", r("", "pods", None, None, None)),
            ("/api/v1/namespaces", r("", "namespaces", None, None, None)),
            (
                "/api/v1/namespaces/x",
                r("", "namespaces", None, Some("x"), None),
            ),
            (
                "/api/v1/namespaces/x/status",
                r("", "namespaces", None, Some("x"), Some("status")),
            ),
            (
                "/api/v1/namespaces/d/pods",
                r("", "pods", Some("d"), None, None),
            ),
            (
                "/api/v1/namespaces/d/pods/p",
                r("", "pods", Some("d"), Some("p"), None),
            ),
            (
                "/api/v1/namespaces/d/pods/p/log",
                r("", "pods", Some("d"), Some("p"), Some("log")),
            ),
            (
                "/apis/apps/v1/namespaces/d/deployments/x/scale",
                r("apps", "deployments", Some("d"), Some("x"), Some("scale")),
            ),
            ("/api/v1/nodes/n1", r("", "nodes", None, Some("n1"), None)),
        ];
        for (path, want) in cases {
            assert_eq!(parse(path, &reg).unwrap(), want, "{path}");
        }
        assert_eq!(
            query_map(Some("a=b%2Fc&labelSelector=x+in+(a,b)"))["a"],
            "b/c"
        );
    }
}
