//! Join tokens that pin the cluster CA, in k3s's format:
//! `K10<sha256 of the CA bundle, hex>::server:<secret>`. A joining agent or
//! server first fetches the CA from `/skiff/v0/cacerts` (no secret sent), checks its
//! hash against the token, and only then sends the secret, over TLS that
//! trusts that CA alone. A bare secret still works, without the pin.
//!
//! **Nothing secret leaves a joining machine before the server proved it
//! holds the pinned CA.**

use sha2::Digest;

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The hash of the CA bundle it pins (lowercase hex), if any.
    pub ca_hash: Option<String>,
    /// The shared secret the servers check.
    pub secret: String,
}

/// Why joining stopped before any secret was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("malformed join token: {0}")]
    Malformed(String),
    #[error(
        "the server's CA (sha256 {found}) is not the one the join token pins ({pinned}): refusing to join"
    )]
    CaMismatch { pinned: String, found: String },
    #[error("cannot fetch the CA from {server}: {reason}")]
    Fetch { server: String, reason: String },
}

impl JoinError {
    /// Whether retrying cannot help (a token that does not fit this cluster).
    pub fn is_final(&self) -> bool {
        !matches!(self, JoinError::Fetch { .. })
    }
}

/// The sha256 (hex) of a CA bundle as served.
pub fn ca_hash(ca_pem: &str) -> String {
    let d = sha2::Sha256::digest(ca_pem.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl JoinToken {
    /// `K10<hash>::<user>:<secret>` or a bare secret.
    pub fn parse(s: &str) -> Result<JoinToken, JoinError> {
        let s = s.trim();
        let Some(rest) = s.strip_prefix("K10") else {
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(JoinError::Malformed(
                    "a bare token is letters and digits only".into(),
                ));
            }
            return Ok(JoinToken {
                ca_hash: None,
                secret: s.to_string(),
            });
        };
        let (hash, cred) = rest
            .split_once("::")
            .ok_or_else(|| JoinError::Malformed("expected K10<hash>::<user>:<secret>".into()))?;
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(JoinError::Malformed(
                "the CA hash must be 64 hex digits (sha256)".into(),
            ));
        }
        let secret = cred.rsplit_once(':').map_or(cred, |(_, s)| s);
        if secret.is_empty() || !secret.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(JoinError::Malformed(
                "the secret must be letters and digits".into(),
            ));
        }
        Ok(JoinToken {
            ca_hash: Some(hash.to_ascii_lowercase()),
            secret: secret.to_string(),
        })
    }

    /// The pinned form of `secret` for a cluster whose CA is `ca_pem`.
    pub fn pinned(ca_pem: &str, secret: &str) -> String {
        format!("K10{}::server:{secret}", ca_hash(ca_pem))
    }

    /// Check the CA a server presented against the pin (no pin: accepted).
    pub fn check(&self, ca_pem: &str) -> Result<(), JoinError> {
        match &self.ca_hash {
            Some(pinned) if *pinned != ca_hash(ca_pem) => Err(JoinError::CaMismatch {
                pinned: pinned.clone(),
                found: ca_hash(ca_pem),
            }),
            _ => Ok(()),
        }
    }

    /// Fetch the CA from `https://{server}/skiff/v0/cacerts` (sending nothing
    /// secret) and check it against the pin; the CA to trust from then on.
    /// `None` for a token without a pin.
    pub async fn fetch_ca(&self, server: &str) -> Result<Option<String>, JoinError> {
        if self.ca_hash.is_none() {
            return Ok(None);
        }
        let fetch = |reason: String| JoinError::Fetch {
            server: server.to_string(),
            reason,
        };
        // The certificate cannot be checked yet: what it serves is checked
        // against the pin instead.
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| fetch(e.to_string()))?;
        let resp = http
            .get(format!("https://{server}/skiff/v0/cacerts"))
            .send()
            .await
            .map_err(|e| fetch(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fetch(format!("the server answered {}", resp.status())));
        }
        let ca = resp.text().await.map_err(|e| fetch(e.to_string()))?;
        self.check(&ca)?;
        Ok(Some(ca))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_pin() {
        let ca = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";
        let t = JoinToken::parse(&JoinToken::pinned(ca, "s3cret")).unwrap();
        assert_eq!(t.secret, "s3cret");
        assert_eq!(t.ca_hash.as_deref(), Some(ca_hash(ca).as_str()));
        assert!(t.check(ca).is_ok());
        assert!(matches!(
            t.check("another CA"),
            Err(JoinError::CaMismatch { .. })
        ));
        let bare = JoinToken::parse("abc123").unwrap();
        assert_eq!(bare.ca_hash, None);
        assert!(bare.check("anything").is_ok());
        for bad in [
            "",
            "K10abc::server:x",
            "K10nohash",
            &format!("K10{}::server:", "a".repeat(64)),
            "has spaces",
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
        // k3s's form without a user part parses too.
        let t = JoinToken::parse(&format!("K10{}::tok", "A".repeat(64))).unwrap();
        assert_eq!((t.secret.as_str(), t.ca_hash.unwrap().len()), ("tok", 64));
    }
}
