//! Registry credentials from a pod's `imagePullSecrets`
//! (`kubernetes.io/dockerconfigjson` and the older `kubernetes.io/dockercfg`),
//! matched to an image as the kubelet's keyring does: the key's host (with
//! `*` globs per dot-separated part) and port must match, its path must be a
//! prefix of the repository; the most specific key comes first.

use base64::Engine;
use serde::Deserialize;

/// One credential for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Basic(String, String),
    /// A bearer token (`registrytoken`, or registries.yaml's `identity_token`).
    Token(String),
}

impl Credential {
    pub fn to_auth(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            Credential::Basic(u, p) => {
                oci_client::secrets::RegistryAuth::Basic(u.clone(), p.clone())
            }
            Credential::Token(t) => oci_client::secrets::RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// `user:password` in base64 (a docker config's `auth`).
pub fn decode_auth(b64: &str) -> Option<Credential> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some(Credential::Basic(u.to_string(), p.to_string()))
}

#[derive(Debug, Default, Deserialize)]
struct Entry {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

impl Entry {
    fn credential(&self) -> Option<Credential> {
        if let (Some(u), Some(p)) = (&self.username, &self.password)
            && !u.is_empty()
        {
            return Some(Credential::Basic(u.clone(), p.clone()));
        }
        if let Some(c) = self.auth.as_deref().and_then(decode_auth) {
            return Some(c);
        }
        self.registrytoken
            .clone()
            .or_else(|| self.identitytoken.clone())
            .filter(|t| !t.is_empty())
            .map(Credential::Token)
    }
}

/// The credentials of some pull secrets, by key.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    entries: Vec<(String, Credential)>,
}

impl Keyring {
    /// Add a Secret's data (`type` and the decoded `data`); a Secret of another
    /// type or whose JSON does not parse is `Err` with the reason.
    pub fn add_secret(
        &mut self,
        kind: &str,
        data: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Result<(), String> {
        let entries: std::collections::BTreeMap<String, Entry> = match kind {
            "kubernetes.io/dockerconfigjson" => {
                #[derive(Deserialize)]
                struct Config {
                    #[serde(default)]
                    auths: std::collections::BTreeMap<String, Entry>,
                }
                let raw = data
                    .get(".dockerconfigjson")
                    .ok_or("it has no .dockerconfigjson key")?;
                serde_json::from_slice::<Config>(raw)
                    .map_err(|e| format!(".dockerconfigjson: {e}"))?
                    .auths
            }
            "kubernetes.io/dockercfg" => {
                let raw = data.get(".dockercfg").ok_or("it has no .dockercfg key")?;
                serde_json::from_slice(raw).map_err(|e| format!(".dockercfg: {e}"))?
            }
            other => {
                return Err(format!(
                    "its type is {other:?}, not kubernetes.io/dockerconfigjson"
                ));
            }
        };
        for (key, e) in entries {
            if let Some(c) = e.credential() {
                self.entries.push((key, c));
            }
        }
        Ok(())
    }

    /// The credentials whose key matches `host[:port]/repository`, most
    /// specific first, each once.
    pub fn lookup(&self, host: &str, repository: &str) -> Vec<Credential> {
        let mut found: Vec<(usize, &Credential)> = self
            .entries
            .iter()
            .filter(|(k, _)| key_matches(k, host, repository))
            .map(|(k, c)| (k.len(), c))
            .collect();
        found.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        let mut out: Vec<Credential> = Vec::new();
        for (_, c) in found {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }
}

/// Docker Hub's many names are one registry.
fn hub(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

fn key_matches(key: &str, host: &str, repository: &str) -> bool {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (key_host, key_path) = rest.split_once('/').unwrap_or((rest, ""));
    // Docker Hub keys carry the API version (`https://index.docker.io/v1/`).
    let key_path = key_path
        .trim_start_matches("v1")
        .trim_start_matches("v2")
        .trim_matches('/');
    let (kh, kp) = key_host.split_once(':').unwrap_or((key_host, ""));
    let (ih, ip) = host.split_once(':').unwrap_or((host, ""));
    if kp != ip {
        return false;
    }
    let (kh, ih) = (hub(kh), hub(ih));
    let kparts: Vec<&str> = kh.split('.').collect();
    let iparts: Vec<&str> = ih.split('.').collect();
    if kparts.len() != iparts.len() || !kparts.iter().zip(&iparts).all(|(k, i)| glob(k, i)) {
        return false;
    }
    key_path.is_empty() || repository == key_path || repository.starts_with(&format!("{key_path}/"))
}

/// `*` matches any run of characters within one part.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, post)) => {
            s.starts_with(pre)
                && s.len() >= pre.len()
                && (0..=s.len() - pre.len()).any(|i| {
                    let rest = &s[pre.len() + i..];
                    s.is_char_boundary(pre.len() + i) && glob(post, rest)
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ring(json: &str) -> Keyring {
        let mut k = Keyring::default();
        let data = BTreeMap::from([(".dockerconfigjson".to_string(), json.as_bytes().to_vec())]);
        k.add_secret("kubernetes.io/dockerconfigjson", &data)
            .unwrap();
        k
    }

    fn basic(u: &str) -> Credential {
        Credential::Basic(u.into(), "p".into())
    }

    #[test]
    fn keys_match_as_the_kubelet_matches_them() {
        let k = ring(
            r#"{"auths": {
                "reg.example:5000": {"username": "port", "password": "p"},
                "reg.example": {"auth": "aG9zdDpw"},
                "reg.example/team": {"username": "team", "password": "p"},
                "*.wild.example": {"username": "wild", "password": "p"},
                "https://index.docker.io/v1/": {"username": "hub", "password": "p"}
            }}"#,
        );
        assert_eq!(k.lookup("reg.example:5000", "app"), vec![basic("port")]);
        assert_eq!(
            k.lookup("reg.example", "team/app"),
            vec![basic("team"), basic("host")],
            "most specific first"
        );
        assert_eq!(k.lookup("reg.example", "teamx/app"), vec![basic("host")]);
        assert_eq!(k.lookup("a.wild.example", "x"), vec![basic("wild")]);
        assert_eq!(k.lookup("a.b.wild.example", "x"), vec![], "one part per *");
        assert_eq!(k.lookup("docker.io", "library/busybox"), vec![basic("hub")]);
        assert_eq!(k.lookup("other.example", "x"), vec![]);
    }

    #[test]
    fn bad_secrets_are_named() {
        let mut k = Keyring::default();
        let e = k.add_secret("Opaque", &BTreeMap::new()).unwrap_err();
        assert!(e.contains("Opaque"), "{e}");
        let data = BTreeMap::from([(".dockerconfigjson".to_string(), b"{".to_vec())]);
        assert!(
            k.add_secret("kubernetes.io/dockerconfigjson", &data)
                .is_err()
        );
        let old = BTreeMap::from([(
            ".dockercfg".to_string(),
            br#"{"r.example": {"auth": "dTpw"}}"#.to_vec(),
        )]);
        k.add_secret("kubernetes.io/dockercfg", &old).unwrap();
        assert_eq!(
            k.lookup("r.example", "a"),
            vec![Credential::Basic("u".into(), "p".into())]
        );
    }
}
