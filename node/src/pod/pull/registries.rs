//! The node's `registries.yaml` (k3s's format): per-registry mirrors
//! (endpoints tried in order, then the registry itself; repository rewrites
//! per mirror) and per-host settings (credentials, CA bundle, skipping TLS
//! verification).
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["https://mirror.example:5000"]
//!     rewrite: {"^library/(.*)": "hub/$1"}
//!   "*":
//!     endpoint: ["http://cache.local:5000"]
//! configs:
//!   mirror.example:5000:
//!     auth: {username: u, password: p}
//!     tls: {ca_file: /etc/ssl/mirror-ca.pem}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Why `registries.yaml` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
    /// Only mirrors are contacted, never the registry an image names (k3s's
    /// `--disable-default-registry-endpoint`), unless a mirror names it.
    #[serde(skip)]
    pub no_default_endpoint: bool,
}

/// Mirrors of one registry.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regular expression on the repository → replacement (`$1`…), applied
    /// when pulling from this registry's mirrors.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

/// Settings of one registry host (a mirror or the registry itself).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// base64 of `username:password`.
    pub auth: Option<String>,
    pub identity_token: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// One place to try for an image: a host, plain HTTP or not, and the
/// repository to ask it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    pub plain_http: bool,
    /// Whether this is a mirror (requests name the registry in `?ns=`).
    pub mirror: bool,
    pub repository: String,
}

/// The TLS trust for one host.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// PEM bundles added to the platform roots.
    pub ca_pem: Vec<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

impl Registries {
    /// The file at `path`; none at all is an empty configuration.
    pub fn load(path: &Path) -> Result<Registries, RegistriesError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registries::default()),
            Err(source) => {
                return Err(RegistriesError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let invalid = |reason: String| RegistriesError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let r: Registries = if text.trim().is_empty() {
            Registries::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?
        };
        for (registry, m) in &r.mirrors {
            for pattern in m.rewrite.keys() {
                regex::Regex::new(pattern)
                    .map_err(|e| invalid(format!("mirrors.{registry}.rewrite {pattern:?}: {e}")))?;
            }
            for e in &m.endpoint {
                parse_endpoint(e).ok_or_else(|| {
                    invalid(format!(
                        "mirrors.{registry}.endpoint {e:?} is not an http(s) URL"
                    ))
                })?;
            }
        }
        for (host, c) in &r.configs {
            if let Some(t) = &c.tls
                && (t.cert_file.is_some() || t.key_file.is_some())
            {
                tracing::warn!(
                    host,
                    "registries.yaml: client certificates (cert_file/key_file) are not supported yet; the host is contacted without one"
                );
            }
        }
        Ok(r)
    }

    /// The same, contacting only mirrors.
    pub fn without_default_endpoint(mut self) -> Registries {
        self.no_default_endpoint = true;
        self
    }

    /// Where to look for `repository` of `registry`, in order: its mirrors
    /// (else those of `"*"`), then the registry itself (an endpoint naming
    /// the registry is the registry, reached as that endpoint says).
    pub fn endpoints(&self, registry: &str, repository: &str) -> Vec<Endpoint> {
        let mut out = Vec::new();
        let mut itself = false;
        if let Some(m) = self.mirrors.get(registry).or_else(|| self.mirrors.get("*")) {
            let rewritten = rewrite(&m.rewrite, repository);
            for e in &m.endpoint {
                let Some((host, plain_http)) = parse_endpoint(e) else {
                    continue;
                };
                let mirror = host != registry;
                itself |= !mirror;
                out.push(Endpoint {
                    host,
                    plain_http,
                    mirror,
                    repository: if mirror {
                        rewritten.clone()
                    } else {
                        repository.to_string()
                    },
                });
            }
        }
        if !itself && !self.no_default_endpoint {
            out.push(Endpoint {
                host: registry.to_string(),
                plain_http: false,
                mirror: false,
                repository: repository.to_string(),
            });
        }
        out
    }

    fn config(&self, host: &str) -> Option<&HostConfig> {
        self.configs.get(host).or_else(|| self.configs.get("*"))
    }

    /// The credential `registries.yaml` gives `host`, if any.
    pub fn auth(&self, host: &str) -> Option<super::creds::Credential> {
        let a = self.config(host)?.auth.as_ref()?;
        if let Some(t) = &a.identity_token {
            return Some(super::creds::Credential::Token(t.clone()));
        }
        if let (Some(u), Some(p)) = (&a.username, &a.password) {
            return Some(super::creds::Credential::Basic(u.clone(), p.clone()));
        }
        a.auth.as_deref().and_then(super::creds::decode_auth)
    }

    /// The TLS trust for `host` (the CA file is read now, so a fixed file is
    /// picked up at the next pull).
    pub fn trust(&self, host: &str) -> Result<Trust, String> {
        let Some(t) = self.config(host).and_then(|c| c.tls.as_ref()) else {
            return Ok(Trust::default());
        };
        let mut ca_pem = Vec::new();
        if let Some(f) = &t.ca_file {
            ca_pem.push(std::fs::read(f).map_err(|e| format!("ca_file {f}: {e}"))?);
        }
        Ok(Trust {
            ca_pem,
            insecure_skip_verify: t.insecure_skip_verify,
        })
    }
}

/// `(host[:port], plain_http)` of an endpoint URL.
fn parse_endpoint(url: &str) -> Option<(String, bool)> {
    let (plain, rest) = if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else if !url.contains("://") && !url.is_empty() {
        (false, url)
    } else {
        return None;
    };
    let host = rest.split('/').next().unwrap_or_default();
    (!host.is_empty()).then(|| (host.to_string(), plain))
}

/// The first rewrite whose pattern matches, applied.
fn rewrite(rules: &BTreeMap<String, String>, repository: &str) -> String {
    for (pattern, to) in rules {
        if let Ok(re) = regex::Regex::new(pattern)
            && re.is_match(repository)
        {
            return re.replace(repository, to.as_str()).into_owned();
        }
    }
    repository.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Registries {
        serde_norway::from_str(y).unwrap()
    }

    #[test]
    fn mirrors_come_first_then_the_registry() {
        let r = parse(
            r#"
mirrors:
  docker.io:
    endpoint: ["https://m1.example:5000/v2", "http://m2.local"]
    rewrite: {"^library/(.*)": "hub/$1"}
  "*":
    endpoint: ["https://any.example"]
"#,
        );
        let e = r.endpoints("docker.io", "library/busybox");
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].host.as_str(), e[0].plain_http, e[0].mirror),
            ("m1.example:5000", false, true)
        );
        assert_eq!(e[0].repository, "hub/busybox");
        assert_eq!((e[1].host.as_str(), e[1].plain_http), ("m2.local", true));
        assert_eq!(e[2].host, "docker.io");
        assert_eq!(e[2].repository, "library/busybox", "no rewrite upstream");
        let other = r.endpoints("quay.io", "org/app");
        assert_eq!(other[0].host, "any.example");
        assert_eq!(other[1].host, "quay.io");
        assert_eq!(Registries::default().endpoints("r:5000", "a").len(), 1);
        let only = r.clone().without_default_endpoint();
        assert_eq!(only.endpoints("docker.io", "library/busybox").len(), 2);
        assert!(
            Registries::default()
                .without_default_endpoint()
                .endpoints("r:5000", "a")
                .is_empty()
        );
        let plain = parse("mirrors:\n  r.local:5000:\n    endpoint: [\"http://r.local:5000\"]\n")
            .without_default_endpoint();
        let e = plain.endpoints("r.local:5000", "a");
        assert_eq!(e.len(), 1);
        assert!(e[0].plain_http && !e[0].mirror);
    }

    #[test]
    fn credentials_and_trust_by_host() {
        let r = parse(
            r#"
configs:
  r.example:5000:
    auth: {username: u, password: p}
    tls: {insecure_skip_verify: true}
  t.example:
    auth: {auth: "dTpw"}
"#,
        );
        assert_eq!(
            r.auth("r.example:5000"),
            Some(super::super::creds::Credential::Basic(
                "u".into(),
                "p".into()
            ))
        );
        assert_eq!(
            r.auth("t.example"),
            Some(super::super::creds::Credential::Basic(
                "u".into(),
                "p".into()
            ))
        );
        assert_eq!(r.auth("other"), None);
        assert!(r.trust("r.example:5000").unwrap().insecure_skip_verify);
        assert!(!r.trust("other").unwrap().insecure_skip_verify);
    }

    #[test]
    fn a_bad_file_is_refused_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("registries.yaml");
        assert!(
            Registries::load(&p).unwrap().mirrors.is_empty(),
            "absent is empty"
        );
        std::fs::write(&p, "mirrors:\n  docker.io:\n    endpoints: [x]\n").unwrap();
        let e = Registries::load(&p).unwrap_err().to_string();
        assert!(e.contains("endpoints"), "{e}");
        std::fs::write(
            &p,
            "mirrors:\n  docker.io:\n    endpoint: [\"https://m\"]\n    rewrite: {\"(\": x}\n",
        )
        .unwrap();
        let e = Registries::load(&p).unwrap_err().to_string();
        assert!(e.contains("rewrite"), "{e}");
    }
}
