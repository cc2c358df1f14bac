//! The cluster's content-addressed image store, kept in the replicated store so
//! every server can serve every image: blobs by digest (chunked), manifests by
//! digest, tags per repository. Names are normalised as Kubernetes does
//! (`acc/hello:v1` is `docker.io/acc/hello:v1`, `busybox` is
//! `docker.io/library/busybox:latest`).
//!
//! **A blob is stored only under the digest of its bytes; a manifest only after
//! every blob (and, for an index, every manifest) it names is present.**
//!
//! Uploads stream through [`BlobWriter`] (`upload.rs`); deletion and the blob
//! collection that follows it are in `delete.rs`; the catalog in `catalog.rs`.

mod catalog;
mod delete;
mod upload;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{ConflictKind, Expect, KeyValue, Op, Store, StoreError, Txn};

pub use delete::Deleted;
pub use upload::BlobWriter;

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
    #[error("index references manifest {0}, which is not in the repository")]
    MissingManifest(String),
    #[error("{what} {name} not found")]
    NotFound { what: &'static str, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    hex_digest(Sha256::digest(bytes).as_slice())
}

fn hex_digest(h: &[u8]) -> String {
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A reader that gunzips `r` (for `.tar.gz` archives on the client side).
pub fn gunzip<R: std::io::Read>(r: R) -> impl std::io::Read {
    flate2::read::MultiGzDecoder::new(r)
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn check_digest(d: &str) -> Result<(), ImageError> {
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
    /// The upload whose parts hold the chunks (`/skiff/blobparts/<id>/`);
    /// none for chunks kept under the digest (`/skiff/blobchunks/<digest>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parts: Option<String>,
    /// When the blob was stored (Unix seconds; 0 for blobs older than the field).
    #[serde(default)]
    created: u64,
}

impl BlobMeta {
    fn chunk_prefix(&self, digest: &str) -> String {
        match &self.parts {
            Some(id) => format!("/skiff/blobparts/{id}/"),
            None => format!("/skiff/blobchunks/{digest}/"),
        }
    }

    fn parse(kv: &KeyValue) -> Result<BlobMeta, ImageError> {
        serde_json::from_slice(&kv.value).map_err(|e| ImageError::BadManifest(e.to_string()))
    }
}

/// The digests a manifest names: its config and layers (`blobs`) and, for an
/// index, its manifests.
#[derive(Debug, Default)]
pub(crate) struct Names {
    pub blobs: Vec<String>,
    pub manifests: Vec<String>,
}

pub(crate) fn names_of(v: &serde_json::Value) -> Names {
    let digest =
        |e: &serde_json::Value| e.get("digest").and_then(|d| d.as_str()).map(str::to_string);
    let list = |k: &str| {
        v.get(k)
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .filter_map(digest)
            .collect::<Vec<_>>()
    };
    let mut blobs: Vec<String> = v.get("config").and_then(digest).into_iter().collect();
    blobs.extend(list("layers"));
    Names {
        blobs,
        manifests: list("manifests"),
    }
}

/// A stored manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// The registry a node copied it from, if it came from one.
    pub pulled_from: Option<String>,
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
                Some(kv) => Some(BlobMeta::parse(&kv)?.size),
                None => None,
            },
        )
    }

    /// A writer that streams a new blob into the store (see [`BlobWriter`]).
    pub fn writer(&self) -> BlobWriter {
        BlobWriter::new(self.clone())
    }

    /// Store a blob, which must hash to `digest`.
    pub async fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        check_digest(digest)?;
        if self.has_blob(digest).await?.is_some() {
            let actual = digest_of(bytes);
            if actual != digest {
                return Err(ImageError::DigestMismatch {
                    expected: digest.to_string(),
                    actual,
                });
            }
            return Ok(());
        }
        let mut w = self.writer();
        if let Err(e) = w.write(bytes).await {
            w.abort().await;
            return Err(e);
        }
        w.commit(digest).await
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
        let meta = BlobMeta::parse(&meta)?;
        let (parts, _) = self
            .store
            .list(&meta.chunk_prefix(digest), None, meta.chunks + 1)
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
    /// The blobs it names are re-written in the same transaction with their
    /// revision as precondition, so a blob deleted meanwhile fails the write
    /// instead of leaving a manifest without it.
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, ImageError> {
        self.put_manifest_from(repository, tag, media_type, bytes, None)
            .await
    }

    /// [`Images::put_manifest`] of a manifest copied from registry `pulled_from`.
    pub async fn put_manifest_from(
        &self,
        repository: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
        pulled_from: Option<&str>,
    ) -> Result<String, ImageError> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ImageError::BadManifest(e.to_string()))?;
        if !v.is_object() {
            return Err(ImageError::BadManifest("not a JSON object".into()));
        }
        let names = names_of(&v);
        let digest = digest_of(bytes);
        let repo = repo_key(repository);
        let mut stored = serde_json::json!({"mediaType": media_type, "manifest": String::from_utf8_lossy(bytes)});
        if let Some(r) = pulled_from {
            stored["pulledFrom"] = r.into();
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut ops = Vec::new();
            for d in &names.blobs {
                check_digest(d)?;
                let key = format!("/skiff/blobs/{d}");
                let kv = self
                    .store
                    .get(&key)
                    .await?
                    .ok_or_else(|| ImageError::MissingBlob(d.clone()))?;
                ops.push(Op::Put {
                    key,
                    value: kv.value,
                    expect: Expect::Revision(kv.mod_revision),
                });
            }
            for d in &names.manifests {
                check_digest(d)?;
                let key = format!("/skiff/manifests/{repo}/{d}");
                let kv = self
                    .store
                    .get(&key)
                    .await?
                    .ok_or_else(|| ImageError::MissingManifest(d.clone()))?;
                ops.push(Op::Put {
                    key,
                    value: kv.value,
                    expect: Expect::Revision(kv.mod_revision),
                });
            }
            ops.sort_by(|a, b| a.key().cmp(b.key()));
            ops.dedup_by(|a, b| a.key() == b.key());
            ops.push(Op::Put {
                key: format!("/skiff/manifests/{repo}/{digest}"),
                value: serde_json::to_vec(&stored).expect("json"),
                expect: Expect::Any,
            });
            if let Some(t) = tag {
                ops.push(Op::Put {
                    key: format!("/skiff/tags/{repo}/{t}"),
                    value: digest.clone().into_bytes(),
                    expect: Expect::Any,
                });
            }
            match self.store.txn(Txn { ops }).await {
                Ok(_) => return Ok(digest),
                // Another push touched a shared blob, or one was deleted: look again.
                Err(StoreError::Conflict {
                    kind: ConflictKind::RevisionMismatch { .. } | ConflictKind::NotFound,
                    ..
                }) if attempt < 8 => continue,
                Err(e) => return Err(e.into()),
            }
        }
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
            pulled_from: v["pulledFrom"].as_str().map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod reference_tests {
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
