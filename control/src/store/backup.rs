//! Store backups: the snapshot file (a JSON header line with format version, size
//! and SHA-256, then the state), a new one-voter data dir built from one, and
//! scheduled snapshots with retention.
//!
//! **A snapshot is the applied state at one index, read on the Raft thread; a
//! restored data dir starts its Raft log just past that index, so revisions
//! (resourceVersions) never go backwards.** Snapshots carry the cluster CA, the
//! admin token (both are keys of the store) and the join token: they are secrets,
//! written 0600.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, SnapshotMetadata};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::command::{self, KeyValue};
use super::error::StoreError;
use super::state::SnapshotData;
use super::{DataDir, Store, format};

/// First field of every snapshot header.
pub const MAGIC: &str = "skiff-snapshot";
/// The snapshot file format this binary writes (and the newest it reads).
pub const VERSION: u32 = 1;
/// Longest header line accepted.
const MAX_HEADER: usize = 4096;

/// Errors of taking, reading and restoring snapshots.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a skiff snapshot: {0}")]
    NotASnapshot(String),
    #[error(
        "snapshot format version {found} is newer than this skiff binary reads ({supported}): use a newer skiff"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("snapshot is damaged: {0}")]
    Damaged(String),
    #[error(
        "{path} is not empty: a snapshot is restored into a new data dir (move the old one away first)"
    )]
    NotEmpty { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The header line of a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub magic: String,
    pub version: u32,
    /// The applied index (store revision) the state is at.
    pub applied: u64,
    /// Unix seconds when it was taken.
    pub created: u64,
    pub keys: u64,
    /// Bytes of the body that follows the header line.
    pub length: u64,
    /// Hex SHA-256 of the body.
    pub sha256: String,
}

/// The state a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// The applied index: every revision in `kvs` is at most this.
    pub applied: u64,
    /// Unix seconds when it was taken.
    pub created: u64,
    /// Every key of the store (objects, the cluster CA, the admin token, images).
    pub kvs: Vec<KeyValue>,
    /// The cluster's join token (agents and joining servers present it).
    pub join_token: Option<String>,
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Backup {
    fn from_state(data: SnapshotData, join_token: Option<String>) -> Backup {
        Backup {
            applied: data.applied,
            created: now_unix(),
            kvs: data.kvs,
            join_token,
        }
    }

    /// The file: header line, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let body = command::encode(self);
        let header = Header {
            magic: MAGIC.into(),
            version: VERSION,
            applied: self.applied,
            created: self.created,
            keys: self.kvs.len() as u64,
            length: body.len() as u64,
            sha256: sha256_hex(&body),
        };
        let mut out = serde_json::to_vec(&header).expect("plain struct");
        out.push(b'\n');
        out.extend_from_slice(&body);
        out
    }

    /// Read a file, checking its magic, version, length and checksum.
    pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
        let (header, body) = split(bytes)?;
        if body.len() as u64 != header.length {
            return Err(BackupError::Damaged(format!(
                "body is {} bytes, the header says {} (truncated?)",
                body.len(),
                header.length
            )));
        }
        let sum = sha256_hex(body);
        if sum != header.sha256 {
            return Err(BackupError::Damaged(format!(
                "checksum mismatch: sha256 {sum}, the header says {}",
                header.sha256
            )));
        }
        let b: Backup = command::decode("snapshot body", body)
            .map_err(|e| BackupError::Damaged(e.to_string()))?;
        if b.applied != header.applied || b.kvs.len() as u64 != header.keys {
            return Err(BackupError::Damaged(
                "body does not match its header".into(),
            ));
        }
        if b.applied == 0 {
            return Err(BackupError::Damaged("applied index 0".into()));
        }
        if let Some(kv) = b.kvs.iter().find(|kv| kv.mod_revision > b.applied) {
            return Err(BackupError::Damaged(format!(
                "key {} has revision {}, past the snapshot's index {}",
                kv.key, kv.mod_revision, b.applied
            )));
        }
        Ok(b)
    }
}

/// The header of a snapshot file (checked for magic and version only).
pub fn header(bytes: &[u8]) -> Result<Header, BackupError> {
    split(bytes).map(|(h, _)| h)
}

fn split(bytes: &[u8]) -> Result<(Header, &[u8]), BackupError> {
    let nl = bytes
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or_else(|| BackupError::NotASnapshot("no header line".into()))?;
    let header: Header = serde_json::from_slice(&bytes[..nl])
        .map_err(|e| BackupError::NotASnapshot(format!("header: {e}")))?;
    if header.magic != MAGIC {
        return Err(BackupError::NotASnapshot(format!(
            "header names {:?}",
            header.magic
        )));
    }
    if header.version > VERSION {
        return Err(BackupError::TooNew {
            found: header.version,
            supported: VERSION,
        });
    }
    Ok((header, &bytes[nl + 1..]))
}

/// Take a snapshot of a running store. `linearized`: first wait until everything
/// committed cluster-wide has applied here (needs a leader); otherwise this
/// replica's own applied state.
pub async fn take(
    store: &Store,
    join_token: Option<String>,
    linearized: bool,
) -> Result<Backup, StoreError> {
    let data = if linearized {
        store.dump().await?
    } else {
        store.dump_local().await?
    };
    Ok(Backup::from_state(data, join_token))
}

/// Write `bytes` to `path` readable by the owner only, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    skiff_common::fs::write_private(path, bytes)
        .map_err(|(path, source)| BackupError::Io { path, source })
}

/// What a restore made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub node_id: u64,
    /// The index the new Raft log starts after (the snapshot's).
    pub applied: u64,
    pub keys: usize,
}

/// Build a new data dir at `data_dir` holding `backup` as a one-voter cluster whose
/// member is a new node reachable by peers at `peer_addr` (start `skiff server`
/// with the same `--peer-addr`). Refuses a data dir that exists and is not empty.
pub fn restore(backup: &Backup, data_dir: &Path, peer_addr: &str) -> Result<Restored, BackupError> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty {
                    path: data_dir.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(data_dir)(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let node_id = loop {
        let id = rand::random::<u64>() >> 1;
        if id != 0 {
            break id;
        }
    };
    {
        let dir = DataDir::open(data_dir)?;
        let storage = dir.storage()?;
        let data = SnapshotData {
            applied: backup.applied,
            kvs: backup.kvs.clone(),
            peers: BTreeMap::from([(node_id, peer_addr.to_string())]),
        };
        let cs = ConfState {
            voters: vec![node_id],
            ..Default::default()
        };
        let mut meta = SnapshotMetadata {
            index: backup.applied,
            term: 1,
            ..Default::default()
        };
        meta.set_conf_state(cs.clone());
        let meta_bytes = meta.write_to_bytes().map_err(|e| StoreError::Decode {
            what: "snapshot metadata",
            reason: e.to_string(),
        })?;
        // The same steps as installing a snapshot from a leader: state machine
        // first (with the metadata), then the log starts after its index.
        let sm = storage.state_machine();
        sm.restore(&data, &meta_bytes)?;
        storage.reset_to(backup.applied, 1, &cs)?;
        storage.flush()?;
        storage.set_node_id(node_id)?;
    }
    if let Some(token) = &backup.join_token {
        write_private(
            &data_dir.join("join-token"),
            format!("{token}\n").as_bytes(),
        )?;
    }
    format::write(data_dir)?;
    Ok(Restored {
        node_id,
        applied: backup.applied,
        keys: backup.kvs.len(),
    })
}

/// Scheduled snapshots of a server's own applied state.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub every: Duration,
    /// Newest snapshots kept (0: all).
    pub retention: usize,
    pub dir: PathBuf,
}

const SCHEDULED_PREFIX: &str = "skiff-snapshot-";
const SCHEDULED_SUFFIX: &str = ".snap";

/// File name of a scheduled snapshot: UTC time first, so name order is age order.
fn scheduled_name(created: u64, applied: u64) -> String {
    let ts = i64::try_from(created)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!(
        "{SCHEDULED_PREFIX}{}-r{applied}{SCHEDULED_SUFFIX}",
        ts.strftime("%Y%m%dT%H%M%SZ")
    )
}

/// Write one scheduled snapshot into `dir` and drop the oldest beyond `retention`.
pub fn write_scheduled(
    dir: &Path,
    backup: &Backup,
    retention: usize,
) -> Result<PathBuf, BackupError> {
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    let path = dir.join(scheduled_name(backup.created, backup.applied));
    write_private(&path, &backup.encode())?;
    if retention > 0 {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(SCHEDULED_PREFIX) && n.ends_with(SCHEDULED_SUFFIX))
            .collect();
        names.sort();
        let drop = names.len().saturating_sub(retention);
        for old in &names[..drop] {
            let p = dir.join(old);
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    Ok(path)
}

/// Take a snapshot every `schedule.every` until the task is dropped.
pub async fn run_schedule(store: Store, join_token: String, schedule: Schedule) {
    tracing::info!(every = ?schedule.every, retention = schedule.retention, dir = %schedule.dir.display(), "scheduled snapshots");
    let mut timer = tokio::time::interval(schedule.every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await; // the first tick is immediate
    loop {
        timer.tick().await;
        let backup = match take(&store, Some(join_token.clone()), false).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "scheduled snapshot failed");
                continue;
            }
        };
        let (dir, retention) = (schedule.dir.clone(), schedule.retention);
        let written =
            tokio::task::spawn_blocking(move || write_scheduled(&dir, &backup, retention)).await;
        match written {
            Ok(Ok(path)) => tracing::info!(path = %path.display(), "snapshot written"),
            Ok(Err(e)) => tracing::warn!(error = %e, "scheduled snapshot failed"),
            Err(e) => tracing::warn!(error = %e, "scheduled snapshot task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            applied: 42,
            created: 1_700_000_000,
            kvs: vec![KeyValue {
                key: "/core/configmaps/default/a".into(),
                value: b"{\"data\":{}}".to_vec(),
                create_revision: 7,
                mod_revision: 40,
            }],
            join_token: Some("tok".into()),
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let b = sample();
        let bytes = b.encode();
        assert_eq!(Backup::decode(&bytes).unwrap(), b);
        let h = header(&bytes).unwrap();
        assert_eq!((h.version, h.applied, h.keys), (VERSION, 42, 1));

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = Backup::decode(&flipped).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");

        let err = Backup::decode(&bytes[..bytes.len() - 3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");

        assert!(matches!(
            Backup::decode(b"hello\nworld"),
            Err(BackupError::NotASnapshot(_))
        ));
    }

    #[test]
    fn newer_format_is_refused() {
        let bytes = sample().encode();
        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        let mut h: Header = serde_json::from_slice(&bytes[..nl]).unwrap();
        h.version = VERSION + 1;
        let mut newer = serde_json::to_vec(&h).unwrap();
        newer.extend_from_slice(&bytes[nl..]);
        assert!(matches!(
            Backup::decode(&newer),
            Err(BackupError::TooNew { found, supported }) if found == VERSION + 1 && supported == VERSION
        ));
    }

    #[test]
    fn restore_starts_the_log_past_the_snapshot() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("d");
        let r = restore(&sample(), &d, "127.0.0.1:1").unwrap();
        assert_eq!(r.applied, 42);
        assert_eq!(format::read(&d).unwrap(), Some(format::CURRENT));
        assert_eq!(
            std::fs::read_to_string(d.join("join-token")).unwrap(),
            "tok\n"
        );
        {
            let dir = DataDir::open(&d).unwrap();
            let st = dir.storage().unwrap();
            assert_eq!(st.node_id().unwrap(), Some(r.node_id));
            assert_eq!(raft::Storage::first_index(&st).unwrap(), 43);
            assert_eq!(raft::Storage::last_index(&st).unwrap(), 42);
            assert_eq!(st.conf_state().voters, vec![r.node_id]);
            let sm = st.state_machine();
            assert_eq!(sm.applied().unwrap(), 42);
            let kv = sm.get("/core/configmaps/default/a").unwrap().unwrap();
            assert_eq!((kv.create_revision, kv.mod_revision), (7, 40));
            assert_eq!(
                sm.peers().unwrap(),
                BTreeMap::from([(r.node_id, "127.0.0.1:1".to_string())])
            );
        }
        // Again into the same (now non-empty) dir: refused.
        assert!(matches!(
            restore(&sample(), &d, "127.0.0.1:1"),
            Err(BackupError::NotEmpty { .. })
        ));
    }

    #[test]
    fn scheduled_snapshots_keep_the_newest() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("snaps");
        let mut b = sample();
        for i in 0..4 {
            b.created = 1_700_000_000 + i * 3600;
            b.applied = 42 + i;
            write_scheduled(&dir, &b, 2).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "skiff-snapshot-20231115T001320Z-r44.snap",
                "skiff-snapshot-20231115T011320Z-r45.snap",
            ]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(&names[1]))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
