//! Network namespaces as `ip netns` keeps them: a bind mount of a namespace
//! under `/run/netns/NAME`, so `ip netns exec` and `ip netns list` see ours.
//!
//! **Entering a namespace happens on a fresh OS thread, never on a runtime
//! thread: `setns` changes only the calling thread, and that thread then ends
//! (or, for a pod's runtime, belongs to the pod for its whole life).**

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

use super::NetError;

/// Where named namespaces live (the `ip netns` convention).
pub const NETNS_DIR: &str = "/run/netns";

/// The path of a named namespace.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Is `path` a mounted namespace (not a left-over empty file)?
pub fn exists(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Make `/run/netns` a mount point with shared propagation, as `ip netns add`
/// does: otherwise the first `ip netns add` re-mounts the directory over our
/// namespace mounts, and they can no longer be removed through their path.
fn share_dir(dir: &Path) -> Result<(), NetError> {
    let shared = || {
        mount(
            Some(""),
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => mount(
            Some(dir),
            dir,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| shared())
        .map_err(|e| NetError::Netns {
            name: NETNS_DIR.into(),
            reason: format!("make {NETNS_DIR} a shared mount: {e}"),
        }),
        Err(e) => Err(NetError::Netns {
            name: NETNS_DIR.into(),
            reason: format!("make {NETNS_DIR} shared: {e}"),
        }),
    }
}

/// Create the namespace `name`, or adopt it if it already exists; true when it
/// is new.
pub fn create(name: &str) -> Result<(PathBuf, bool), NetError> {
    let dir = Path::new(NETNS_DIR);
    std::fs::create_dir_all(dir).map_err(|e| NetError::io(format!("create {NETNS_DIR}"), e))?;
    share_dir(dir)?;
    let target = path(name);
    if exists(&target) {
        return Ok((target, false));
    }
    File::create(&target).map_err(|e| NetError::io(format!("create {}", target.display()), e))?;
    let t = target.clone();
    let made = std::thread::spawn(move || -> nix::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &t,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    })
    .join()
    .map_err(|_| NetError::Netns {
        name: name.into(),
        reason: "namespace thread panicked".into(),
    })?;
    if let Err(e) = made {
        let _ = std::fs::remove_file(&target);
        return Err(NetError::Netns {
            name: name.into(),
            reason: e.to_string(),
        });
    }
    Ok((target, true))
}

/// Remove the namespace `name` (a missing one is fine). The kernel frees it, and
/// the veth end inside it, once nothing holds it any more.
pub fn delete(name: &str) -> Result<(), NetError> {
    let target = path(name);
    if !target.exists() {
        return Ok(());
    }
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetError::Netns {
                name: name.into(),
                reason: format!("unmount: {e}"),
            });
        }
    }
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io(format!("remove {}", target.display()), e)),
    }
}

/// Whether the calling thread is already in the namespace at `path`.
pub fn is_current(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata("/proc/thread-self/ns/net"),
        std::fs::metadata(path),
    ) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Move the calling thread into the namespace at `path` (`setns`, which the
/// kernel serializes and which costs milliseconds: avoid it where a thread can
/// inherit the namespace instead).
pub fn enter(path: &Path) -> Result<(), NetError> {
    if is_current(path) {
        return Ok(());
    }
    let f = File::open(path).map_err(|e| NetError::io(format!("open {}", path.display()), e))?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Netns {
        name: path.display().to_string(),
        reason: format!("setns: {e}"),
    })
}

/// Run `f` on a new thread inside the namespace at `path` and return its result.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let p = path.to_path_buf();
    std::thread::spawn(move || -> Result<T, NetError> {
        enter(&p)?;
        Ok(f())
    })
    .join()
    .map_err(|_| NetError::Netns {
        name: path.display().to_string(),
        reason: "namespace thread panicked".into(),
    })?
}

/// The names of namespaces whose name starts with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}
