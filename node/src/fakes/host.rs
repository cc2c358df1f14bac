//! The recording host: pod network (namespaces, links, addresses, routes,
//! neighbours, resolv.conf), pod cgroups and the nft ruleset, in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{Journal, ready};
use crate::cgroup::{CgroupError, CgroupOps, Cgroups, PodCgroup};
use crate::net::{Cidr, NetError, NetHost, netns};
use crate::proxy::{ProxyError, Ruleset};

/// What the fake host holds now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetState {
    pub namespaces: BTreeSet<String>,
    /// Host links by name → index.
    pub links: BTreeMap<String, u32>,
    /// Namespaces whose eth0 is configured, by path.
    pub configured: BTreeSet<PathBuf>,
    pub resolv: BTreeSet<String>,
    pub routes: BTreeSet<String>,
}

/// The pod network host in memory.
#[derive(Clone)]
pub struct FakeNet {
    pub journal: Journal,
    state: Arc<Mutex<NetState>>,
}

impl FakeNet {
    pub fn new(journal: Journal) -> FakeNet {
        FakeNet {
            journal,
            state: Arc::default(),
        }
    }

    pub fn state(&self) -> NetState {
        self.state.lock().expect("net state").clone()
    }

    /// Pod namespaces, veths and resolv.conf files (what pods leave behind;
    /// the bridge and host routes belong to the node).
    pub fn pod_leftovers(&self, bridge: &str) -> Vec<String> {
        let s = self.state();
        s.namespaces
            .iter()
            .map(|n| format!("netns {n}"))
            .chain(
                s.links
                    .keys()
                    .filter(|l| *l != bridge)
                    .map(|l| format!("link {l}")),
            )
            .chain(s.resolv.iter().map(|r| format!("resolv {r}")))
            .collect()
    }

    /// The answer to an async call: `r`, or none at all when the fault plan
    /// says this call hangs.
    fn answer<'a, T: Send + 'a>(
        &self,
        op: &'static str,
        r: Result<T, NetError>,
    ) -> BoxFuture<'a, Result<T, NetError>> {
        if self.journal.hangs(op) {
            Box::pin(std::future::pending())
        } else {
            ready(r)
        }
    }

    fn call(&self, op: &'static str, detail: String) -> Result<(), NetError> {
        self.journal
            .call(op, detail, true)
            .map_err(|reason| NetError::Netlink {
                op: op.into(),
                reason,
            })
    }
}

impl NetHost for FakeNet {
    fn create_netns(&self, name: &str) -> Result<(PathBuf, bool), NetError> {
        self.call("create_netns", name.into())?;
        let new = self
            .state
            .lock()
            .expect("net state")
            .namespaces
            .insert(name.to_string());
        Ok((netns::path(name), new))
    }

    fn delete_netns(&self, name: &str) -> Result<(), NetError> {
        self.call("delete_netns", name.into())?;
        let mut s = self.state.lock().expect("net state");
        s.namespaces.remove(name);
        s.configured.remove(&netns::path(name));
        Ok(())
    }

    fn netns_has_address(&self, path: &Path, ip: Ipv4Addr) -> Result<bool, NetError> {
        self.call("netns_has_address", format!("{} {ip}", path.display()))?;
        Ok(self
            .state
            .lock()
            .expect("net state")
            .configured
            .contains(path))
    }

    fn enter_netns(&self, path: &Path) -> Result<(), NetError> {
        // Once per sandbox thread: recorded, failed only by `Fault::Always`.
        self.journal
            .call("enter_netns", path.display().to_string(), false)
            .map_err(|reason| NetError::Netns {
                name: path.display().to_string(),
                reason,
            })?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !self
            .state
            .lock()
            .expect("net state")
            .namespaces
            .contains(name)
        {
            return Err(NetError::Netns {
                name: name.into(),
                reason: "no such namespace".into(),
            });
        }
        Ok(())
    }

    fn write_resolv(&self, name: &str, _text: &str) -> Result<(), NetError> {
        self.call("write_resolv", name.into())?;
        self.state
            .lock()
            .expect("net state")
            .resolv
            .insert(name.into());
        Ok(())
    }

    fn remove_resolv(&self, name: &str) {
        let _ = self.journal.call("remove_resolv", name.into(), false);
        self.state.lock().expect("net state").resolv.remove(name);
    }

    fn unreachable_route(&self, cidr: Cidr) -> BoxFuture<'_, Result<(), NetError>> {
        let r = self.call("unreachable_route", cidr.to_string()).map(|()| {
            self.state
                .lock()
                .expect("net state")
                .routes
                .insert(format!("unreachable {cidr}"));
        });
        self.answer("unreachable_route", r)
    }

    fn local_route(&self, cidr: Cidr) -> BoxFuture<'_, Result<(), NetError>> {
        let r = self.call("local_route", cidr.to_string()).map(|()| {
            self.state
                .lock()
                .expect("net state")
                .routes
                .insert(format!("local {cidr}"));
        });
        self.answer("local_route", r)
    }

    fn bridge<'a>(
        &'a self,
        name: &'a str,
        gateway: Ipv4Addr,
        prefix: u8,
    ) -> BoxFuture<'a, Result<u32, NetError>> {
        let r = self
            .call("bridge", format!("{name} {gateway}/{prefix}"))
            .map(|()| {
                let mut s = self.state.lock().expect("net state");
                let next = s.links.len() as u32 + 2;
                *s.links.entry(name.to_string()).or_insert(next)
            });
        self.answer("bridge", r)
    }

    fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u32>, NetError>> {
        let r = self.call("link_index", name.into()).map(|()| {
            self.state
                .lock()
                .expect("net state")
                .links
                .get(name)
                .copied()
        });
        self.answer("link_index", r)
    }

    fn add_veth<'a>(
        &'a self,
        host_end: &'a str,
        pod_end: &'a str,
        bridge: u32,
        netns: &'a Path,
    ) -> BoxFuture<'a, Result<(), NetError>> {
        let r = self
            .call(
                "add_veth",
                format!("{host_end} {pod_end} {bridge} {}", netns.display()),
            )
            .and_then(|()| {
                let mut s = self.state.lock().expect("net state");
                let name = netns.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !s.namespaces.contains(name) {
                    return Err(NetError::Netns {
                        name: name.into(),
                        reason: "no such namespace".into(),
                    });
                }
                let next = s.links.len() as u32 + 100;
                s.links.insert(host_end.to_string(), next);
                Ok(())
            });
        self.answer("add_veth", r)
    }

    fn configure_pod<'a>(
        &'a self,
        netns: &'a Path,
        pod_end: &'a str,
        ip: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> BoxFuture<'a, Result<(), NetError>> {
        let r = self
            .call(
                "configure_pod",
                format!("{} {pod_end} {ip}/{prefix} via {gateway}", netns.display()),
            )
            .map(|()| {
                self.state
                    .lock()
                    .expect("net state")
                    .configured
                    .insert(netns.to_path_buf());
            });
        self.answer("configure_pod", r)
    }

    fn delete_link<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), NetError>> {
        let r = self.call("delete_link", name.into()).map(|()| {
            self.state.lock().expect("net state").links.remove(name);
        });
        self.answer("delete_link", r)
    }

    fn forget_neighbour(&self, bridge: u32, ip: Ipv4Addr) -> BoxFuture<'_, Result<(), NetError>> {
        let r = self.call("forget_neighbour", format!("{bridge} {ip}"));
        self.answer("forget_neighbour", r)
    }
}

/// Pod cgroups in memory.
#[derive(Clone)]
pub struct FakeCgroups {
    pub journal: Journal,
    live: Arc<Mutex<BTreeSet<String>>>,
}

impl FakeCgroups {
    pub fn new(journal: Journal) -> FakeCgroups {
        FakeCgroups {
            journal,
            live: Arc::default(),
        }
    }

    /// The cgroups that exist now.
    pub fn live(&self) -> BTreeSet<String> {
        self.live.lock().expect("cgroups").clone()
    }
}

impl Cgroups for FakeCgroups {
    fn create(
        &self,
        node: &str,
        uid: &str,
        cpu: crate::cgroup::PodCpu,
    ) -> Result<PodCgroup, CgroupError> {
        let path = format!("skiff/{node}/pod{uid}");
        self.journal
            .call(
                "create_cgroup",
                format!("{path} {:?}", cpu.limit_millis),
                true,
            )
            .map_err(|reason| CgroupError {
                path: path.clone(),
                reason,
            })?;
        self.live.lock().expect("cgroups").insert(path.clone());
        Ok(PodCgroup::new(Arc::new(FakeCgroup {
            path,
            host: self.clone(),
        })))
    }

    fn remove_pod_dirs(&self, node: &str, uid: &str) {
        let path = format!("skiff/{node}/pod{uid}");
        let _ = self.journal.call("remove_pod_dirs", path.clone(), false);
        self.live.lock().expect("cgroups").remove(&path);
    }
}

struct FakeCgroup {
    path: String,
    host: FakeCgroups,
}

impl CgroupOps for FakeCgroup {
    fn path(&self) -> &str {
        &self.path
    }

    fn holds_current_thread(&self) -> bool {
        false
    }

    fn add_thread(&self, tid: u64) -> Result<(), CgroupError> {
        self.host
            .journal
            .call("add_thread", format!("{} {tid}", self.path), false)
            .map_err(|reason| CgroupError {
                path: self.path.clone(),
                reason,
            })
    }

    fn usage_ns(&self) -> Option<u64> {
        Some(0)
    }

    fn delete(&self) {
        let _ = self
            .host
            .journal
            .call("delete_cgroup", self.path.clone(), false);
        self.host.live.lock().expect("cgroups").remove(&self.path);
    }
}

/// The nft ruleset in memory: every script applied, and the `services`
/// chain's counters as nft would list them.
#[derive(Clone, Default)]
pub struct FakeRuleset {
    pub journal: Journal,
    applied: Arc<Mutex<Vec<String>>>,
    chain: Arc<Mutex<String>>,
}

impl FakeRuleset {
    pub fn new(journal: Journal) -> FakeRuleset {
        FakeRuleset {
            journal,
            ..FakeRuleset::default()
        }
    }

    /// The scripts applied (successfully), in order.
    pub fn applied(&self) -> Vec<String> {
        self.applied.lock().expect("applied").clone()
    }

    /// What `list_chain` answers from now on (nft's JSON).
    pub fn set_chain(&self, json: &str) {
        *self.chain.lock().expect("chain") = json.to_string();
    }
}

impl Ruleset for FakeRuleset {
    fn apply(&self, script: &str) -> Result<(), ProxyError> {
        let first = script.lines().next().unwrap_or("").to_string();
        self.journal
            .call("nft_apply", first, true)
            .map_err(ProxyError::Nft)?;
        self.applied
            .lock()
            .expect("applied")
            .push(script.to_string());
        Ok(())
    }

    fn list_chain(&self, table: &str, chain: &str) -> Result<String, ProxyError> {
        self.journal
            .call("nft_list_chain", format!("{table} {chain}"), false)
            .map_err(ProxyError::Nft)?;
        Ok(self.chain.lock().expect("chain").clone())
    }
}
