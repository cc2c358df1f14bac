//! raft-rs `Storage` over sled: log entries, hard state, conf state and the
//! metadata of the last snapshot.
//!
//! **Log keys are big-endian indexes, so key order is index order. The entry at the
//! snapshot index is gone; its term is kept in the snapshot metadata.**

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::error::StoreError;
use super::manifest::Manifest;
use super::state::{self, StateMachine};

const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
const SNAP_META: &[u8] = b"snapshot_meta";
const NODE_ID: &[u8] = b"node_id";

#[derive(Default, Clone)]
struct Core {
    hard: HardState,
    conf: ConfState,
    snap_index: u64,
    snap_term: u64,
    last_index: u64,
    /// The commit index as of the last flush.
    durable_commit: u64,
}

/// The Raft log and its metadata, persisted in sled.
pub struct RaftStorage {
    log: sled::Tree,
    meta: sled::Tree,
    db: sled::Db,
    sm: StateMachine,
    path: PathBuf,
    manifest: Manifest,
    core: Mutex<Core>,
}

fn idx_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn other(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl RaftStorage {
    pub(crate) fn open(
        db: &sled::Db,
        path: &Path,
        sm: StateMachine,
        manifest: Manifest,
    ) -> Result<RaftStorage, StoreError> {
        let io = StoreError::io(path);
        let log = db.open_tree("raft_log").map_err(io)?;
        let meta = db.open_tree("raft_meta").map_err(StoreError::io(path))?;
        let s = RaftStorage {
            log,
            meta,
            db: db.clone(),
            sm,
            path: path.to_path_buf(),
            manifest,
            core: Mutex::new(Core::default()),
        };
        let mut core = Core::default();
        if let Some(b) = s.meta_get(HARD_STATE)? {
            core.hard = s.parse("hard state", &b)?;
        }
        if let Some(b) = s.meta_get(CONF_STATE)? {
            core.conf = s.parse("conf state", &b)?;
        }
        if let Some(b) = s.meta_get(SNAP_META)? {
            let m: SnapshotMetadata = s.parse("snapshot metadata", &b)?;
            core.snap_index = m.index;
            core.snap_term = m.term;
        }
        core.last_index = match s.log.last().map_err(StoreError::io(path))? {
            Some((k, _)) => u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| s.corrupt("log key is not 8 bytes"))?,
            ),
            None => core.snap_index,
        };
        // A crash during compaction can leave entries the snapshot already covers
        // (the metadata is written first): drop them. A gap is corruption.
        let mut stale = sled::Batch::default();
        let mut any_stale = false;
        for item in s.log.range(..idx_key(core.snap_index + 1)) {
            let (k, _) = item.map_err(StoreError::io(path))?;
            stale.remove(k);
            any_stale = true;
        }
        if any_stale {
            s.log.apply_batch(stale).map_err(StoreError::io(path))?;
            s.db.flush().map_err(StoreError::io(path))?;
            tracing::info!(
                snapshot = core.snap_index,
                "dropped log entries left by an interrupted compaction"
            );
        }
        core.last_index = core.last_index.max(core.snap_index);
        if let Some((k, v)) = s.log.first().map_err(StoreError::io(path))? {
            let e: Entry = s.parse("log entry", &v)?;
            if k.as_ref() != idx_key(e.index) || e.index != core.snap_index + 1 {
                return Err(s.corrupt(format!(
                    "log starts at {} but the snapshot is at {}",
                    e.index, core.snap_index
                )));
            }
        }
        if core.hard.commit < core.snap_index || core.hard.commit > core.last_index {
            return Err(s.corrupt(format!(
                "commit index {} outside the log [{}, {}]",
                core.hard.commit, core.snap_index, core.last_index
            )));
        }
        s.manifest.verify(path, s.node_id()?, core.hard.commit)?;
        let applied = s.sm.applied()?;
        if applied > core.last_index
            && let Some(bytes) = s.sm.installed_snapshot()?
        {
            // The state machine took a snapshot but the crash came before the log
            // was reset to it: finish the install.
            let m: SnapshotMetadata = s.parse("installed snapshot metadata", &bytes)?;
            if m.index == applied {
                *s.core.lock().unwrap() = core.clone();
                s.reset_to(m.index, m.term, m.get_conf_state())?;
                s.flush()?;
                tracing::info!(index = m.index, "completed an interrupted snapshot install");
                core = s.core.lock().unwrap().clone();
            }
        }
        if applied > core.last_index {
            return Err(s.corrupt(format!(
                "applied index {applied} is past the end of the log {}",
                core.last_index
            )));
        }
        if applied > core.hard.commit {
            // Commit moves are not flushed on their own; an applied entry was committed.
            core.hard.commit = applied;
        }
        core.durable_commit = core.hard.commit;
        *s.core.lock().unwrap() = core;
        Ok(s)
    }

    fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn meta_get(&self, k: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.meta.get(k).map_err(StoreError::io(&self.path))
    }

    fn parse<M: protobuf::Message>(&self, what: &str, b: &[u8]) -> Result<M, StoreError> {
        M::parse_from_bytes(b).map_err(|e| self.corrupt(format!("{what}: {e}")))
    }

    /// The node id stored in this data dir, if any.
    pub(crate) fn node_id(&self) -> Result<Option<u64>, StoreError> {
        match self.meta_get(NODE_ID)? {
            None => Ok(None),
            Some(b) => Ok(Some(u64::from_be_bytes(
                b.as_ref()
                    .try_into()
                    .map_err(|_| self.corrupt("node id is not 8 bytes"))?,
            ))),
        }
    }

    pub(crate) fn set_node_id(&self, id: u64) -> Result<(), StoreError> {
        self.meta
            .insert(NODE_ID, &id.to_be_bytes())
            .map_err(StoreError::io(&self.path))?;
        self.flush()?;
        let commit = self.core.lock().unwrap().durable_commit;
        self.manifest.record(id, commit, true)
    }

    /// Note (throttled) in the manifest that everything flushed so far is durable.
    pub(crate) fn record_durable(&self, id: u64) -> Result<(), StoreError> {
        let commit = self.core.lock().unwrap().durable_commit;
        self.manifest.record(id, commit, false)
    }

    pub(crate) fn hard_state(&self) -> HardState {
        self.core.lock().unwrap().hard.clone()
    }

    pub(crate) fn conf_state(&self) -> ConfState {
        self.core.lock().unwrap().conf.clone()
    }

    pub(crate) fn snapshot_index(&self) -> u64 {
        self.core.lock().unwrap().snap_index
    }

    /// Append entries, dropping any conflicting suffix of the log.
    pub(crate) fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut core = self.core.lock().unwrap();
        let mut batch = sled::Batch::default();
        let new_last = entries.last().map_or(first.index, |e| e.index);
        for i in (new_last + 1)..=core.last_index {
            batch.remove(&idx_key(i));
        }
        for e in entries {
            let bytes = e
                .write_to_bytes()
                .map_err(|e| self.corrupt(e.to_string()))?;
            batch.insert(&idx_key(e.index), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(StoreError::io(&self.path))?;
        core.last_index = new_last;
        Ok(())
    }

    fn put_meta(&self, key: &[u8], m: &impl protobuf::Message) -> Result<(), StoreError> {
        let bytes = m
            .write_to_bytes()
            .map_err(|e| self.corrupt(e.to_string()))?;
        self.meta
            .insert(key, bytes)
            .map_err(StoreError::io(&self.path))?;
        Ok(())
    }

    pub(crate) fn set_hard_state(&self, hs: &HardState) -> Result<(), StoreError> {
        self.put_meta(HARD_STATE, hs)?;
        self.core.lock().unwrap().hard = hs.clone();
        Ok(())
    }

    pub(crate) fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.hard_state();
        if hs.commit != commit {
            hs.commit = commit;
            self.set_hard_state(&hs)?;
        }
        Ok(())
    }

    pub(crate) fn set_conf_state(&self, cs: &ConfState) -> Result<(), StoreError> {
        self.put_meta(CONF_STATE, cs)?;
        self.core.lock().unwrap().conf = cs.clone();
        Ok(())
    }

    fn set_snap_meta(&self, core: &mut Core, index: u64, term: u64) -> Result<(), StoreError> {
        let m = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        self.put_meta(SNAP_META, &m)?;
        core.snap_index = index;
        core.snap_term = term;
        Ok(())
    }

    /// Make the first log position `index + 1` (bootstrap or a received snapshot):
    /// the whole log goes.
    pub(crate) fn reset_to(&self, index: u64, term: u64, cs: &ConfState) -> Result<(), StoreError> {
        self.log.clear().map_err(StoreError::io(&self.path))?;
        let mut core = self.core.lock().unwrap();
        self.set_snap_meta(&mut core, index, term)?;
        core.last_index = index;
        drop(core);
        self.set_conf_state(cs)?;
        let mut hs = self.hard_state();
        hs.term = hs.term.max(term);
        hs.commit = hs.commit.max(index);
        self.set_hard_state(&hs)
    }

    /// Drop log entries up to and including `index` (which must be applied).
    pub(crate) fn compact(&self, index: u64) -> Result<(), StoreError> {
        let term = raft::Storage::term(self, index)?;
        let mut core = self.core.lock().unwrap();
        if index <= core.snap_index {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for i in (core.snap_index + 1)..=index {
            batch.remove(&idx_key(i));
        }
        // Metadata first: a crash between the two leaves extra entries, never a gap.
        self.set_snap_meta(&mut core, index, term)?;
        self.log
            .apply_batch(batch)
            .map_err(StoreError::io(&self.path))?;
        Ok(())
    }

    /// Make everything written so far durable.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        let commit = self.core.lock().unwrap().hard.commit;
        self.db.flush().map_err(StoreError::io(&self.path))?;
        let mut core = self.core.lock().unwrap();
        core.durable_commit = core.durable_commit.max(commit);
        Ok(())
    }

    pub(crate) fn state_machine(&self) -> &StateMachine {
        &self.sm
    }
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.lock().unwrap();
        Ok(RaftState::new(core.hard.clone(), core.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max = max_size.into().unwrap_or(u64::MAX);
        let (snap_index, last) = {
            let c = self.core.lock().unwrap();
            (c.snap_index, c.last_index)
        };
        if low <= snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::new();
        let mut size = 0u64;
        for item in self.log.range(idx_key(low)..idx_key(high)) {
            let (_, v) = item.map_err(other)?;
            let e = Entry::parse_from_bytes(&v).map_err(other)?;
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e);
        }
        if out.len() as u64 != high - low && size <= max {
            return Err(other(format!("log has a gap in [{low}, {high})")));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (snap_index, snap_term, last) = {
            let c = self.core.lock().unwrap();
            (c.snap_index, c.snap_term, c.last_index)
        };
        if idx == snap_index {
            return Ok(snap_term);
        }
        if idx < snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let v = self
            .log
            .get(idx_key(idx))
            .map_err(other)?
            .ok_or_else(|| other(format!("log entry {idx} missing")))?;
        Ok(Entry::parse_from_bytes(&v).map_err(other)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.lock().unwrap().snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.lock().unwrap().last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let data = self.sm.dump().map_err(other)?;
        if data.applied < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        // Any other error is fatal to raft-rs: a log that no longer holds
        // the applied entry (only a lying peer can cause one) means "later".
        let term = self.term(data.applied).map_err(|e| {
            tracing::warn!(applied = data.applied, error = %e, "no term for the applied index; snapshot deferred");
            raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
        })?;
        let mut snap = Snapshot {
            data: state::encode_snapshot(&data).into(),
            ..Default::default()
        };
        let m = snap.mut_metadata();
        m.index = data.applied;
        m.term = term;
        m.set_conf_state(self.conf_state());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    #[test]
    fn reopen_after_interrupted_snapshot_install_completes_it() {
        let dir = crate::store::DataDir::temporary().unwrap();
        let st = dir.storage().unwrap();
        let data = crate::store::state::SnapshotData {
            applied: 50,
            kvs: Vec::new(),
            peers: Default::default(),
        };
        let mut meta = SnapshotMetadata {
            index: 50,
            term: 3,
            ..Default::default()
        };
        meta.mut_conf_state().voters = vec![1, 2, 3];
        // The state machine is restored; the crash comes before the log is reset.
        st.sm
            .restore(&data, &meta.write_to_bytes().unwrap())
            .unwrap();
        let reopened = dir.storage().unwrap();
        assert_eq!(reopened.first_index().unwrap(), 51);
        assert_eq!(reopened.term(50).unwrap(), 3);
        assert_eq!(reopened.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(reopened.hard_state().commit, 50);
    }

    #[test]
    fn reopen_after_interrupted_compaction_drops_covered_entries() {
        let dir = crate::store::DataDir::temporary().unwrap();
        let st = dir.storage().unwrap();
        let entries: Vec<Entry> = (1..=10)
            .map(|i| Entry {
                index: i,
                term: 1,
                ..Default::default()
            })
            .collect();
        st.append(&entries).unwrap();
        let hs = HardState {
            commit: 10,
            term: 1,
            ..Default::default()
        };
        st.set_hard_state(&hs).unwrap();
        // The metadata of a compaction to 5 is written, the deletions are not.
        {
            let mut core = st.core.lock().unwrap();
            st.set_snap_meta(&mut core, 5, 1).unwrap();
        }
        let reopened = dir.storage().unwrap();
        assert_eq!(reopened.first_index().unwrap(), 6);
        assert_eq!(reopened.last_index().unwrap(), 10);
        let got = reopened
            .entries(6, 11, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 5);
    }
}
