//! Mounts a node left under its directories (containers' root filesystems of
//! an agent that died): found in `/proc/self/mountinfo`, detached deepest
//! first.
//!
//! **Only mount points strictly below the given directory are chosen, never the
//! directory itself (it may be a disk the admin mounted there).**

use std::path::{Path, PathBuf};

/// The mount points in `mountinfo` strictly below `dir`, deepest first. A mount
/// point whose directory was deleted (`…//deleted`) still counts.
pub fn below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| {
            let m = unescape(m);
            PathBuf::from(m.strip_suffix("//deleted").unwrap_or(&m))
        })
        .filter(|m| m != dir && m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Undo mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detach every mount below `dir`; returns the ones detached.
pub fn detach_below(dir: &Path) -> Vec<PathBuf> {
    detach_below_but(dir, &|_| false)
}

/// [`detach_below`], leaving the mount points `keep` wants.
pub fn detach_below_but(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    below(&text, dir)
        .into_iter()
        .filter(|m| !keep(m))
        .filter(|m| nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH).is_ok())
        .collect()
}

/// Secret, projected and `medium: Memory` emptyDir volumes in memory: a
/// tmpfs on each volume directory (nosuid, nodev, noexec, of the size
/// asked).
pub struct Tmpfs;

impl crate::pod::volumes::VolumeMedia for Tmpfs {
    /// `size` 0: the tmpfs default (half the node's memory).
    fn memory(&self, dir: &Path, size: u64) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
        let parent = dir.parent().unwrap_or(dir);
        match (dev(dir), dev(parent)) {
            // Already a mount point (set up before an agent restart).
            (Ok(a), Ok(b)) if a != b => return Ok(()),
            (Err(e), _) | (_, Err(e)) => return Err(format!("{}: {e}", dir.display())),
            _ => {}
        }
        use nix::mount::{MsFlags, mount};
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(
                if size > 0 {
                    format!("mode=0755,size={size}")
                } else {
                    "mode=0755".to_string()
                }
                .as_str(),
            ),
        )
        .map_err(|e| format!("mount a tmpfs on {}: {e}", dir.display()))
    }

    /// Bind-mount the descriptor (not a path) onto `target`, replacing an
    /// earlier pin of the same mount (a restarted container).
    fn pin(
        &self,
        source: &crate::pod::subpath::Resolved,
        target: &Path,
    ) -> Result<PathBuf, String> {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let _ = umount2(target, MntFlags::MNT_DETACH);
        let made = if source.is_dir {
            std::fs::create_dir_all(target)
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(target)
                .map(drop)
        };
        made.map_err(|e| format!("{}: {e}", target.display()))?;
        mount(
            Some(&crate::pod::subpath::proc_path(&source.fd)),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind the sub-path onto {}: {e}", target.display()))?;
        Ok(target.to_path_buf())
    }

    fn release(&self, dir: &Path) {
        detach_below(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_table() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/sda1 rw
90 22 0:50 / /d/agent rw - ext4 /dev/sdb rw
91 90 0:51 / /d/agent/containerd/state/t/ns/a/rootfs rw - overlay overlay rw
92 90 0:52 / /d/agent/containerd/state/t/ns/b/rootfs//deleted rw - overlay overlay rw
93 91 0:53 / /d/agent/containerd/state/t/ns/a/rootfs/proc rw - proc proc rw
94 22 0:54 / /d/agent2/x rw - tmpfs tmpfs rw
95 22 0:55 / /d/agent/with\\040space rw - tmpfs tmpfs rw
";
        let got = below(info, Path::new("/d/agent"));
        let got: Vec<&str> = got.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            got,
            vec![
                "/d/agent/containerd/state/t/ns/a/rootfs/proc",
                "/d/agent/containerd/state/t/ns/a/rootfs",
                "/d/agent/containerd/state/t/ns/b/rootfs",
                "/d/agent/with space",
            ]
        );
    }
}
