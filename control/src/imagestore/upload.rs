//! Streamed blob uploads: bytes are hashed and written to the store in
//! 512 KiB parts as they arrive, so neither a server nor a client holds a whole
//! blob in memory. The parts live under `/skiff/blobparts/<id>/` and become a
//! blob when [`BlobWriter::commit`] finds their digest is the one announced;
//! until then a marker `/skiff/uploads/<id>` names them, so parts an upload
//! left behind (a server that stopped mid-upload) can be collected.

use sha2::{Digest, Sha256};

use super::{BlobMeta, CHUNK, ImageError, Images, check_digest, hex_digest, now_secs};
use crate::store::{ConflictKind, Expect, Op, StoreError, Txn};

/// A blob being written; [`commit`](BlobWriter::commit) or
/// [`abort`](BlobWriter::abort) it.
pub struct BlobWriter {
    images: Images,
    id: String,
    hasher: Sha256,
    size: u64,
    chunks: usize,
    pending: Vec<u8>,
}

impl BlobWriter {
    pub(super) fn new(images: Images) -> BlobWriter {
        let r: [u8; 12] = rand::random();
        let id = format!(
            "{}-{}",
            now_secs(),
            r.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        BlobWriter {
            images,
            id,
            hasher: Sha256::new(),
            size: 0,
            chunks: 0,
            pending: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append bytes; full parts go to the store at once.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), ImageError> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            let take = (CHUNK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ImageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::new();
        if self.chunks == 0 {
            ops.push(Op::Put {
                key: format!("/skiff/uploads/{}", self.id),
                value: Vec::new(),
                expect: Expect::Any,
            });
        }
        ops.push(Op::Put {
            key: format!("/skiff/blobparts/{}/{:06}", self.id, self.chunks),
            value: std::mem::take(&mut self.pending),
            expect: Expect::Any,
        });
        self.images.store.txn(Txn { ops }).await?;
        self.chunks += 1;
        Ok(())
    }

    /// Finish the blob: it is stored only if its bytes hash to `digest`.
    /// A blob the store already holds keeps its copy (this one is dropped).
    pub async fn commit(mut self, digest: &str) -> Result<(), ImageError> {
        if let Err(e) = check_digest(digest) {
            self.abort().await;
            return Err(e);
        }
        let actual = hex_digest(self.hasher.clone().finalize().as_slice());
        if actual != digest {
            self.abort().await;
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        if let Err(e) = self.flush().await {
            self.abort().await;
            return Err(e);
        }
        let meta = BlobMeta {
            size: self.size,
            chunks: self.chunks,
            parts: Some(self.id.clone()),
            created: now_secs(),
        };
        let ops = vec![
            Op::create(
                format!("/skiff/blobs/{digest}"),
                serde_json::to_vec(&meta).expect("json"),
            ),
            remove(format!("/skiff/uploads/{}", self.id)),
        ];
        match self.images.store.txn(Txn { ops }).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict {
                kind: ConflictKind::AlreadyExists,
                ..
            }) => {
                self.abort().await;
                Ok(())
            }
            Err(e) => {
                self.abort().await;
                Err(e.into())
            }
        }
    }

    /// Drop the parts written so far (best effort: a leftover is collected later).
    pub async fn abort(self) {
        let _ = delete_parts(&self.images, &self.id, Some(self.chunks)).await;
    }
}

/// Delete the parts of upload `id` (`count` of them, or as many as are found)
/// and its marker.
pub(super) async fn delete_parts(
    images: &Images,
    id: &str,
    count: Option<usize>,
) -> Result<(), ImageError> {
    let keys: Vec<String> = match count {
        Some(n) => (0..n)
            .map(|i| format!("/skiff/blobparts/{id}/{i:06}"))
            .collect(),
        None => (0..)
            .map(|i| format!("/skiff/blobparts/{id}/{i:06}"))
            .take_while(|k| matches!(images.store.get_local(k), Ok(Some(_))))
            .collect(),
    };
    delete_keys(images, keys).await?;
    images
        .store
        .write(remove(format!("/skiff/uploads/{id}")))
        .await?;
    Ok(())
}

/// Delete `key` if it exists.
pub(super) fn remove(key: String) -> Op {
    Op::Delete {
        key,
        expect: Expect::Any,
    }
}

/// Delete keys in transactions of a bounded size.
pub(super) async fn delete_keys(images: &Images, keys: Vec<String>) -> Result<(), ImageError> {
    for batch in keys.chunks(64) {
        let ops = batch.iter().map(|k| remove(k.clone())).collect();
        images.store.txn(Txn { ops }).await?;
    }
    Ok(())
}
