//! The routing table of the Ingresses the router serves, and how a request
//! finds its backend (pure).
//!
//! Hosts: an exact host first, then a wildcard (`*.example.com` matches one
//! label: `a.example.com`, not `example.com` nor `a.b.example.com`), then
//! rules without a host; a tier whose paths do not match falls through to
//! the next (as Traefik, k3s's router, does), then to the default backend.
//! Paths: `Exact` is the whole path; `Prefix` (and `ImplementationSpecific`)
//! matches element by element (`/foo` matches `/foo`, `/foo/` and
//! `/foo/bar`, not `/foobar`); the longest path wins, `Exact` before
//! `Prefix` at equal length, then the oldest Ingress.

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

/// A Service port an Ingress sends to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    pub port: PortRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    // Ordered: Exact wins a tie.
    Exact,
    Prefix,
}

#[derive(Debug, Clone)]
struct PathRule {
    kind: Kind,
    /// Without a trailing `/` for prefixes (`/` itself is "").
    path: String,
    backend: Option<Backend>,
    /// The Ingress's age rank (smaller: older).
    age: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(String),
    /// `*.example.com` as `.example.com`.
    Wildcard(String),
    Any,
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    rules: Vec<(Host, PathRule)>,
    default: Option<Backend>,
    /// `namespace/name` of the Ingresses in the table, oldest first.
    pub ingresses: Vec<String>,
}

fn backend(ns: &str, b: &IngressBackend) -> Option<Backend> {
    let svc = b.service.as_ref()?;
    let port = svc.port.as_ref()?;
    let port = match (port.number, &port.name) {
        (Some(n), _) => PortRef::Number(u16::try_from(n).ok()?),
        (None, Some(name)) if !name.is_empty() => PortRef::Name(name.clone()),
        _ => return None,
    };
    Some(Backend {
        namespace: ns.to_string(),
        service: svc.name.clone(),
        port,
    })
}

impl Table {
    /// The table of `ingresses` (those the router serves).
    pub fn build(ingresses: &[Ingress]) -> Table {
        let mut sorted: Vec<&Ingress> = ingresses.iter().collect();
        sorted.sort_by_key(|i| {
            (
                i.metadata.creation_timestamp.clone().map(|t| t.0),
                i.metadata.namespace.clone(),
                i.metadata.name.clone(),
            )
        });
        let mut t = Table::default();
        for (age, ing) in sorted.iter().enumerate() {
            let ns = ing.metadata.namespace.clone().unwrap_or_default();
            t.ingresses.push(format!(
                "{ns}/{}",
                ing.metadata.name.clone().unwrap_or_default()
            ));
            let Some(spec) = &ing.spec else { continue };
            if t.default.is_none()
                && let Some(b) = spec.default_backend.as_ref()
            {
                t.default = backend(&ns, b);
            }
            for rule in spec.rules.iter().flatten() {
                let host = match rule.host.as_deref().map(str::to_ascii_lowercase) {
                    None => Host::Any,
                    Some(h) if h.is_empty() => Host::Any,
                    Some(h) => match h.strip_prefix('*') {
                        Some(rest) => Host::Wildcard(rest.to_string()),
                        None => Host::Exact(h),
                    },
                };
                for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                    let kind = if p.path_type == "Exact" {
                        Kind::Exact
                    } else {
                        Kind::Prefix
                    };
                    let raw = p.path.clone().unwrap_or_else(|| "/".into());
                    let path = match kind {
                        Kind::Exact => raw,
                        Kind::Prefix => raw.trim_end_matches('/').to_string(),
                    };
                    t.rules.push((
                        host.clone(),
                        PathRule {
                            kind,
                            path,
                            backend: backend(&ns, &p.backend),
                            age,
                        },
                    ));
                }
            }
        }
        t
    }

    /// The backend for `host` (no port; any case) and `path`; `Err(())` when
    /// a rule matched but names no usable backend.
    pub fn route(&self, host: &str, path: &str) -> Option<Result<&Backend, ()>> {
        let host = host.to_ascii_lowercase();
        let path = if path.is_empty() { "/" } else { path };
        let tiers: [&dyn Fn(&Host) -> bool; 3] = [
            &|h| matches!(h, Host::Exact(e) if *e == host),
            &|h| {
                matches!(h, Host::Wildcard(suffix)
                if host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && !host[..host.len() - suffix.len()].contains('.'))
            },
            &|h| *h == Host::Any,
        ];
        for tier in tiers {
            let best = self
                .rules
                .iter()
                .filter(|(h, _)| tier(h))
                .map(|(_, r)| r)
                .filter(|r| path_matches(r, path))
                .min_by(|a, b| {
                    b.path
                        .len()
                        .cmp(&a.path.len())
                        .then(a.kind.cmp(&b.kind))
                        .then(a.age.cmp(&b.age))
                });
            if let Some(r) = best {
                return Some(r.backend.as_ref().ok_or(()));
            }
        }
        self.default.as_ref().map(Ok)
    }

    /// Every backend the table names.
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        self.rules
            .iter()
            .filter_map(|(_, r)| r.backend.as_ref())
            .chain(self.default.as_ref())
    }
}

fn path_matches(r: &PathRule, path: &str) -> bool {
    match r.kind {
        Kind::Exact => path == r.path,
        Kind::Prefix => {
            r.path.is_empty()
                || path == r.path
                || path
                    .strip_prefix(r.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ing(name: &str, at: &str, spec: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "web",
            "creationTimestamp": at}, "spec": spec}))
        .unwrap()
    }

    fn to(svc: &str) -> serde_json::Value {
        json!({"service": {"name": svc, "port": {"number": 80}}})
    }

    fn path(p: &str, kind: &str, svc: &str) -> serde_json::Value {
        json!({"path": p, "pathType": kind, "backend": to(svc)})
    }

    fn svc(t: &Table, host: &str, p: &str) -> Option<String> {
        t.route(host, p)
            .map(|b| b.map(|b| b.service.clone()).unwrap_or_else(|()| "!".into()))
    }

    #[test]
    fn hosts_and_paths_as_kubernetes_says() {
        let t = Table::build(&[
            ing(
                "a",
                "2026-01-01T00:00:00Z",
                json!({"defaultBackend": to("fallback"), "rules": [
                    {"host": "shop.example", "http": {"paths": [
                        path("/", "Prefix", "shop"),
                        path("/api", "Prefix", "api"),
                        path("/api/v1", "Exact", "v1-exact"),
                        path("/img/", "ImplementationSpecific", "img")]}},
                    {"host": "*.example", "http": {"paths": [path("/", "Prefix", "wild")]}},
                    {"http": {"paths": [path("/any", "Prefix", "anyhost")]}},
                ]}),
            ),
            ing(
                "b",
                "2026-02-01T00:00:00Z",
                json!({"defaultBackend": to("newer-fallback"), "rules": [
                    {"host": "shop.example", "http": {"paths": [path("/api", "Prefix", "newer-api")]}}]}),
            ),
        ]);
        let cases = [
            ("shop.example", "/", Some("shop")),
            ("SHOP.example", "/x", Some("shop")),
            ("shop.example", "/api", Some("api")),
            ("shop.example", "/api/", Some("api")),
            ("shop.example", "/api/v2", Some("api")),
            ("shop.example", "/apix", Some("shop")),
            ("shop.example", "/api/v1", Some("v1-exact")),
            ("shop.example", "/api/v1/x", Some("api")),
            ("shop.example", "/img", Some("img")),
            ("a.example", "/", Some("wild")),
            ("a.b.example", "/any/x", Some("anyhost")),
            ("example", "/", Some("fallback")),
            ("other", "/any", Some("anyhost")),
            ("other", "/anything", Some("fallback")),
        ];
        for (host, p, want) in cases {
            assert_eq!(svc(&t, host, p).as_deref(), want, "{host}{p}");
        }
        assert_eq!(t.ingresses, vec!["web/a", "web/b"]);
    }

    #[test]
    fn no_default_is_none_and_a_bad_backend_is_named() {
        let t = Table::build(&[ing(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"host": "x", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}}]}}]}),
        )]);
        assert_eq!(svc(&t, "x", "/"), Some("!".into()));
        assert_eq!(svc(&t, "y", "/"), None);
    }
}
