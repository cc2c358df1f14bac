//! IPv4 CIDRs: parse, contain, and the n-th address.

use std::net::Ipv4Addr;

use super::NetError;

/// An IPv4 network like `10.88.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Cidr, NetError> {
        let bad = |why: &str| NetError::Config(format!("CIDR {s:?}: {why}"));
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| bad("prefix must be 0..=32"))?;
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl Cidr {
    /// How many addresses the network spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// The `i`-th address (0 is the network address).
    pub fn nth(&self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size()).then(|| Ipv4Addr::from(u32::from(self.base) + i as u32))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.base)
    }

    /// The gateway (first host address): the bridge's address.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.nth(1)
    }

    /// Addresses pods may get: after the gateway, before broadcast.
    pub fn pod_range(&self) -> std::ops::Range<u64> {
        2..self.size().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_table() {
        let c: Cidr = "10.88.3.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.88.3.0/24");
        assert_eq!(c.gateway(), Some(Ipv4Addr::new(10, 88, 3, 1)));
        assert_eq!(c.pod_range(), 2..255);
        assert!(c.contains(Ipv4Addr::new(10, 88, 3, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 88, 4, 1)));
        let s: Cidr = "10.88.130.64/26".parse().unwrap();
        assert_eq!(s.nth(2), Some(Ipv4Addr::new(10, 88, 130, 66)));
        assert_eq!(s.nth(64), None);
        for bad in ["10.88.0.0", "10.88.0.0/33", "x/8", "::1/64"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
