//! Images for pods: resolve a pod's image reference through the cluster's OCI
//! endpoint (`/v2/` on the API server), fetch a Wasm image's component layer or
//! a container image's config and layers by digest, and keep them in a
//! content-addressed cache on disk. An image the cluster does not hold is
//! pulled from its registry (`upstream.rs`, with the mirrors and settings of
//! `registries.rs` and the pod's pull secrets, `creds.rs`) and copied into the
//! cluster's store first, so other nodes, and this one after a restart, get
//! it from the cluster.
//!
//! **Blobs are verified against their digest before they are cached, and the
//! cache is only ever read by digest. A registry is only contacted for an
//! image the cluster lacks, or for `imagePullPolicy: Always` on an image that
//! was pulled from one.**

pub mod creds;
pub mod registries;
mod upstream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::client::Body;
use serde_json::Value;
use sha2::{Digest, Sha256};
use skiff_common::media::{ImageKind, WASM_ARCHES, WASM_LAYER_TYPES, kind_of};
use skiff_runtimes::oci::{Blob, OciImage};

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Why an image could not be pulled or used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image {image:?} not found in the cluster image store (import it with `skiff image import`)"
    )]
    NotFound { image: String },
    #[error(
        "image {image:?} is not present in the cluster's image store and imagePullPolicy is Never"
    )]
    NeverPull { image: String },
    #[error("invalid image reference {0:?}")]
    BadReference(String),
    #[error("failed to pull image {image:?}: {reason}")]
    Pull { image: String, reason: String },
    #[error("image {image:?} is neither a Wasm component image nor a container image: {reason}")]
    NotAnImage { image: String, reason: String },
    #[error("image cache: {0}")]
    Cache(#[from] std::io::Error),
}

/// A pulled image.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// `repository@sha256:...` of the manifest (the container's imageID).
    pub image_id: String,
    pub content: Content,
    /// The registry it was pulled from, if the cluster's copy came from one.
    pub pulled_from: Option<String>,
}

/// Header the node sets when it copies an image from a registry into the
/// cluster's store (and the store answers with it).
pub const PULLED_FROM: &str = "skiff-pulled-from";

/// What a pull tells the pod's events: `(reason, message)`.
pub type Notify<'a> = &'a (dyn Fn(&'static str, String) + Send + Sync);

/// Where images come from besides the cluster's store.
#[derive(Clone, Debug, Default)]
pub struct Upstream {
    /// `registries.yaml` (read at each pull from a registry).
    pub registries: Option<PathBuf>,
    /// Contact the registry an image names, not only its mirrors.
    pub default_endpoint: bool,
}

/// The entry of an index a node runs, from `(architecture, digest)`s: a Wasm
/// entry first, then this host's architecture, then the first.
pub fn pick_platform(entries: &[(String, String)]) -> Option<String> {
    entries
        .iter()
        .find(|(a, _)| WASM_ARCHES.contains(&a.as_str()))
        .or_else(|| entries.iter().find(|(a, _)| a == host_arch()))
        .or_else(|| entries.first())
        .map(|(_, d)| d.clone())
}

/// What a pulled image holds, which decides the runtime.
pub use skiff_runtimes::Content;

/// The `platform.architecture` of this host as OCI indexes spell it.
fn host_arch() -> &'static str {
    skiff_common::media::go_arch()
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
    upstream: Upstream,
}

/// Why copying from a registry failed.
enum Copy {
    /// No registry endpoint answered.
    Unreachable(String),
    Failed(ImageError),
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
            upstream: Upstream::default(),
        })
    }

    /// Pull images the cluster lacks from registries.
    pub fn with_upstream(mut self, upstream: Upstream) -> Images {
        self.upstream = upstream;
        self
    }

    /// The image for a container, honouring `imagePullPolicy` (default: Always
    /// for `:latest` or no tag, IfNotPresent otherwise; a digest is never
    /// re-resolved). `keyring` holds the pod's pull secrets.
    pub async fn pull(
        &self,
        image: &str,
        policy: Option<&str>,
        keyring: &creds::Keyring,
        notify: Notify<'_>,
    ) -> Result<Pulled, ImageError> {
        let (repo, reference) = split_reference(image)?;
        let latest = reference == "latest";
        let policy = policy.unwrap_or(if latest { "Always" } else { "IfNotPresent" });
        let by_digest = reference.starts_with("sha256:");
        let cached = self.known.lock().expect("image map").get(image).cloned();
        let present = |p: Pulled| {
            notify(
                "Pulled",
                format!("Container image {image:?} already present on machine"),
            );
            Ok(p)
        };
        match (policy, cached) {
            (_, Some(p)) if by_digest => return present(p),
            ("IfNotPresent" | "Never", Some(p)) => return present(p),
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
        if (policy != "Always" || by_digest)
            && let Some(p) = self.known.lock().expect("image map").get(image).cloned()
        {
            return present(p);
        }
        let pulled = match self.fetch(image, &repo, &reference).await {
            Ok(p) if policy != "Always" || by_digest || p.pulled_from.is_none() => p,
            // Always on an image from a registry: ask the registry again.
            Ok(p) => match self.copy_in(image, keyring, notify).await {
                Ok(()) => self.fetch(image, &repo, &reference).await?,
                Err(Copy::Unreachable(why)) => {
                    notify(
                        "Pulled",
                        format!(
                            "The registry of {image:?} cannot be reached ({why}); using the copy in the cluster's image store"
                        ),
                    );
                    p
                }
                Err(Copy::Failed(e)) => return Err(e),
            },
            Err(ImageError::NotFound { .. }) if policy == "Never" => {
                return Err(ImageError::NeverPull {
                    image: image.into(),
                });
            }
            Err(ImageError::NotFound { .. }) if self.upstream.registries.is_some() => {
                match self.copy_in(image, keyring, notify).await {
                    Ok(()) => self.fetch(image, &repo, &reference).await?,
                    Err(Copy::Unreachable(reason)) => {
                        return Err(ImageError::Pull {
                            image: image.into(),
                            reason,
                        });
                    }
                    Err(Copy::Failed(e)) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        self.known
            .lock()
            .expect("image map")
            .insert(image.to_string(), pulled.clone());
        Ok(pulled)
    }

    /// Copy `image` from its registry into the cluster's store: the blobs the
    /// cluster lacks (kept in this node's cache on the way), then the manifest
    /// under the reference's tag or digest.
    async fn copy_in(
        &self,
        image: &str,
        keyring: &creds::Keyring,
        notify: Notify<'_>,
    ) -> Result<(), Copy> {
        let failed = |reason: String| {
            Copy::Failed(ImageError::Pull {
                image: image.into(),
                reason,
            })
        };
        let r: oci_client::Reference = image
            .parse()
            .map_err(|_| Copy::Failed(ImageError::BadReference(image.into())))?;
        let regs = match &self.upstream.registries {
            Some(p) => registries::Registries::load(p).map_err(|e| failed(e.to_string()))?,
            None => registries::Registries::default(),
        };
        let regs = if self.upstream.default_endpoint {
            regs
        } else {
            regs.without_default_endpoint()
        };
        notify("Pulling", format!("Pulling image {image:?}"));
        let t = std::time::Instant::now();
        let found = upstream::find(&regs, keyring, &r).await.map_err(|f| {
            if f.unreachable {
                Copy::Unreachable(f.reason)
            } else {
                failed(f.reason)
            }
        })?;
        let repo = format!("{}/{}", r.registry(), r.repository());
        let mut size: u64 = 0;
        for d in &found.blobs {
            size += u64::try_from(d.size).unwrap_or(0);
            if self
                .cluster_has(image, &repo, &d.digest)
                .await
                .map_err(Copy::Failed)?
            {
                continue;
            }
            let bytes = match self.cached(&d.digest).await {
                Some(b) => b,
                None => {
                    let b = found.source.blob(d).await.map_err(failed)?;
                    self.cache(&d.digest, &b)
                        .await
                        .map_err(|e| Copy::Failed(e.into()))?;
                    b
                }
            };
            self.send(
                image,
                http::Request::post(format!("/v2/{repo}/blobs/uploads/?digest={}", d.digest))
                    .header(http::header::CONTENT_TYPE, "application/octet-stream")
                    .body(Body::from(bytes)),
            )
            .await
            .map_err(Copy::Failed)?;
        }
        let target = r
            .digest()
            .map(str::to_string)
            .unwrap_or_else(|| r.tag().unwrap_or("latest").to_string());
        let target = if target.starts_with("sha256:") && target != found.digest {
            // The reference named an index: the entry is stored by its own digest.
            found.digest.clone()
        } else {
            target
        };
        self.send(
            image,
            http::Request::put(format!("/v2/{repo}/manifests/{target}"))
                .header(http::header::CONTENT_TYPE, found.media_type.as_str())
                .header(PULLED_FROM, found.source.host.as_str())
                .body(Body::from(found.manifest.clone())),
        )
        .await
        .map_err(Copy::Failed)?;
        notify(
            "Pulled",
            format!(
                "Successfully pulled image {image:?} from {} in {:.3}s. Image size: {size} bytes.",
                found.source.host,
                t.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }

    /// Whether the cluster's store holds blob `digest`.
    async fn cluster_has(&self, image: &str, repo: &str, digest: &str) -> Result<bool, ImageError> {
        let req = http::Request::head(format!("/v2/{repo}/blobs/{digest}"))
            .body(Body::empty())
            .map_err(|e| ImageError::Pull {
                image: image.into(),
                reason: e.to_string(),
            })?;
        let resp = self.client.send(req).await.map_err(|e| ImageError::Pull {
            image: image.into(),
            reason: format!("the cluster's image store: {e}"),
        })?;
        Ok(resp.status().is_success())
    }

    /// Send a write to the cluster's store; anything but success is an error.
    async fn send(
        &self,
        image: &str,
        req: Result<http::Request<Body>, http::Error>,
    ) -> Result<(), ImageError> {
        let err = |reason: String| ImageError::Pull {
            image: image.into(),
            reason: format!("storing it in the cluster's image store: {reason}"),
        };
        let req = req.map_err(|e| err(e.to_string()))?;
        let resp = self
            .client
            .send(req)
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.into_body().collect_bytes().await.unwrap_or_default();
        Err(err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        )))
    }

    async fn get(
        &self,
        image: &str,
        path: &str,
        accept: &str,
    ) -> Result<(Vec<u8>, Option<String>, Option<String>), ImageError> {
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
        let pulled_from = resp
            .headers()
            .get(PULLED_FROM)
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
        Ok((body.to_vec(), digest, pulled_from))
    }

    async fn fetch(&self, image: &str, repo: &str, reference: &str) -> Result<Pulled, ImageError> {
        let unusable = |reason: String| ImageError::NotAnImage {
            image: image.into(),
            reason,
        };
        let (mut bytes, mut digest, mut pulled_from) = self
            .get(
                image,
                &format!("/v2/{repo}/manifests/{reference}"),
                MANIFEST_ACCEPT,
            )
            .await?;
        let mut manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|e| unusable(format!("manifest is not JSON: {e}")))?;
        if let Some(list) = manifest.get("manifests").and_then(Value::as_array) {
            // An index: the Wasm entry, else this host's platform, else the first.
            let entries: Vec<(String, String)> = list
                .iter()
                .filter_map(|m| {
                    let arch = m.pointer("/platform/architecture").and_then(Value::as_str);
                    let digest = m.get("digest").and_then(Value::as_str)?;
                    Some((arch.unwrap_or("").to_string(), digest.to_string()))
                })
                .collect();
            let pick = pick_platform(&entries)
                .ok_or_else(|| unusable("the image index lists no manifests".into()))?;
            let from;
            (bytes, digest, from) = self
                .get(
                    image,
                    &format!("/v2/{repo}/manifests/{pick}"),
                    MANIFEST_ACCEPT,
                )
                .await?;
            pulled_from = pulled_from.or(from);
            manifest = serde_json::from_slice(&bytes)
                .map_err(|e| unusable(format!("manifest is not JSON: {e}")))?;
        }
        let manifest_digest = digest.unwrap_or_else(|| sha256(&bytes));
        let image_id = format!("{repo}@{manifest_digest}");
        let layers = manifest
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let media_type = |v: &Value| {
            v.get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let valid_digest = |v: &Value, what: &str| {
            v.get("digest")
                .and_then(Value::as_str)
                .filter(|d| {
                    d.starts_with("sha256:")
                        && d.len() == 71
                        && d[7..].bytes().all(|b| b.is_ascii_hexdigit())
                })
                .map(str::to_string)
                .ok_or_else(|| unusable(format!("{what} has no valid sha256 digest")))
        };
        if let Some(layer) = layers
            .iter()
            .find(|l| WASM_LAYER_TYPES.contains(&media_type(l).as_str()))
        {
            let layer_digest = valid_digest(layer, "the Wasm layer")?;
            let bytes = self.blob(image, repo, &layer_digest).await?;
            return Ok(Pulled {
                image_id,
                pulled_from,
                content: Content::Wasm {
                    layer_digest,
                    bytes: Arc::new(bytes),
                },
            });
        }
        let config = manifest.get("config").cloned().unwrap_or(Value::Null);
        let types: Vec<String> = layers.iter().map(media_type).collect();
        let type_refs: Vec<&str> = types.iter().map(String::as_str).collect();
        if kind_of(&media_type(&config), &type_refs) != Some(ImageKind::Container) {
            return Err(unusable(format!(
                "config {:?}, layers [{}]; a Wasm image needs a layer of type {}, a container image an image config and filesystem layers",
                media_type(&config),
                types.join(", "),
                WASM_LAYER_TYPES.join(" or "),
            )));
        }
        let fetch = |v: &Value, what: &str| {
            let d = valid_digest(v, what);
            let t = media_type(v);
            async move {
                let d = d?;
                let bytes = self.blob(image, repo, &d).await?;
                Ok::<Blob, ImageError>(Blob {
                    media_type: t,
                    digest: d,
                    bytes: Arc::new(bytes),
                })
            }
        };
        let config = fetch(&config, "the image config").await?;
        let mut blobs = Vec::new();
        for l in &layers {
            blobs.push(fetch(l, "a layer").await?);
        }
        Ok(Pulled {
            image_id,
            pulled_from,
            content: Content::Oci(Arc::new(OciImage {
                reference: image.to_string(),
                manifest: Blob {
                    media_type: if media_type(&manifest).is_empty() {
                        "application/vnd.oci.image.manifest.v1+json".to_string()
                    } else {
                        media_type(&manifest)
                    },
                    digest: manifest_digest,
                    bytes: Arc::new(bytes),
                },
                config,
                layers: blobs,
            })),
        })
    }

    /// A blob by digest: from the cache, or fetched, verified and cached.
    async fn blob(&self, image: &str, repo: &str, digest: &str) -> Result<Vec<u8>, ImageError> {
        if let Some(b) = self.cached(digest).await {
            return Ok(b);
        }
        let (bytes, _, _) = self
            .get(image, &format!("/v2/{repo}/blobs/{digest}"), "*/*")
            .await?;
        if sha256(&bytes) != digest {
            return Err(ImageError::Pull {
                image: image.into(),
                reason: format!("blob {digest} does not match its digest"),
            });
        }
        self.cache(digest, &bytes).await?;
        Ok(bytes)
    }

    fn cache_path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.replace(':', "_"))
    }

    /// A blob of the cache whose bytes still match its digest.
    async fn cached(&self, digest: &str) -> Option<Vec<u8>> {
        let b = tokio::fs::read(self.cache_path(digest)).await.ok()?;
        (sha256(&b) == digest).then_some(b)
    }

    /// Keep verified bytes in the cache.
    async fn cache(&self, digest: &str, bytes: &[u8]) -> Result<(), std::io::Error> {
        let path = self.cache_path(digest);
        // Pulls of one blob may run side by side: each writes its own file, and
        // whichever rename lands last wins with identical bytes.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{n}"));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, &path).await
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
