//! Room on the data dir's filesystem. Writes are refused while less than
//! [`RESERVE`] is free, before they reach the log (as etcd's NOSPACE alarm
//! does): a store that ran out of space in the middle of persisting a Raft
//! Ready could not go on, while refusing new writes keeps it serving reads
//! and taking writes again as soon as space returns.

use std::path::{Path, PathBuf};

use super::error::StoreError;

/// Free space below which writes are refused.
pub const RESERVE: u64 = 32 << 20;

/// The filesystem of a data dir.
#[derive(Debug, Clone)]
pub struct Space {
    dir: PathBuf,
}

impl Space {
    pub fn of(dir: &Path) -> Space {
        Space {
            dir: dir.to_path_buf(),
        }
    }

    /// Bytes free for an unprivileged writer (`None` if unknown).
    pub fn free(&self) -> Option<u64> {
        let st = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        Some(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    /// Refuse a write while the filesystem is nearly full.
    pub fn check(&self) -> Result<(), StoreError> {
        match self.free() {
            Some(free) if free < RESERVE => Err(StoreError::NoSpace {
                path: self.dir.clone(),
                free,
            }),
            _ => Ok(()),
        }
    }
}
