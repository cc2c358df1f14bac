//! Projected ServiceAccount tokens: each is asked of the API
//! (`TokenRequest`, bound to the pod) and kept until 80 % of its lifetime
//! has passed, as the kubelet's token manager does; the volume sync writes
//! the current one into the pod's files.
//!
//! **A token that cannot be renewed is kept while it is valid: a pod keeps
//! working through an API outage shorter than its token's last fifth**, and
//! an agent restarted during one finds its pods' tokens on disk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;

/// One `serviceAccountToken` projection: its audience (empty: the API's)
/// and lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenRef {
    pub audience: String,
    pub seconds: i64,
}

/// Kubernetes' default and least `expirationSeconds` of a projection.
pub const DEFAULT_SECONDS: i64 = 3600;
const MIN_SECONDS: i64 = 600;

impl TokenRef {
    pub fn of(audience: Option<&str>, seconds: Option<i64>) -> TokenRef {
        TokenRef {
            audience: audience.unwrap_or("").to_string(),
            seconds: seconds.unwrap_or(DEFAULT_SECONDS).max(MIN_SECONDS),
        }
    }
}

/// Whose token: the pod it is bound to and its ServiceAccount.
#[derive(Debug, Clone)]
pub struct Holder<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub uid: &'a str,
    pub account: &'a str,
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    renew_at: Instant,
    expires_at: Instant,
}

/// The tokens of this node's pods, by pod uid and projection.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    cache: Arc<Mutex<HashMap<(String, TokenRef), Cached>>>,
    /// Where they are kept across agent restarts (one file per pod, owner
    /// only): a pod restarted while no server answers gets its token back.
    dir: Option<PathBuf>,
}

/// A token as kept on disk (times in seconds since the epoch).
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    audience: String,
    seconds: i64,
    token: String,
    renew_at: u64,
    expires_at: u64,
}

fn unix(at: Instant) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = at.saturating_duration_since(Instant::now());
    (now + left).as_secs()
}

fn instant(unix_secs: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Instant::now() + Duration::from_secs(unix_secs).saturating_sub(now)
}

impl Tokens {
    /// Tokens kept in `dir` as well as in memory.
    pub fn kept_in(dir: PathBuf) -> Tokens {
        Tokens {
            cache: Arc::default(),
            dir: Some(dir),
        }
    }

    fn file(&self, uid: &str) -> Option<PathBuf> {
        let safe = !uid.is_empty() && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        self.dir
            .as_ref()
            .filter(|_| safe)
            .map(|d| d.join(format!("{uid}.json")))
    }

    /// Write the pod's tokens to its file.
    fn keep(&self, uid: &str) {
        let Some(file) = self.file(uid) else { return };
        let kept: Vec<Kept> = self
            .cache
            .lock()
            .expect("tokens")
            .iter()
            .filter(|((u, _), _)| u == uid)
            .map(|((_, r), c)| Kept {
                audience: r.audience.clone(),
                seconds: r.seconds,
                token: c.token.clone(),
                renew_at: unix(c.renew_at),
                expires_at: unix(c.expires_at),
            })
            .collect();
        let Ok(bytes) = serde_json::to_vec(&kept) else {
            return;
        };
        if let Some(d) = file.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        if let Err((p, e)) = skiff_common::fs::write_private(&file, &bytes) {
            tracing::debug!(path = %p.display(), error = %e, "cannot keep the pod's tokens");
        }
    }

    /// The pod's tokens kept by an earlier run of the agent, into memory.
    fn recall(&self, uid: &str) {
        let Some(file) = self.file(uid) else { return };
        let Ok(bytes) = std::fs::read(&file) else {
            return;
        };
        let Ok(kept) = serde_json::from_slice::<Vec<Kept>>(&bytes) else {
            return;
        };
        let mut cache = self.cache.lock().expect("tokens");
        for k in kept {
            let r = TokenRef {
                audience: k.audience,
                seconds: k.seconds,
            };
            cache.entry((uid.to_string(), r)).or_insert(Cached {
                token: k.token,
                renew_at: instant(k.renew_at),
                expires_at: instant(k.expires_at),
            });
        }
    }

    /// The token for `r` of `holder`: the cached one while it is fresh, else
    /// a new one (or the cached one, while valid, if none can be had).
    pub async fn get(
        &self,
        client: &kube::Client,
        holder: &Holder<'_>,
        r: &TokenRef,
    ) -> Result<String, String> {
        let key = (holder.uid.to_string(), r.clone());
        let mut cached = self.cache.lock().expect("tokens").get(&key).cloned();
        if cached.is_none() {
            self.recall(holder.uid);
            cached = self.cache.lock().expect("tokens").get(&key).cloned();
        }
        let now = Instant::now();
        if let Some(c) = &cached
            && now < c.renew_at
        {
            return Ok(c.token.clone());
        }
        match request(client, holder, r).await {
            Ok((token, lifetime)) => {
                let lifetime = Duration::from_secs(lifetime.max(0) as u64);
                self.cache.lock().expect("tokens").insert(
                    key,
                    Cached {
                        token: token.clone(),
                        renew_at: now + lifetime.mul_f64(0.8),
                        expires_at: now + lifetime,
                    },
                );
                self.keep(holder.uid);
                Ok(token)
            }
            Err(e) => match cached {
                Some(c) if now < c.expires_at => {
                    tracing::warn!(pod = holder.pod, error = %e, "cannot renew the pod's token; keeping the current one");
                    Ok(c.token)
                }
                _ => Err(e),
            },
        }
    }

    /// Drop the tokens of a pod that is gone.
    pub fn forget(&self, uid: &str) {
        self.cache
            .lock()
            .expect("tokens")
            .retain(|(u, _), _| u != uid);
        if let Some(f) = self.file(uid) {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Ask the API for a token bound to the pod; returns it and its lifetime in
/// seconds as granted.
async fn request(
    client: &kube::Client,
    holder: &Holder<'_>,
    r: &TokenRef,
) -> Result<(String, i64), String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), holder.namespace);
    let body = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: (!r.audience.is_empty()).then(|| vec![r.audience.clone()]),
            expiration_seconds: Some(r.seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(holder.pod.into()),
                uid: Some(holder.uid.into()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let got: TokenRequest = api
        .create_subresource("token", holder.account, &PostParams::default(), &body)
        .await
        .map_err(|e| {
            format!(
                "cannot get a token for service account {}/{}: {e}",
                holder.namespace, holder.account
            )
        })?;
    let status = got.status.unwrap_or_default();
    let token = status
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "the token request was answered without a token".to_string())?;
    let granted = status.expiration_timestamp.map_or(r.seconds, |t| {
        t.0.as_second()
            .saturating_sub(jiff::Timestamp::now().as_second())
    });
    Ok((token, granted.min(r.seconds)))
}
