//! Errors of the replicated store.

use std::path::PathBuf;

/// Why a precondition of a transaction failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConflictKind {
    /// The key was required to be absent but exists.
    AlreadyExists,
    /// The key was required to exist but does not.
    NotFound,
    /// The key exists with another revision than the one required.
    RevisionMismatch { expected: u64, actual: u64 },
}

/// Errors returned by the store and its parts.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open data dir {path}: {reason}")]
    OpenDataDir { path: PathBuf, reason: String },
    #[error("data dir {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "data dir {path} has format version {found}, but this skiff binary supports format version {supported} at most: use a newer skiff (or restore a snapshot into a new data dir)"
    )]
    FormatTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("storage i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("precondition failed on key {key}: {kind:?}")]
    Conflict { key: String, kind: ConflictKind },
    #[error("no leader is known; retry later")]
    NoLeader,
    #[error("request timed out before it was applied (outcome unknown)")]
    Timeout,
    #[error("the leader changed before the request was applied (outcome unknown); retry")]
    LeaderChanged,
    #[error("revision {requested} is older than the watch history (oldest {oldest})")]
    Expired { requested: u64, oldest: u64 },
    #[error("the store is shutting down")]
    Stopped,
    #[error(
        "the store's disk is full: {} MiB free on {} (writes resume once {} MiB are free; reads go on)",
        free >> 20, path.display(), super::space::RESERVE >> 20
    )]
    NoSpace { path: PathBuf, free: u64 },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
