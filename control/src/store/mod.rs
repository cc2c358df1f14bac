//! The replicated object store: Raft (raft-rs `RawNode`) + sled.
//!
//! [`Store`] is the handle the rest of the control plane uses; [`Replica`] is the
//! Raft core; the driver thread in [`driver`] feeds it ticks, requests and peer
//! messages and sends what it returns through the [`transport`].

pub mod backup;
pub mod command;
mod driver;
pub mod error;
mod failpoint;
pub mod format;
mod logger;
mod manifest;
pub mod replica;
mod space;
pub mod state;
mod storage;
pub mod transport;
mod watch;

use std::path::{Path, PathBuf};

pub use command::{Expect, KeyValue, Op, OpResult, Txn, TxnOutcome};
pub use driver::{Store, StoreConfig};
pub use error::{ConflictKind, StoreError};
pub use replica::{Done, Replica, ReplicaConfig, ReplicaStatus};
pub use state::{Event, EventKind};
pub use storage::RaftStorage;
pub use transport::PeerTls;
pub use watch::Watch;

/// An opened data dir: the sled database with the Raft log and the state machine.
pub struct DataDir {
    pub path: PathBuf,
    db: sled::Db,
    manifest: Option<PathBuf>,
}

impl DataDir {
    /// Open (or create) the store under `path`. A damaged database is an error that
    /// names the path; it is never reset silently.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        let db_path = path.join("store");
        let fail = |reason: String| StoreError::OpenDataDir {
            path: db_path.clone(),
            reason,
        };
        std::fs::create_dir_all(path).map_err(|e| fail(e.to_string()))?;
        format::ensure(path)?;
        let cfg = sled::Config::new()
            .path(&db_path)
            .cache_capacity(64 << 20)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None);
        // sled can panic on some damaged files instead of returning an error.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cfg.open()));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "database panicked while opening".into());
                return Err(StoreError::Corrupt {
                    path: db_path,
                    reason: msg,
                });
            }
        };
        Ok(DataDir {
            path: db_path,
            db,
            manifest: Some(path.join("store.manifest")),
        })
    }

    /// An in-memory data dir (tests and the in-process harness).
    pub fn temporary() -> Result<DataDir, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .flush_every_ms(None)
            .open()
            .map_err(|e| StoreError::OpenDataDir {
                path: PathBuf::from("<temporary>"),
                reason: e.to_string(),
            })?;
        Ok(DataDir {
            path: PathBuf::from("<temporary>"),
            db,
            manifest: None,
        })
    }

    /// The Raft storage (and state machine) in this data dir.
    pub fn storage(&self) -> Result<RaftStorage, StoreError> {
        let sm = state::StateMachine::open(&self.db, &self.path)?;
        let manifest = match &self.manifest {
            Some(p) => manifest::Manifest::at(p.clone()),
            None => manifest::Manifest::none(),
        };
        RaftStorage::open(&self.db, &self.path, sm, manifest)
    }
}
