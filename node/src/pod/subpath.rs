//! `subPath` resolved beneath its volume without following a symlink (the
//! CVE-2017-1002101 pattern: a container plants `escape -> /` in a shared
//! volume and a second mount's sub-path walks through it), as the kubelet
//! does: one component at a time with `openat(O_PATH | O_NOFOLLOW)`, missing
//! directories of an emptyDir made with `mkdirat`, and the descriptor of the
//! end (not its path) handed on, so nothing can swap a component for a
//! symlink between the check and the mount.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

/// What a sub-path resolved to.
pub struct Resolved {
    /// An `O_PATH` descriptor of the sub-path's end.
    pub fd: OwnedFd,
    pub is_dir: bool,
}

fn flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Symlinks followed in one sub-path at most (as the kernel's limit).
const MAX_LINKS: usize = 40;

/// Open `sub` beneath the directory `root`; `create` makes missing
/// directories (emptyDir). A symlink is followed only while it stays
/// beneath `root` (a relative target, `..` never above `root`), as the
/// kubelet allows (a configMap's keys are symlinks into `..data`); an
/// absolute target, an escape, `..` in `sub` or an absolute `sub` is an
/// error naming it.
pub fn open_beneath(root: &Path, sub: &str, create: bool) -> Result<Resolved, String> {
    let root_fd = open(root, flags() | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| format!("open volume {}: {e}", root.display()))?;
    let mut todo: std::collections::VecDeque<std::ffi::OsString> = Default::default();
    for comp in Path::new(sub).components() {
        let Component::Normal(name) = comp else {
            return Err(format!("subPath {sub:?} must be relative, without '..'"));
        };
        todo.push_back(name.to_os_string());
    }
    // The directories walked (the root first) and their names.
    let mut dirs: Vec<OwnedFd> = vec![root_fd];
    let mut walked: Vec<std::ffi::OsString> = Vec::new();
    let mut end: Option<OwnedFd> = None;
    let mut links = 0;
    let shown = |walked: &[std::ffi::OsString], name: &OsStr| {
        let mut p: std::path::PathBuf = walked.iter().collect();
        p.push(name);
        p.display().to_string()
    };
    while let Some(name) = todo.pop_front() {
        if let Some(fd) = end.take() {
            // Something follows a file.
            drop(fd);
            return Err(format!(
                "subPath {sub:?}: {} is not a directory",
                shown(&walked, OsStr::new(""))
            ));
        }
        if name == ".." {
            if dirs.len() <= 1 {
                return Err(format!(
                    "subPath {sub:?} leads out of its volume through a symlink"
                ));
            }
            dirs.pop();
            walked.pop();
            continue;
        }
        if name == "." || name.is_empty() {
            continue;
        }
        let parent = dirs.last().expect("the root is always there");
        let next = match openat(parent, name.as_os_str(), flags(), Mode::empty()) {
            Ok(f) => f,
            Err(Errno::ENOENT) if create => {
                make_dir(parent, &name, &shown(&walked, &name))?;
                openat(parent, name.as_os_str(), flags(), Mode::empty())
                    .map_err(|e| format!("open {}: {e}", shown(&walked, &name)))?
            }
            Err(e) => return Err(format!("subPath {sub:?}: {}: {e}", shown(&walked, &name))),
        };
        let st = fstat(&next).map_err(|e| format!("stat {}: {e}", shown(&walked, &name)))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            links += 1;
            let target = nix::fcntl::readlinkat(parent, name.as_os_str())
                .map_err(|e| format!("read the symlink {}: {e}", shown(&walked, &name)))?;
            let target = Path::new(&target);
            if links > MAX_LINKS || target.is_absolute() {
                return Err(format!(
                    "subPath {sub:?} goes through the symlink {:?} to {}; a sub-path must stay inside its volume",
                    shown(&walked, &name),
                    target.display()
                ));
            }
            for c in target.components().rev() {
                todo.push_front(c.as_os_str().to_os_string());
            }
            continue;
        }
        if kind == SFlag::S_IFDIR {
            dirs.push(next);
            walked.push(name);
        } else {
            walked.push(name);
            end = Some(next);
        }
    }
    match end {
        Some(fd) => Ok(Resolved { fd, is_dir: false }),
        None => Ok(Resolved {
            fd: dirs.pop().expect("the root is always there"),
            is_dir: true,
        }),
    }
}

fn make_dir(parent: &OwnedFd, name: &OsStr, shown: &str) -> Result<(), String> {
    match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("create {shown}: {e}")),
    }
}

/// The path of an open descriptor through `/proc/self/fd` (a bind mount's
/// source: the kernel mounts what the descriptor is, not what a path now is).
pub fn proc_path(fd: &OwnedFd) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_beneath_their_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir_all(vol.join("a/b")).unwrap();
        std::fs::write(vol.join("a/file"), "x").unwrap();
        std::os::unix::fs::symlink("/", vol.join("escape")).unwrap();
        std::os::unix::fs::symlink("a", vol.join("inside")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("a/up")).unwrap();
        std::os::unix::fs::symlink("a/file", vol.join("key")).unwrap();

        assert!(open_beneath(&vol, "a/b", false).unwrap().is_dir);
        assert!(!open_beneath(&vol, "a/file", false).unwrap().is_dir);
        // Symlinks that stay inside are followed (a configMap key's link).
        let inside = open_beneath(&vol, "inside/b", false).unwrap();
        assert_eq!(
            std::fs::read_link(proc_path(&inside.fd)).unwrap(),
            vol.join("a/b")
        );
        assert!(!open_beneath(&vol, "key", false).unwrap().is_dir);
        for bad in [
            "escape",
            "escape/etc",
            "a/up",
            "a/up/x",
            "../vol/a",
            "/etc",
            "a/file/x",
        ] {
            let e = open_beneath(&vol, bad, true).err().unwrap_or_default();
            assert!(!e.is_empty(), "{bad} resolved");
        }
        assert!(
            open_beneath(&vol, "escape/etc", true)
                .err()
                .unwrap()
                .contains("symlink \"escape\"")
        );
        // An emptyDir's missing directories are made, beneath it.
        let r = open_beneath(&vol, "new/deeper", true).unwrap();
        assert!(r.is_dir && vol.join("new/deeper").is_dir());
        assert!(open_beneath(&vol, "missing", false).is_err());
        // Nothing was made through the symlink.
        assert!(!Path::new("/etc/deeper").exists());
        assert_eq!(
            std::fs::read_link(proc_path(&r.fd)).unwrap(),
            vol.join("new/deeper")
        );
    }
}
