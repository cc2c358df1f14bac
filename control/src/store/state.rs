//! The applied state machine in sled: the object key space, the applied index and
//! the peer address book.
//!
//! **Every write to this tree that follows from one log entry is one atomic sled batch
//! that also moves the applied index, so a crash never leaves half an entry applied.**

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::command::{self, KeyValue, Op, OpResult, Txn, TxnOutcome};
use super::error::StoreError;

const KV_PREFIX: u8 = b'k';
const PEER_PREFIX: u8 = b'p';
const APPLIED_KEY: &[u8] = b"m:applied";
/// Metadata (protobuf `SnapshotMetadata`) of the last snapshot installed, written
/// in the same batch as its data, so an install cut short by a crash can be
/// completed on the Raft side when the node restarts.
const SNAPSHOT_KEY: &[u8] = b"m:snapshot";

/// A change seen by watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One watch event: the key after the change (for a delete, its last value at the
/// delete's revision) and its value before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub revision: u64,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

/// Serialized form of the whole state, carried in Raft snapshots.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotData {
    pub applied: u64,
    pub kvs: Vec<KeyValue>,
    pub peers: BTreeMap<u64, String>,
}

#[derive(Clone)]
pub(crate) struct StateMachine {
    tree: sled::Tree,
    path: PathBuf,
}

fn kv_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(KV_PREFIX);
    k.extend_from_slice(key.as_bytes());
    k
}

fn peer_key(id: u64) -> Vec<u8> {
    let mut k = vec![PEER_PREFIX];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn encode_value(kv: &KeyValue) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + kv.value.len());
    v.extend_from_slice(&kv.create_revision.to_be_bytes());
    v.extend_from_slice(&kv.mod_revision.to_be_bytes());
    v.extend_from_slice(&kv.value);
    v
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

impl StateMachine {
    pub(crate) fn open(db: &sled::Db, path: &Path) -> Result<StateMachine, StoreError> {
        let tree = db.open_tree("state").map_err(StoreError::io(path))?;
        let sm = StateMachine {
            tree,
            path: path.to_path_buf(),
        };
        sm.applied()?;
        Ok(sm)
    }

    fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn decode_kv(&self, raw_key: &[u8], raw: &[u8]) -> Result<KeyValue, StoreError> {
        let key = std::str::from_utf8(&raw_key[1..])
            .map_err(|_| self.corrupt("state key is not utf-8"))?
            .to_string();
        match (be_u64(raw), raw.get(8..).and_then(be_u64)) {
            (Some(create_revision), Some(mod_revision)) => Ok(KeyValue {
                key,
                value: raw[16..].to_vec(),
                create_revision,
                mod_revision,
            }),
            _ => Err(self.corrupt(format!("state value of {key} is truncated"))),
        }
    }

    /// The index of the last applied entry.
    pub(crate) fn applied(&self) -> Result<u64, StoreError> {
        match self
            .tree
            .get(APPLIED_KEY)
            .map_err(StoreError::io(&self.path))?
        {
            None => Ok(0),
            Some(v) => be_u64(&v).ok_or_else(|| self.corrupt("applied index is truncated")),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let k = kv_key(key);
        match self.tree.get(&k).map_err(StoreError::io(&self.path))? {
            None => Ok(None),
            Some(v) => self.decode_kv(&k, &v).map(Some),
        }
    }

    /// Keys starting with `prefix`, in key order, from `start` (inclusive) if given, at most `limit`.
    pub(crate) fn range(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let p = kv_key(prefix);
        let from = kv_key(start.filter(|s| s.starts_with(prefix)).unwrap_or(prefix));
        let mut out = Vec::new();
        for item in self.tree.range(from..) {
            let (k, v) = item.map_err(StoreError::io(&self.path))?;
            if !k.starts_with(&p) || out.len() >= limit {
                break;
            }
            out.push(self.decode_kv(&k, &v)?);
        }
        Ok(out)
    }

    pub(crate) fn peers(&self) -> Result<BTreeMap<u64, String>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.tree.scan_prefix([PEER_PREFIX]) {
            let (k, v) = item.map_err(StoreError::io(&self.path))?;
            let id = be_u64(&k[1..]).ok_or_else(|| self.corrupt("peer key is truncated"))?;
            let addr = String::from_utf8(v.to_vec()).map_err(|_| self.corrupt("peer address"))?;
            out.insert(id, addr);
        }
        Ok(out)
    }

    /// Apply a transaction at `index`: all ops or none. Returns the outcome (a failed
    /// precondition is an outcome, not a storage error) and the watch events.
    pub(crate) fn apply_txn(
        &self,
        index: u64,
        txn: &Txn,
    ) -> Result<(Result<TxnOutcome, StoreError>, Vec<Event>), StoreError> {
        // Current values, with earlier ops of the same txn visible to later ones.
        let mut view: BTreeMap<&str, Option<KeyValue>> = BTreeMap::new();
        for op in &txn.ops {
            if !view.contains_key(op.key()) {
                view.insert(op.key(), self.get(op.key())?);
            }
        }
        let mut batch = sled::Batch::default();
        let mut results = Vec::with_capacity(txn.ops.len());
        let mut events = Vec::with_capacity(txn.ops.len());
        for op in &txn.ops {
            let cur = view.get(op.key()).cloned().flatten();
            if let Err(e) = command::check(op, cur.as_ref()) {
                self.set_applied(index)?;
                return Ok((Err(e), Vec::new()));
            }
            match op {
                Op::Put { key, value, .. } => {
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: cur.as_ref().map_or(index, |c| c.create_revision),
                        mod_revision: index,
                    };
                    batch.insert(kv_key(key), encode_value(&kv));
                    events.push(Event {
                        kind: EventKind::Put,
                        revision: index,
                        kv: kv.clone(),
                        prev: cur.clone(),
                    });
                    results.push(OpResult::Put { prev: cur });
                    view.insert(key, Some(kv));
                }
                Op::Delete { key, .. } => {
                    let Some(prev) = cur else {
                        continue; // Expect::Any on an absent key: nothing to do
                    };
                    batch.remove(kv_key(key));
                    let mut gone = prev.clone();
                    gone.mod_revision = index;
                    events.push(Event {
                        kind: EventKind::Delete,
                        revision: index,
                        kv: gone,
                        prev: Some(prev.clone()),
                    });
                    results.push(OpResult::Deleted { prev });
                    view.insert(key, None);
                }
            }
        }
        batch.insert(APPLIED_KEY, &index.to_be_bytes());
        self.tree
            .apply_batch(batch)
            .map_err(StoreError::io(&self.path))?;
        Ok((
            Ok(TxnOutcome {
                revision: index,
                results,
            }),
            events,
        ))
    }

    pub(crate) fn set_applied(&self, index: u64) -> Result<(), StoreError> {
        self.tree
            .insert(APPLIED_KEY, &index.to_be_bytes())
            .map_err(StoreError::io(&self.path))?;
        Ok(())
    }

    /// Record a member's peer address together with the applied index.
    pub(crate) fn set_peer(
        &self,
        index: u64,
        id: u64,
        addr: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        match addr {
            Some(a) => batch.insert(peer_key(id), a.as_bytes()),
            None => batch.remove(peer_key(id)),
        }
        batch.insert(APPLIED_KEY, &index.to_be_bytes());
        self.tree
            .apply_batch(batch)
            .map_err(StoreError::io(&self.path))
    }

    /// The whole state at the applied index.
    pub(crate) fn dump(&self) -> Result<SnapshotData, StoreError> {
        Ok(SnapshotData {
            applied: self.applied()?,
            kvs: self.range("", None, usize::MAX)?,
            peers: self.peers()?,
        })
    }

    /// Replace the whole state with a snapshot's.
    pub(crate) fn restore(&self, data: &SnapshotData, meta: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for item in self.tree.iter().keys() {
            batch.remove(item.map_err(StoreError::io(&self.path))?);
        }
        for kv in &data.kvs {
            batch.insert(kv_key(&kv.key), encode_value(kv));
        }
        for (id, addr) in &data.peers {
            batch.insert(peer_key(*id), addr.as_bytes());
        }
        batch.insert(APPLIED_KEY, &data.applied.to_be_bytes());
        batch.insert(SNAPSHOT_KEY, meta);
        self.tree
            .apply_batch(batch)
            .map_err(StoreError::io(&self.path))
    }

    /// The metadata of the last installed snapshot, if any.
    pub(crate) fn installed_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(SNAPSHOT_KEY)
            .map_err(StoreError::io(&self.path))?
            .map(|v| v.to_vec()))
    }

    /// A digest of the key space and applied index, equal on replicas that agree.
    pub(crate) fn digest(&self) -> Result<u64, StoreError> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for item in self.tree.scan_prefix([KV_PREFIX]) {
            let (k, v) = item.map_err(StoreError::io(&self.path))?;
            k.hash(&mut h);
            v.hash(&mut h);
        }
        Ok(h.finish())
    }
}

pub(crate) fn encode_snapshot(data: &SnapshotData) -> Vec<u8> {
    command::encode(data)
}

pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotData, StoreError> {
    command::decode("snapshot", bytes)
}
