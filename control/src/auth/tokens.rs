//! ServiceAccount tokens: ES256 JWTs with the claims Kubernetes writes
//! (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti` and the private
//! `kubernetes.io` claim naming the namespace, the ServiceAccount and the
//! object the token is bound to), signed with the cluster's signing key.
//!
//! **A token is only as good as what it names: verification here checks the
//! signature, issuer, audience and time; the authenticator then checks that
//! the ServiceAccount (and the pod, Secret or Node it is bound to) still
//! exists with the same uid.**

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The issuer of Skiff's tokens, and the audience the API accepts.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// What a TokenRequest may ask for at least (Kubernetes: 10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// What a TokenRequest without `expirationSeconds` gets (Kubernetes: 1 hour).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// How long a node's credential lives (its agent gets a new one whenever
/// it starts).
pub const NODE_CREDENTIAL_SECONDS: i64 = 365 * 24 * 3600;

/// Errors of signing keys and tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing key: {0}")]
    Key(String),
    #[error("sign token: {0}")]
    Sign(String),
    /// Not a token of this cluster, expired, or for another audience.
    #[error("invalid bearer token: {0}")]
    Invalid(String),
}

/// The cluster's token signing key as stored: an ECDSA P-256 key pair (PEM).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKeyPem {
    pub private_pem: String,
    pub public_pem: String,
}

impl SigningKeyPem {
    /// A new key pair.
    pub fn generate() -> Result<SigningKeyPem, TokenError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(SigningKeyPem {
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        })
    }
}

/// The object a token is bound to: it dies with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// What a token is issued for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub namespace: String,
    pub service_account: Ref,
    pub audiences: Vec<String>,
    pub lifetime_seconds: i64,
    pub pod: Option<Ref>,
    pub secret: Option<Ref>,
    pub node: Option<Ref>,
}

/// Signs and verifies the cluster's ServiceAccount tokens.
#[derive(Clone)]
pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// Tokens whose signature, issuer, audience and subject were checked,
    /// by a hash of token and audiences: a signature is checked once per
    /// token, not per request (time and what the token names still are).
    verified: Arc<Mutex<HashMap<[u8; 32], Claims>>>,
}

/// Most verified tokens remembered (then the memory starts over).
const VERIFIED_CACHE: usize = 10_000;

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    pub fn new(key: &SigningKeyPem) -> Result<Signer, TokenError> {
        use sha2::Digest;
        let encoding = EncodingKey::from_ec_pem(key.private_pem.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let decoding = DecodingKey::from_ec_pem(key.public_pem.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        // The key id names the public key, as Kubernetes derives it.
        let digest = sha2::Sha256::digest(key.public_pem.as_bytes());
        let kid = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &digest[..16],
        );
        Ok(Signer {
            encoding,
            decoding,
            kid,
            verified: Arc::default(),
        })
    }

    /// A token for `grant`, issued at `now` (seconds); returns it and its
    /// expiry.
    pub fn issue(&self, grant: &Grant, now: i64) -> Result<(String, i64), TokenError> {
        let exp = now + grant.lifetime_seconds;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: super::service_account_user(&grant.namespace, &grant.service_account.name),
            aud: grant.audiences.clone(),
            exp,
            iat: now,
            nbf: now,
            jti: uuid_like(),
            kubernetes: KubernetesClaim {
                namespace: grant.namespace.clone(),
                serviceaccount: grant.service_account.clone(),
                pod: grant.pod.clone(),
                secret: grant.secret.clone(),
                node: grant.node.clone(),
            },
        };
        Ok((self.sign(&claims)?, exp))
    }

    /// A node's credential: user `system:node:NAME`, issued at `now` for
    /// `lifetime_seconds`; returns it and its expiry.
    pub fn issue_node(
        &self,
        node: &str,
        lifetime_seconds: i64,
        now: i64,
    ) -> Result<(String, i64), TokenError> {
        let exp = now + lifetime_seconds;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: format!("{}{node}", super::node::NODE_PREFIX),
            aud: vec![ISSUER.into()],
            exp,
            iat: now,
            nbf: now,
            jti: uuid_like(),
            kubernetes: KubernetesClaim {
                namespace: String::new(),
                serviceaccount: Ref {
                    name: String::new(),
                    uid: String::new(),
                },
                pod: None,
                secret: None,
                node: Some(Ref {
                    name: node.into(),
                    uid: String::new(),
                }),
            },
        };
        self.sign(&claims).map(|t| (t, exp))
    }

    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// The claims of `token` if this cluster signed it, it is within its
    /// lifetime at `now` and it is meant for one of `audiences`.
    pub fn verify(&self, token: &str, audiences: &[&str], now: i64) -> Result<Claims, TokenError> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(token.as_bytes());
        for a in audiences {
            h.update([0]);
            h.update(a.as_bytes());
        }
        let key: [u8; 32] = h.finalize().into();
        let cached = self.verified.lock().expect("tokens").get(&key).cloned();
        let c = match cached {
            Some(c) => c,
            None => {
                let c = self.verify_signed(token, audiences)?;
                let mut m = self.verified.lock().expect("tokens");
                if m.len() >= VERIFIED_CACHE {
                    m.clear();
                }
                m.insert(key, c.clone());
                c
            }
        };
        // A minute of clock skew between servers, as Kubernetes allows.
        const LEEWAY: i64 = 60;
        if now > c.exp + LEEWAY {
            return Err(TokenError::Invalid("token has expired".into()));
        }
        if now + LEEWAY < c.nbf {
            return Err(TokenError::Invalid("token is not valid yet".into()));
        }
        Ok(c)
    }

    /// Signature, issuer, audience and subject (not time).
    fn verify_signed(&self, token: &str, audiences: &[&str]) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Time is checked by the caller against its `now`.
        v.validate_exp = false;
        v.validate_nbf = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let c = data.claims;
        let expected = match (&c.kubernetes.serviceaccount.name, &c.kubernetes.node) {
            (sa, Some(n)) if sa.is_empty() => format!("{}{}", super::node::NODE_PREFIX, n.name),
            (sa, _) => super::service_account_user(&c.kubernetes.namespace, sa),
        };
        if c.sub != expected {
            return Err(TokenError::Invalid(
                "subject does not match its claims".into(),
            ));
        }
        Ok(c)
    }
}

/// Whether a bearer token is shaped as a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

/// A random id in the UUID text form.
fn uuid_like() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Seconds since the epoch now.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            namespace: "ns".into(),
            service_account: Ref {
                name: "robot".into(),
                uid: "sa-uid".into(),
            },
            audiences: vec![ISSUER.into()],
            lifetime_seconds: 3600,
            pod: Some(Ref {
                name: "p".into(),
                uid: "pod-uid".into(),
            }),
            secret: None,
            node: None,
        }
    }

    #[test]
    fn a_token_verifies_with_its_claims() {
        let s = Signer::new(&SigningKeyPem::generate().unwrap()).unwrap();
        let (t, exp) = s.issue(&grant(), 1_000_000).unwrap();
        assert!(looks_like_jwt(&t));
        assert_eq!(exp, 1_003_600);
        let c = s.verify(&t, &[ISSUER], 1_000_100).unwrap();
        assert_eq!(c.sub, "system:serviceaccount:ns:robot");
        assert_eq!(c.kubernetes.pod.unwrap().uid, "pod-uid");
        assert_eq!(c.kubernetes.serviceaccount.uid, "sa-uid");
    }

    #[test]
    fn tokens_outside_time_audience_or_key_are_refused() {
        let s = Signer::new(&SigningKeyPem::generate().unwrap()).unwrap();
        let other = Signer::new(&SigningKeyPem::generate().unwrap()).unwrap();
        let (t, _) = s.issue(&grant(), 1_000_000).unwrap();
        let refused = |r: Result<Claims, TokenError>| matches!(r, Err(TokenError::Invalid(_)));
        assert!(refused(s.verify(&t, &[ISSUER], 1_003_600 + 61)), "expired");
        assert!(refused(s.verify(&t, &[ISSUER], 1_000_000 - 61)), "not yet");
        assert!(refused(s.verify(&t, &["vault"], 1_000_100)), "audience");
        assert!(refused(other.verify(&t, &[ISSUER], 1_000_100)), "key");
        // A token whose payload was edited no longer verifies.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
        assert!(refused(s.verify(&forged, &[ISSUER], 1_000_100)), "forged");
        assert!(refused(s.verify("not-a-jwt", &[ISSUER], 1_000_100)));
    }
}
