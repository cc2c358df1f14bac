//! Pod IP allocation within the node's pod CIDR: one file per address under the
//! agent's data dir, created exclusively, holding the owner's key.
//!
//! **An address is given to one pod at a time, and survives an agent restart
//! with its owner (the file is the record).**

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::{Cidr, NetError};

/// Addresses of one node's pod CIDR.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Cidr,
}

impl Ipam {
    pub fn new(dir: PathBuf, cidr: Cidr) -> Result<Ipam, NetError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| NetError::io(format!("create {}", dir.display()), e))?;
        Ok(Ipam { dir, cidr })
    }

    fn file(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// The address `owner` holds, if any.
    pub fn held_by(&self, owner: &str) -> Option<Ipv4Addr> {
        self.all()
            .into_iter()
            .find_map(|(ip, o)| (o == owner).then_some(ip))
    }

    /// Every (address, owner) on record in this CIDR.
    pub fn all(&self) -> Vec<(Ipv4Addr, String)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .filter_map(|e| {
                let ip: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                let owner = std::fs::read_to_string(e.path()).ok()?;
                self.cidr.contains(ip).then_some((ip, owner))
            })
            .collect()
    }

    /// The address of `owner`: the one it holds, or the lowest free one.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = self.held_by(owner) {
            return Ok(ip);
        }
        for i in self.cidr.pod_range() {
            let Some(ip) = self.cidr.nth(i) else { break };
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.file(ip))
            {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes())
                        .map_err(|e| NetError::io("record pod address", e))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(NetError::io("record pod address", e)),
            }
        }
        Err(NetError::Exhausted(self.cidr.to_string()))
    }

    /// Give back whatever `owner` holds.
    pub fn release(&self, owner: &str) {
        for (ip, o) in self.all() {
            if o == owner {
                let _ = std::fs::remove_file(self.file(ip));
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
        assert_eq!(ipam.allocate("pod-b").unwrap(), a);
    }
}
