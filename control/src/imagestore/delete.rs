//! Removing images: `delete` drops a tag (or every tag of a digest), then the
//! manifests no remaining tag reaches (an index takes its platform manifests
//! with it), then the blobs no stored manifest names any more.
//!
//! **A blob goes only at the revision it was read at**: a manifest pushed
//! meanwhile re-writes the blobs it names (`put_manifest`), so either the
//! push or the deletion fails, never leaving a manifest without its blobs.
//! Blobs that no manifest ever named (an import that failed half-way) go an
//! hour after they were stored; parts of uploads left unfinished after a day.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::upload::{delete_keys, delete_parts};
use super::{BlobMeta, ImageError, Images, Names, check_digest, names_of, now_secs, repo_key};
use crate::store::{ConflictKind, KeyValue, Op, StoreError, Txn};

/// Blobs no manifest names are kept this long (seconds), for pushes in progress.
const ORPHAN_AFTER: u64 = 3600;
/// Unfinished uploads are kept this long (seconds).
const UPLOAD_AFTER: u64 = 24 * 3600;

/// What a deletion removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub tags: Vec<String>,
    pub manifests: Vec<String>,
    pub blobs: usize,
    pub bytes: u64,
}

fn stored_names(kv: &KeyValue) -> Names {
    let stored: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    let manifest: serde_json::Value = stored["manifest"]
        .as_str()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    names_of(&manifest)
}

fn is_conflict(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict {
            kind: ConflictKind::RevisionMismatch { .. } | ConflictKind::NotFound,
            ..
        }
    )
}

/// `roots` and every manifest reachable from them through indexes.
fn closure(
    roots: impl IntoIterator<Item = String>,
    names: &HashMap<String, Names>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(d) = todo.pop() {
        if seen.insert(d.clone())
            && let Some(n) = names.get(&d)
        {
            todo.extend(n.manifests.iter().cloned());
        }
    }
    seen
}

impl Images {
    /// Delete `reference` (a tag, or a manifest digest with all its tags) of
    /// `repository`, the manifests that leaves unreachable and their blobs.
    pub async fn delete(&self, repository: &str, reference: &str) -> Result<Deleted, ImageError> {
        let repo = repo_key(repository);
        let tag_prefix = format!("/skiff/tags/{repo}/");
        let man_prefix = format!("/skiff/manifests/{repo}/");
        let tags = self.list_all(&tag_prefix).await?;
        let (target, gone): (String, Vec<&KeyValue>) = if reference.starts_with("sha256:") {
            check_digest(reference)?;
            if self
                .store
                .get(&format!("{man_prefix}{reference}"))
                .await?
                .is_none()
            {
                return Err(ImageError::NotFound {
                    what: "manifest",
                    name: format!("{repository}@{reference}"),
                });
            }
            let gone = tags
                .iter()
                .filter(|kv| kv.value == reference.as_bytes())
                .collect();
            (reference.to_string(), gone)
        } else {
            let key = format!("{tag_prefix}{reference}");
            let kv = tags
                .iter()
                .find(|kv| kv.key == key)
                .ok_or_else(|| ImageError::NotFound {
                    what: "manifest",
                    name: format!("{repository}:{reference}"),
                })?;
            (String::from_utf8_lossy(&kv.value).into_owned(), vec![kv])
        };
        if !gone.is_empty() {
            let ops = gone
                .iter()
                .map(|kv| Op::delete(kv.key.clone(), Some(kv.mod_revision)))
                .collect();
            self.store.txn(Txn { ops }).await?;
        }
        let mut out = Deleted {
            tags: gone
                .iter()
                .filter_map(|kv| kv.key.strip_prefix(&tag_prefix).map(str::to_string))
                .collect(),
            ..Deleted::default()
        };
        let stored: HashMap<String, KeyValue> = self
            .list_all(&man_prefix)
            .await?
            .into_iter()
            .filter_map(|kv| Some((kv.key.strip_prefix(&man_prefix)?.to_string(), kv)))
            .collect();
        let names: HashMap<String, Names> = stored
            .iter()
            .map(|(d, kv)| (d.clone(), stored_names(kv)))
            .collect();
        let gone_keys: HashSet<&str> = gone.iter().map(|kv| kv.key.as_str()).collect();
        let kept = closure(
            tags.iter()
                .filter(|kv| !gone_keys.contains(kv.key.as_str()))
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
            &names,
        );
        let doomed: Vec<String> = closure([target], &names)
            .into_iter()
            .filter(|d| !kept.contains(d) && stored.contains_key(d))
            .collect();
        if doomed.is_empty() {
            return Ok(out);
        }
        let ops = doomed
            .iter()
            .map(|d| Op::delete(stored[d].key.clone(), Some(stored[d].mod_revision)))
            .collect();
        match self.store.txn(Txn { ops }).await {
            Ok(_) => {}
            // A push re-wrote one of them meanwhile: it stays.
            Err(e) if is_conflict(&e) => return Ok(out),
            Err(e) => return Err(e.into()),
        }
        let candidates: HashSet<String> = doomed
            .iter()
            .flat_map(|d| names[d].blobs.iter().cloned())
            .collect();
        out.manifests = doomed;
        (out.blobs, out.bytes) = self.collect(&candidates).await?;
        Ok(out)
    }

    /// Drop the `candidates` no stored manifest names, the blobs no manifest
    /// named for an hour, and uploads left unfinished for a day; returns how
    /// many blobs went and their size.
    pub async fn collect(&self, candidates: &HashSet<String>) -> Result<(usize, u64), ImageError> {
        // Blobs before manifests: a push that lands in between either shows
        // in the manifests or has moved its blobs past the revisions read.
        let blobs = self.list_all("/skiff/blobs/").await?;
        let named: HashSet<String> = self
            .list_all("/skiff/manifests/")
            .await?
            .iter()
            .flat_map(|kv| stored_names(kv).blobs)
            .collect();
        let now = now_secs();
        let (mut count, mut bytes) = (0, 0);
        for kv in blobs {
            let Some(digest) = kv.key.strip_prefix("/skiff/blobs/") else {
                continue;
            };
            let Ok(meta) = BlobMeta::parse(&kv) else {
                continue;
            };
            if named.contains(digest)
                || !(candidates.contains(digest) || meta.created + ORPHAN_AFTER < now)
            {
                continue;
            }
            match self
                .store
                .txn(Txn::single(Op::delete(
                    kv.key.clone(),
                    Some(kv.mod_revision),
                )))
                .await
            {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            let prefix = meta.chunk_prefix(digest);
            delete_keys(
                self,
                (0..meta.chunks)
                    .map(|i| format!("{prefix}{i:06}"))
                    .collect(),
            )
            .await?;
            count += 1;
            bytes += meta.size;
        }
        for kv in self.list_all("/skiff/uploads/").await? {
            let Some(id) = kv.key.strip_prefix("/skiff/uploads/") else {
                continue;
            };
            let started: u64 = id
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if started + UPLOAD_AFTER < now {
                delete_parts(self, id, None).await?;
            }
        }
        Ok((count, bytes))
    }
}
