//! Pod IP allocation within the node's pod CIDR: one file per address under the
//! agent's data dir, created exclusively, holding the owner's key.
//!
//! **An address is given to one pod at a time, and survives an agent restart
//! with its owner (the file is the record).**

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Cidr, NetError};

/// Addresses of one node's pod CIDR: the files are the record, an in-memory
/// index (loaded once) answers lookups without reading the directory.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Cidr,
    /// Address → owner, as on disk.
    index: Arc<Mutex<BTreeMap<Ipv4Addr, String>>>,
    /// Where the next search starts: addresses go round the range, so a freed
    /// one is not handed out again at once.
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Ipam {
    pub fn new(dir: PathBuf, cidr: Cidr) -> Result<Ipam, NetError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| NetError::io(format!("create {}", dir.display()), e))?;
        let mut index = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let Some(ip) = e
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<Ipv4Addr>().ok())
                else {
                    continue;
                };
                if let Ok(owner) = std::fs::read_to_string(e.path())
                    && cidr.contains(ip)
                {
                    index.insert(ip, owner);
                }
            }
        }
        // Carry on round the range after the highest address on record, so an
        // address freed after a restart is not handed out again at once.
        let range = cidr.pod_range();
        let next = index
            .keys()
            .filter_map(|ip| {
                let i = u64::from(u32::from(*ip).wrapping_sub(u32::from(cidr.base)));
                range.contains(&i).then(|| i - range.start + 1)
            })
            .max()
            .unwrap_or(0);
        Ok(Ipam {
            dir,
            cidr,
            index: Arc::new(Mutex::new(index)),
            next: Arc::new(std::sync::atomic::AtomicU64::new(next)),
        })
    }

    pub(crate) fn file(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// The address `owner` holds, if any.
    pub fn held_by(&self, owner: &str) -> Option<Ipv4Addr> {
        self.index
            .lock()
            .expect("ipam")
            .iter()
            .find_map(|(ip, o)| (o == owner).then_some(*ip))
    }

    /// Every (address, owner) on record in this CIDR.
    pub fn all(&self) -> Vec<(Ipv4Addr, String)> {
        self.index
            .lock()
            .expect("ipam")
            .iter()
            .map(|(ip, o)| (*ip, o.clone()))
            .collect()
    }

    /// The address of `owner`: the one it holds, or the lowest free one.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, NetError> {
        match self.held_by(owner) {
            Some(ip) => Ok(ip),
            None => self.claim_new(owner),
        }
    }

    /// The next free address round the range, recorded for `owner` (which may
    /// hold others).
    pub fn claim_new(&self, owner: &str) -> Result<Ipv4Addr, NetError> {
        use std::sync::atomic::Ordering;
        let range = self.cidr.pod_range();
        let len = range.end.saturating_sub(range.start);
        let start = self.next.load(Ordering::Relaxed);
        let mut index = self.index.lock().expect("ipam");
        for k in 0..len {
            let i = range.start + (start + k) % len;
            let Some(ip) = self.cidr.nth(i) else { break };
            if index.contains_key(&ip) {
                continue;
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.file(ip))
            {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes())
                        .map_err(|e| NetError::io("record pod address", e))?;
                    index.insert(ip, owner.to_string());
                    self.next
                        .store((i - range.start + 1) % len, Ordering::Relaxed);
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(NetError::io("record pod address", e)),
            }
        }
        Err(NetError::Exhausted(self.cidr.to_string()))
    }

    /// Hand `ip` from `from` to `to` (atomically replacing the record); false if
    /// `from` does not hold it.
    pub fn reassign(&self, ip: Ipv4Addr, from: &str, to: &str) -> bool {
        let mut index = self.index.lock().expect("ipam");
        if index.get(&ip).map(String::as_str) != Some(from) {
            return false;
        }
        let file = self.file(ip);
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, to).is_ok() && std::fs::rename(&tmp, &file).is_ok() {
            index.insert(ip, to.to_string());
            return true;
        }
        false
    }

    /// Forget `ip`, whoever holds it.
    pub fn forget(&self, ip: Ipv4Addr) {
        let mut index = self.index.lock().expect("ipam");
        let _ = std::fs::remove_file(self.file(ip));
        index.remove(&ip);
    }

    /// Give back whatever `owner` holds.
    pub fn release(&self, owner: &str) {
        for (ip, o) in self.all() {
            if o == owner {
                self.forget(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_release_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path().into(), "10.88.9.0/30".parse().unwrap()).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 88, 9, 2));
        assert_eq!(
            ipam.allocate("pod-a").unwrap(),
            a,
            "same owner, same address"
        );
        assert!(matches!(
            ipam.allocate("pod-b"),
            Err(NetError::Exhausted(_))
        ));
        ipam.release("pod-a");
        assert_eq!(ipam.allocate("pod-b").unwrap(), a, "the only free one");
        assert!(ipam.reassign(a, "pod-b", "pod-c"));
        assert!(
            !ipam.reassign(a, "pod-b", "pod-d"),
            "only the holder hands it on"
        );
        assert_eq!(ipam.held_by("pod-c"), Some(a));
        let wide = Ipam::new(dir.path().join("w"), "10.88.9.0/29".parse().unwrap()).unwrap();
        let first = wide.allocate("x").unwrap();
        wide.release("x");
        let reopened = Ipam::new(dir.path().join("w"), "10.88.9.0/29".parse().unwrap()).unwrap();
        let _keep = reopened.allocate("y").unwrap();
        let again = Ipam::new(dir.path().join("w"), "10.88.9.0/29".parse().unwrap()).unwrap();
        reopened.release("y");
        assert_ne!(
            again.allocate("z").unwrap(),
            first,
            "goes on round the range after a restart"
        );
    }
}
