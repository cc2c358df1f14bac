//! A disk a test can slow down: an ext4 file system on a loop device of a
//! file of the test's own, mounted on a directory of the test's, and a
//! block-I/O cgroup that throttles writes to that device (cgroup v1
//! `blkio.throttle.write_iops_device`, or v2 `io.max`). A process moved into
//! the cgroup writes at the given rate until it is moved back out.
//!
//! **Everything is undone on drop, even when the test failed: processes go
//! back to the root cgroup, the cgroup is removed, the file system
//! unmounted, the loop device detached and its file removed.**

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub struct SlowDisk {
    image: PathBuf,
    mount: PathBuf,
    device: String,
    /// `major:minor` of the loop device.
    dev: String,
    cgroup: PathBuf,
    /// The root cgroup processes go back to.
    root: PathBuf,
    v2: bool,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl SlowDisk {
    /// A `size_mb` disk mounted on `mount` (created if missing).
    pub fn new(mount: &Path, size_mb: u64) -> Result<SlowDisk> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("skiff-test-slow-{}-{n}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/blkio");
        let (root, v2) = if v1.join("blkio.throttle.write_iops_device").exists() {
            (v1.to_path_buf(), false)
        } else if Path::new("/sys/fs/cgroup/cgroup.subtree_control").exists() {
            (PathBuf::from("/sys/fs/cgroup"), true)
        } else {
            bail!("no block-I/O cgroup controller on this host");
        };
        let image = std::env::temp_dir().join(format!("{name}.img"));
        std::fs::File::create(&image)?.set_len(size_mb << 20)?;
        let mut disk = SlowDisk {
            image,
            mount: mount.to_path_buf(),
            device: String::new(),
            dev: String::new(),
            cgroup: root.join(&name),
            root,
            v2,
        };
        disk.device = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&disk.image))?;
        let base = disk.device.trim_start_matches("/dev/");
        disk.dev = std::fs::read_to_string(format!("/sys/block/{base}/dev"))?
            .trim()
            .to_string();
        run(Command::new("mkfs.ext4").args(["-q", &disk.device]))?;
        std::fs::create_dir_all(mount)?;
        nix::mount::mount(
            Some(disk.device.as_str()),
            mount,
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting the slow disk")?;
        if v2 {
            let _ = std::fs::write(disk.root.join("cgroup.subtree_control"), "+io");
        }
        std::fs::create_dir_all(&disk.cgroup)?;
        Ok(disk)
    }

    /// Throttle writes of the disk's cgroup to `iops` per second.
    pub fn limit(&self, iops: u32) -> Result<()> {
        let (file, line) = if self.v2 {
            ("io.max", format!("{} wiops={iops}", self.dev))
        } else {
            (
                "blkio.throttle.write_iops_device",
                format!("{} {iops}", self.dev),
            )
        };
        std::fs::write(self.cgroup.join(file), line)
            .with_context(|| format!("{}", self.cgroup.join(file).display()))
    }

    /// Move process `pid` (all its threads) into the throttled cgroup.
    pub fn slow(&self, pid: u32) -> Result<()> {
        std::fs::write(self.cgroup.join("cgroup.procs"), pid.to_string())
            .context("moving a process onto the slow disk's cgroup")
    }

    /// Move it back to the root cgroup.
    pub fn fast(&self, pid: u32) -> Result<()> {
        std::fs::write(self.root.join("cgroup.procs"), pid.to_string())
            .context("moving a process back to the root cgroup")
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.cgroup.join("cgroup.procs")) {
            for p in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), p);
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        if !self.device.is_empty() {
            let _ = Command::new("losetup").args(["-d", &self.device]).output();
        }
        let _ = std::fs::remove_file(&self.image);
    }
}
