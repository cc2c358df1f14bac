//! Images for pods: resolve a pod's image reference through the cluster's OCI
//! endpoint (`/v2/` on the API server), fetch the Wasm layer by digest and keep
//! it in a content-addressed cache on disk.
//!
//! **Blobs are verified against their digest before they are cached, and the
//! cache is only ever read by digest.**

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::client::Body;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Layer media types that carry a Wasm component.
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
];

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Why an image could not be pulled or used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image {image:?} not found in the cluster image store (import it with `skiff image import`)"
    )]
    NotFound { image: String },
    #[error("image {image:?} is not present on the node and imagePullPolicy is Never")]
    NeverPull { image: String },
    #[error("invalid image reference {0:?}")]
    BadReference(String),
    #[error("pull {image:?}: {reason}")]
    Pull { image: String, reason: String },
    #[error("image {image:?} is not a Wasm component image: {reason}")]
    NotWasm { image: String, reason: String },
    #[error("image cache: {0}")]
    Cache(#[from] std::io::Error),
}

/// A pulled Wasm image.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// `repository@sha256:...` of the manifest (the container's imageID).
    pub image_id: String,
    /// Digest of the component layer.
    pub layer_digest: String,
    pub bytes: Arc<Vec<u8>>,
}

/// The node's image cache.
#[derive(Clone)]
pub struct Images {
    client: Client,
    dir: PathBuf,
    /// Reference → manifest digest resolved before (for IfNotPresent/Never).
    known: Arc<Mutex<HashMap<String, Pulled>>>,
    /// A lock per reference being pulled.
    pulling: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// `(repository, tag-or-digest)` of a reference, for `/v2/<repo>/manifests/<ref>`.
pub fn split_reference(image: &str) -> Result<(String, String), ImageError> {
    let bad = || ImageError::BadReference(image.to_string());
    if image.is_empty() || image.contains(char::is_whitespace) {
        return Err(bad());
    }
    if let Some((name, digest)) = image.split_once('@') {
        let name = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => n,
            _ => name,
        };
        return Ok((name.to_string(), digest.to_string()));
    }
    match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') && !n.is_empty() => Ok((n.to_string(), t.to_string())),
        _ => Ok((image.to_string(), "latest".to_string())),
    }
}

fn sha256(bytes: &[u8]) -> String {
    let h = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl Images {
    pub fn new(client: Client, dir: PathBuf) -> Result<Images, ImageError> {
        std::fs::create_dir_all(&dir)?;
        Ok(Images {
            client,
            dir,
            known: Arc::default(),
            pulling: Arc::default(),
        })
    }

    /// The image for a container, honouring `imagePullPolicy` (default: Always
    /// for `:latest` or no tag, IfNotPresent otherwise; a digest is never re-resolved).
    pub async fn pull(&self, image: &str, policy: Option<&str>) -> Result<Pulled, ImageError> {
        let (repo, reference) = split_reference(image)?;
        let latest = reference == "latest";
        let policy = policy.unwrap_or(if latest { "Always" } else { "IfNotPresent" });
        let cached = self.known.lock().expect("image map").get(image).cloned();
        match (policy, cached) {
            (_, Some(p)) if reference.starts_with("sha256:") => return Ok(p),
            ("IfNotPresent" | "Never", Some(p)) => return Ok(p),
            ("Never", None) => {
                return Err(ImageError::NeverPull {
                    image: image.into(),
                });
            }
            _ => {}
        }
        // One pull per reference at a time; the others then find it cached.
        let lock = self
            .pulling
            .lock()
            .expect("pull locks")
            .entry(image.to_string())
            .or_default()
            .clone();
        let _one = lock.lock().await;
        if policy != "Always"
            && let Some(p) = self.known.lock().expect("image map").get(image).cloned()
        {
            return Ok(p);
        }
        let pulled = self.fetch(image, &repo, &reference).await?;
        self.known
            .lock()
            .expect("image map")
            .insert(image.to_string(), pulled.clone());
        Ok(pulled)
    }

    async fn get(
        &self,
        image: &str,
        path: &str,
        accept: &str,
    ) -> Result<(Vec<u8>, Option<String>), ImageError> {
        let req = http::Request::get(path)
            .header(http::header::ACCEPT, accept)
            .body(Body::empty())
            .map_err(|e| ImageError::Pull {
                image: image.into(),
                reason: e.to_string(),
            })?;
        let pull_err = |reason: String| ImageError::Pull {
            image: image.into(),
            reason,
        };
        let resp = self
            .client
            .send(req)
            .await
            .map_err(|e| pull_err(e.to_string()))?;
        let status = resp.status();
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| pull_err(e.to_string()))?;
        if status == http::StatusCode::NOT_FOUND {
            return Err(ImageError::NotFound {
                image: image.into(),
            });
        }
        if !status.is_success() {
            return Err(pull_err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )));
        }
        Ok((body.to_vec(), digest))
    }

    async fn fetch(&self, image: &str, repo: &str, reference: &str) -> Result<Pulled, ImageError> {
        let not_wasm = |reason: String| ImageError::NotWasm {
            image: image.into(),
            reason,
        };
        let (mut bytes, mut digest) = self
            .get(
                image,
                &format!("/v2/{repo}/manifests/{reference}"),
                MANIFEST_ACCEPT,
            )
            .await?;
        let mut manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|e| not_wasm(format!("manifest is not JSON: {e}")))?;
        if let Some(list) = manifest.get("manifests").and_then(Value::as_array) {
            // An index: take the wasm/wasip2 entry, else the first.
            let pick = list
                .iter()
                .find(|m| {
                    let arch = m.pointer("/platform/architecture").and_then(Value::as_str);
                    matches!(arch, Some("wasm" | "wasm32"))
                })
                .or_else(|| list.first())
                .and_then(|m| m.get("digest").and_then(Value::as_str))
                .ok_or_else(|| not_wasm("the image index lists no manifests".into()))?
                .to_string();
            (bytes, digest) = self
                .get(
                    image,
                    &format!("/v2/{repo}/manifests/{pick}"),
                    MANIFEST_ACCEPT,
                )
                .await?;
            manifest = serde_json::from_slice(&bytes)
                .map_err(|e| not_wasm(format!("manifest is not JSON: {e}")))?;
        }
        let manifest_digest = digest.unwrap_or_else(|| sha256(&bytes));
        let layers = manifest
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let layer = layers
            .iter()
            .find(|l| {
                l.get("mediaType")
                    .and_then(Value::as_str)
                    .is_some_and(|t| WASM_LAYER_TYPES.contains(&t))
            })
            .ok_or_else(|| {
                let types: Vec<&str> = layers
                    .iter()
                    .filter_map(|l| l.get("mediaType").and_then(Value::as_str))
                    .collect();
                not_wasm(format!(
                    "no layer of type {} (layers: {})",
                    WASM_LAYER_TYPES.join(" or "),
                    if types.is_empty() {
                        "none".into()
                    } else {
                        types.join(", ")
                    }
                ))
            })?;
        let layer_digest = layer
            .get("digest")
            .and_then(Value::as_str)
            .filter(|d| {
                d.starts_with("sha256:")
                    && d.len() == 71
                    && d[7..].bytes().all(|b| b.is_ascii_hexdigit())
            })
            .ok_or_else(|| not_wasm("the Wasm layer has no valid sha256 digest".into()))?
            .to_string();
        let bytes = self.blob(image, repo, &layer_digest).await?;
        Ok(Pulled {
            image_id: format!("{repo}@{manifest_digest}"),
            layer_digest,
            bytes: Arc::new(bytes),
        })
    }

    /// A blob by digest: from the cache, or fetched, verified and cached.
    async fn blob(&self, image: &str, repo: &str, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.dir.join(digest.replace(':', "_"));
        if let Ok(b) = tokio::fs::read(&path).await
            && sha256(&b) == digest
        {
            return Ok(b);
        }
        let (bytes, _) = self
            .get(image, &format!("/v2/{repo}/blobs/{digest}"), "*/*")
            .await?;
        if sha256(&bytes) != digest {
            return Err(ImageError::Pull {
                image: image.into(),
                reason: format!("blob {digest} does not match its digest"),
            });
        }
        // Pulls of one blob may run side by side: each writes its own file, and
        // whichever rename lands last wins with identical bytes.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{n}"));
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_table() {
        let d = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("hello", ("hello", "latest")),
            ("acc/hello:v1", ("acc/hello", "v1")),
            ("docker.io/acc/hello:v1", ("docker.io/acc/hello", "v1")),
            ("localhost:5000/x", ("localhost:5000/x", "latest")),
            ("localhost:5000/x:2", ("localhost:5000/x", "2")),
        ];
        for (image, (repo, r)) in cases {
            assert_eq!(
                split_reference(image).unwrap(),
                (repo.to_string(), r.to_string()),
                "{image}"
            );
        }
        assert_eq!(
            split_reference(&format!("acc/hello:v1@{d}")).unwrap(),
            ("acc/hello".into(), d.clone())
        );
        assert!(split_reference("").is_err());
        assert!(split_reference("a b").is_err());
    }
}
