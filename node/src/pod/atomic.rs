//! The kubelet's atomic writer for configMap, secret, downward API and
//! projected volumes: a payload is written whole into a new timestamped
//! directory (`..2026_12_07_01_52_00.123456789`), `..data` is switched to it
//! by one rename, and each top-level name is a symlink `name -> ..data/name`;
//! the old directory goes last. A reader sees the old payload or the new,
//! never a mix, and only names this writer made are ever removed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

fn io(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

/// Whether `rel` is a plain relative path (no `..`, not absolute).
fn plain(rel: &Path) -> bool {
    !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)))
}

/// The payload `..data` shows now, if it is exactly `files`.
fn unchanged(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) -> bool {
    let data = dir.join(DATA);
    if !data.is_dir() {
        return false;
    }
    let mut seen = 0usize;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(data.join(&rel)) else {
            return false;
        };
        for e in entries.flatten() {
            let r = rel.join(e.file_name());
            if e.path().is_dir() {
                stack.push(r);
            } else {
                seen += 1;
                if std::fs::read(e.path()).ok().as_ref() != files.get(&r) {
                    return false;
                }
            }
        }
    }
    seen == files.len()
}

fn timestamped() -> String {
    let now = jiff::Timestamp::now();
    format!(
        "..{}.{:09}",
        now.strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    )
}

/// Make `dir` show exactly `files` (paths relative to it), atomically.
pub fn write(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    if let Some(bad) = files
        .keys()
        .find(|p| !plain(p) || p.to_string_lossy().starts_with(".."))
    {
        return Err(format!("invalid path {:?} in the volume", bad.display()));
    }
    if unchanged(dir, files) {
        return Ok(());
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let ts = timestamped();
    let staged = dir.join(&ts);
    for (rel, bytes) in files {
        let path = staged.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| io("write", &path, e))?;
    }
    std::fs::create_dir_all(&staged).map_err(|e| io("create", &staged, e))?;
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp).map_err(|e| io("link", &tmp, e))?;
    std::fs::rename(&tmp, dir.join(DATA)).map_err(|e| io("switch", &dir.join(DATA), e))?;
    // The names users see: one symlink per top-level entry.
    let top: BTreeSet<OsString> = files
        .keys()
        .filter_map(|p| p.components().next())
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    for name in &top {
        let link = dir.join(name);
        let target = Path::new(DATA).join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
            continue;
        }
        let tmp = dir.join(format!("..{}.tmp", name.to_string_lossy()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| io("link", &tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| io("link", &link, e))?;
    }
    // Names this writer made that the payload no longer has, then the old
    // payload. Anything else in the directory is left alone.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let ours = std::fs::read_link(e.path())
                .is_ok_and(|t| t.starts_with(DATA) && t.components().count() == 2);
            if ours && !top.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != ts.as_str()) {
        let old_dir = dir.join(&old);
        if old.to_string_lossy().starts_with("..") && plain(&old) {
            let _ = std::fs::remove_dir_all(old_dir);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str)]) -> BTreeMap<PathBuf, Vec<u8>> {
        items
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn payloads_switch_whole_and_only_our_names_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("stranger"), "not ours").unwrap();
        write(dir, &payload(&[("a", "1"), ("sub/b", "2")])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(dir.join(DATA)).unwrap();

        // The same payload changes nothing.
        write(dir, &payload(&[("a", "1"), ("sub/b", "2")])).unwrap();
        assert_eq!(std::fs::read_link(dir.join(DATA)).unwrap(), first);

        // A new payload: a new directory, `..data` switched, `sub` gone, the
        // old directory removed, the stranger kept.
        write(dir, &payload(&[("a", "3"), ("c", "4")])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "4");
        assert!(!dir.join("sub").exists());
        assert!(!dir.join(&first).exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("stranger")).unwrap(),
            "not ours"
        );
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".."))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(write(dir, &payload(&[("../x", "no")])).is_err());
        assert!(write(dir, &payload(&[("..data", "no")])).is_err());
    }
}
