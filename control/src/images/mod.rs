//! The cluster's content-addressed image store, kept in the replicated store so
//! every server can serve every image: blobs by digest (chunked), manifests by
//! digest, tags per repository. Names are normalised as Kubernetes does
//! (`acc/hello:v1` is `docker.io/acc/hello:v1`, `busybox` is
//! `docker.io/library/busybox:latest`).
//!
//! **A blob is stored only under the digest of its bytes; a manifest only after
//! every blob it names is present.**

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Expect, Op, Store, StoreError, Txn};

const CHUNK: usize = 512 * 1024;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("digest mismatch: expected {expected}, content is {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid digest {0:?} (want sha256:<64 hex>)")]
    BadDigest(String),
    #[error("invalid image reference {0:?}")]
    BadReference(String),
    #[error("manifest is not valid json: {0}")]
    BadManifest(String),
    #[error("manifest references blob {0}, which is not in the store")]
    MissingBlob(String),
    #[error("{what} {name} not found")]
    NotFound { what: &'static str, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    let h = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn check_digest(d: &str) -> Result<(), ImageError> {
    match d.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) =>
        {
            Ok(())
        }
        _ => Err(ImageError::BadDigest(d.to_string())),
    }
}

/// A parsed image reference: repository (normalised) and a tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        let bad = || ImageError::BadReference(s.to_string());
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad());
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                check_digest(d)?;
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (name, None),
        };
        if name.is_empty() || name.starts_with('/') || name.ends_with('/') {
            return Err(bad());
        }
        let first = name.split('/').next().unwrap_or_default();
        let has_registry = name.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        let repository = if has_registry {
            name.to_string()
        } else if name.contains('/') {
            format!("docker.io/{name}")
        } else {
            format!("docker.io/library/{name}")
        };
        let tag = if digest.is_none() {
            Some(tag.unwrap_or_else(|| "latest".into()))
        } else {
            tag
        };
        Ok(Reference {
            repository: repository.to_ascii_lowercase(),
            tag,
            digest,
        })
    }

    pub fn to_string_normalized(&self) -> String {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => format!("{}@{d}", self.repository),
            (Some(t), None) => format!("{}:{t}", self.repository),
            (None, None) => self.repository.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct BlobMeta {
    size: u64,
    chunks: usize,
}

/// A stored manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// The image store over the replicated store.
#[derive(Clone)]
pub struct Images {
    store: Store,
}

fn repo_key(repo: &str) -> String {
    repo.replace('/', "%2F")
}

impl Images {
    pub fn new(store: Store) -> Images {
        Images { store }
    }

    pub async fn has_blob(&self, digest: &str) -> Result<Option<u64>, ImageError> {
        check_digest(digest)?;
        Ok(
            match self.store.get(&format!("/skiff/blobs/{digest}")).await? {
                Some(kv) => Some(
                    serde_json::from_slice::<BlobMeta>(&kv.value)
                        .map_err(|e| ImageError::BadManifest(e.to_string()))?
                        .size,
                ),
                None => None,
            },
        )
    }

    /// Store a blob, which must hash to `digest`.
    pub async fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        check_digest(digest)?;
        let actual = digest_of(bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        if self.has_blob(digest).await?.is_some() {
            return Ok(());
        }
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        for (i, c) in chunks.iter().enumerate() {
            self.store
                .write(Op::Put {
                    key: format!("/skiff/blobchunks/{digest}/{i:06}"),
                    value: c.to_vec(),
                    expect: Expect::Any,
                })
                .await?;
        }
        let meta = BlobMeta {
            size: bytes.len() as u64,
            chunks: chunks.len(),
        };
        self.store
            .write(Op::Put {
                key: format!("/skiff/blobs/{digest}"),
                value: serde_json::to_vec(&meta).expect("json"),
                expect: Expect::Any,
            })
            .await?;
        Ok(())
    }

    pub async fn get_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        check_digest(digest)?;
        let meta = self
            .store
            .get(&format!("/skiff/blobs/{digest}"))
            .await?
            .ok_or_else(|| ImageError::NotFound {
                what: "blob",
                name: digest.to_string(),
            })?;
        let meta: BlobMeta = serde_json::from_slice(&meta.value)
            .map_err(|e| ImageError::BadManifest(e.to_string()))?;
        let (parts, _) = self
            .store
            .list(
                &format!("/skiff/blobchunks/{digest}/"),
                None,
                meta.chunks + 1,
            )
            .await?;
        let mut out = Vec::with_capacity(meta.size as usize);
        for p in parts {
            out.extend_from_slice(&p.value);
        }
        if out.len() as u64 != meta.size || digest_of(&out) != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual: digest_of(&out),
            });
        }
        Ok(out)
    }

    /// Store a manifest for `repository` under its digest and, if given, a tag.
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, ImageError> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ImageError::BadManifest(e.to_string()))?;
        let mut needed: Vec<String> = Vec::new();
        if let Some(c) = v.pointer("/config/digest").and_then(|d| d.as_str()) {
            needed.push(c.to_string());
        }
        for l in v
            .get("layers")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(d) = l.get("digest").and_then(|d| d.as_str()) {
                needed.push(d.to_string());
            }
        }
        for d in &needed {
            if self.has_blob(d).await?.is_none() {
                return Err(ImageError::MissingBlob(d.clone()));
            }
        }
        let digest = digest_of(bytes);
        let repo = repo_key(repository);
        let stored = serde_json::json!({"mediaType": media_type, "manifest": String::from_utf8_lossy(bytes)});
        let mut ops = vec![Op::Put {
            key: format!("/skiff/manifests/{repo}/{digest}"),
            value: serde_json::to_vec(&stored).expect("json"),
            expect: Expect::Any,
        }];
        if let Some(t) = tag {
            ops.push(Op::Put {
                key: format!("/skiff/tags/{repo}/{t}"),
                value: digest.clone().into_bytes(),
                expect: Expect::Any,
            });
        }
        self.store.txn(Txn { ops }).await?;
        Ok(digest)
    }

    /// A manifest by tag or digest.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest, ImageError> {
        let repo = repo_key(repository);
        let digest = if reference.starts_with("sha256:") {
            reference.to_string()
        } else {
            let kv = self
                .store
                .get(&format!("/skiff/tags/{repo}/{reference}"))
                .await?
                .ok_or_else(|| ImageError::NotFound {
                    what: "manifest",
                    name: format!("{repository}:{reference}"),
                })?;
            String::from_utf8_lossy(&kv.value).into_owned()
        };
        let kv = self
            .store
            .get(&format!("/skiff/manifests/{repo}/{digest}"))
            .await?
            .ok_or_else(|| ImageError::NotFound {
                what: "manifest",
                name: format!("{repository}@{digest}"),
            })?;
        let v: serde_json::Value = serde_json::from_slice(&kv.value)
            .map_err(|e| ImageError::BadManifest(e.to_string()))?;
        Ok(Manifest {
            digest,
            media_type: v["mediaType"]
                .as_str()
                .unwrap_or("application/vnd.oci.image.manifest.v1+json")
                .to_string(),
            bytes: v["manifest"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_table() {
        let cases = [
            ("acc/hello:v1", "docker.io/acc/hello:v1"),
            ("docker.io/acc/hello:v1", "docker.io/acc/hello:v1"),
            ("busybox", "docker.io/library/busybox:latest"),
            (
                "registry.local:5000/team/app:2",
                "registry.local:5000/team/app:2",
            ),
            ("localhost/app", "localhost/app:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(
                Reference::parse(input).unwrap().to_string_normalized(),
                want,
                "{input}"
            );
        }
        let d = digest_of(b"x");
        let r = Reference::parse(&format!("acc/hello@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert!(Reference::parse("bad ref").is_err());
        assert!(Reference::parse("acc/hello@sha256:xyz").is_err());
    }
}
