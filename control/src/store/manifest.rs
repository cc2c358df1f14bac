//! A small watermark file beside the sled database: the node id and a commit index
//! the database is known to have made durable.
//!
//! **sled recovers a damaged log by dropping its tail, which would look like a valid
//! but older (or empty) store. On open, a database behind its watermark is refused as
//! corrupt instead of being served.** The watermark is rewritten (atomically) at most
//! every half second, after a flush.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::StoreError;

const FORMAT: u32 = 1;
const EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Recorded {
    format: u32,
    node_id: u64,
    commit: u64,
}

pub(crate) struct Manifest {
    path: Option<PathBuf>,
    last: Mutex<Option<(Recorded, Instant)>>,
}

impl Manifest {
    /// No watermark (in-memory stores).
    pub(crate) fn none() -> Manifest {
        Manifest {
            path: None,
            last: Mutex::new(None),
        }
    }

    pub(crate) fn at(path: PathBuf) -> Manifest {
        Manifest {
            path: Some(path),
            last: Mutex::new(None),
        }
    }

    fn load(&self) -> Result<Option<Recorded>, StoreError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let r: Recorded =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if r.format != FORMAT {
                    return Err(corrupt(format!("unknown format {}", r.format)));
                }
                Ok(Some(r))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(corrupt(e.to_string())),
        }
    }

    /// Refuse a database that is behind what this data dir once made durable.
    pub(crate) fn verify(
        &self,
        db: &Path,
        node_id: Option<u64>,
        commit: u64,
    ) -> Result<(), StoreError> {
        let Some(rec) = self.load()? else {
            return Ok(());
        };
        let shown = self.path.as_deref().unwrap_or(Path::new("")).display();
        let reason = match node_id {
            None => format!(
                "the database has no node id, but {shown} records node {} at commit {}: \
                 the database was lost or damaged",
                rec.node_id, rec.commit
            ),
            Some(id) if id != rec.node_id => format!(
                "the database belongs to node {id}, but {shown} records node {}",
                rec.node_id
            ),
            Some(_) if commit < rec.commit => format!(
                "the database holds commit index {commit}, but {shown} records that {} \
                 was durable: entries were lost",
                rec.commit
            ),
            Some(_) => {
                *self.last.lock().unwrap() = Some((rec, Instant::now()));
                return Ok(());
            }
        };
        Err(StoreError::Corrupt {
            path: db.to_path_buf(),
            reason,
        })
    }

    /// Record that `commit` is durable (call after a flush). Throttled unless `force`.
    pub(crate) fn record(&self, node_id: u64, commit: u64, force: bool) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut last = self.last.lock().unwrap();
        if let Some((rec, at)) = *last
            && !force
            && (rec.commit >= commit || at.elapsed() < EVERY)
        {
            return Ok(());
        }
        let rec = Recorded {
            format: FORMAT,
            node_id,
            commit,
        };
        let io = |e: std::io::Error| StoreError::OpenDataDir {
            path: path.clone(),
            reason: e.to_string(),
        };
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&serde_json::to_vec(&rec).expect("plain struct"))
                .and_then(|()| f.sync_all())
                .map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        *last = Some((rec, Instant::now()));
        Ok(())
    }
}
