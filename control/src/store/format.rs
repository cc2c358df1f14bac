//! The data dir's format version: `<data-dir>/format`, one integer, written on first
//! start and checked on every open.
//!
//! **A binary opens a data dir of its own format or an older one (migrating it and
//! then writing its own number); a data dir of a newer format is refused with an
//! error naming both versions, before anything in it is touched.** A data dir from
//! before this file existed that already holds a store is format 1.

use std::path::Path;

use super::error::StoreError;

/// The format this binary writes.
pub const CURRENT: u32 = 1;
/// The format of a data dir that holds a store but no `format` file.
const LEGACY: u32 = 1;
/// The file, relative to the data dir.
pub const FILE: &str = "format";

/// What to do with a data dir, given what it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A new data dir: write `CURRENT`.
    Stamp,
    /// Already this binary's format.
    Current,
    /// An older format: run the migrations from `from` up to `CURRENT`, then stamp.
    Migrate { from: u32 },
    /// A newer format than this binary knows: refuse.
    TooNew { found: u32 },
}

/// Decide from the recorded version (None: no `format` file) and whether the data
/// dir already holds a store.
pub fn decide(recorded: Option<u32>, has_store: bool, current: u32) -> Decision {
    match recorded {
        None if !has_store => Decision::Stamp,
        None => Decision::Migrate { from: LEGACY },
        Some(v) if v == current => Decision::Current,
        Some(v) if v < current => Decision::Migrate { from: v },
        Some(v) => Decision::TooNew { found: v },
    }
}

/// The version recorded in `data_dir`, if any.
pub fn read(data_dir: &Path) -> Result<Option<u32>, StoreError> {
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                path,
                reason: format!("format file holds {:?}, not a version number", s.trim()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::OpenDataDir {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Record `CURRENT` in `data_dir` (atomically).
pub fn write(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(FILE);
    let fail = |e: std::io::Error| StoreError::OpenDataDir {
        path: path.clone(),
        reason: e.to_string(),
    };
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        f.write_all(format!("{CURRENT}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(fail)?;
    }
    std::fs::rename(&tmp, &path).map_err(fail)
}

/// Check the data dir's format and bring it to `CURRENT`; refuse a newer one.
/// Call before anything else in the data dir is read or written.
pub fn ensure(data_dir: &Path) -> Result<(), StoreError> {
    let has_store = data_dir.join("store").exists();
    match decide(read(data_dir)?, has_store, CURRENT) {
        Decision::Current => Ok(()),
        Decision::Stamp => write(data_dir),
        Decision::Migrate { from } => {
            migrate(data_dir, from)?;
            tracing::info!(from, to = CURRENT, data_dir = %data_dir.display(), "data dir format upgraded");
            write(data_dir)
        }
        Decision::TooNew { found } => Err(StoreError::FormatTooNew {
            path: data_dir.to_path_buf(),
            found,
            supported: CURRENT,
        }),
    }
}

/// Steps from each older format to the next (a step `n` turns format `n` into
/// `n + 1`). Format 1 is the first, so there is no step yet; a format 2 adds
/// `1 => to_v2(data_dir)?` here.
fn migrate(_data_dir: &Path, from: u32) -> Result<(), StoreError> {
    if let Some(version) = (from..CURRENT).next() {
        return Err(StoreError::Invalid(format!(
            "no migration from data dir format {version}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert_eq!(decide(None, false, 1), Decision::Stamp);
        assert_eq!(decide(None, true, 1), Decision::Migrate { from: 1 });
        assert_eq!(decide(None, true, 3), Decision::Migrate { from: 1 });
        assert_eq!(decide(Some(1), true, 1), Decision::Current);
        assert_eq!(decide(Some(1), false, 1), Decision::Current);
        assert_eq!(decide(Some(2), true, 3), Decision::Migrate { from: 2 });
        assert_eq!(decide(Some(2), true, 1), Decision::TooNew { found: 2 });
        assert_eq!(decide(Some(9), false, 1), Decision::TooNew { found: 9 });
    }

    #[test]
    fn ensure_stamps_upgrades_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // New dir: stamped.
        ensure(d).unwrap();
        assert_eq!(read(d).unwrap(), Some(CURRENT));
        // Legacy dir (a store, no file): treated as 1 and stamped.
        std::fs::remove_file(d.join(FILE)).unwrap();
        std::fs::create_dir(d.join("store")).unwrap();
        ensure(d).unwrap();
        assert_eq!(read(d).unwrap(), Some(CURRENT));
        // Newer: refused, naming both versions, and the file is left alone.
        std::fs::write(d.join(FILE), format!("{}\n", CURRENT + 1)).unwrap();
        let err = ensure(d).unwrap_err().to_string();
        assert!(
            err.contains(&format!("format version {}", CURRENT + 1)),
            "{err}"
        );
        assert!(
            err.contains(&format!("supports format version {CURRENT}")),
            "{err}"
        );
        assert_eq!(read(d).unwrap(), Some(CURRENT + 1));
        // Garbage: corrupt, not silently rewritten.
        std::fs::write(d.join(FILE), "two\n").unwrap();
        assert!(matches!(ensure(d), Err(StoreError::Corrupt { .. })));
    }
}
