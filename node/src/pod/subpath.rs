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

/// Open `sub` beneath the directory `root`; `create` makes missing
/// directories (emptyDir). A symlink anywhere, `..`, or an absolute path is
/// an error naming it.
pub fn open_beneath(root: &Path, sub: &str, create: bool) -> Result<Resolved, String> {
    let mut fd = open(root, flags() | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| format!("open volume {}: {e}", root.display()))?;
    let mut walked = std::path::PathBuf::new();
    let mut is_dir = true;
    for comp in Path::new(sub).components() {
        let Component::Normal(name) = comp else {
            return Err(format!("subPath {sub:?} must be relative, without '..'"));
        };
        walked.push(name);
        let next = match openat(&fd, name, flags(), Mode::empty()) {
            Ok(f) => f,
            Err(Errno::ENOENT) if create => {
                make_dir(&fd, name, &walked)?;
                openat(&fd, name, flags(), Mode::empty())
                    .map_err(|e| format!("open {}: {e}", walked.display()))?
            }
            Err(Errno::ENOTDIR) => {
                return Err(format!(
                    "subPath {sub:?}: {} is not a directory",
                    walked.parent().unwrap_or(&walked).display()
                ));
            }
            Err(e) => return Err(format!("subPath {sub:?}: {}: {e}", walked.display())),
        };
        let st = fstat(&next).map_err(|e| format!("stat {}: {e}", walked.display()))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            return Err(format!(
                "subPath {sub:?} goes through the symlink {:?}; a sub-path must stay inside its volume",
                walked.display().to_string()
            ));
        }
        is_dir = kind == SFlag::S_IFDIR;
        fd = next;
    }
    Ok(Resolved { fd, is_dir })
}

fn make_dir(parent: &OwnedFd, name: &OsStr, walked: &Path) -> Result<(), String> {
    match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("create {}: {e}", walked.display())),
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

        assert!(open_beneath(&vol, "a/b", false).unwrap().is_dir);
        assert!(!open_beneath(&vol, "a/file", false).unwrap().is_dir);
        for bad in ["escape", "escape/etc", "inside/b", "../vol/a", "/etc"] {
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
