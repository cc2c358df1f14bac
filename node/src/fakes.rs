//! Test doubles of the agent's host seams (youki's `syscall/test.rs` is the
//! model): a recording pod network host ([`FakeNet`]) and cgroups
//! ([`FakeCgroups`]) that share one [`Journal`] of calls and can fail any
//! call, an in-memory API server ([`FakeApi`]) behind a real `kube::Client`,
//! a recording nft ruleset ([`FakeRuleset`]) and a scripted [`FakeRuntime`].
//!
//! **The fakes keep the state the host would have (namespaces, links,
//! cgroups, resolv.conf files), so a test can assert that nothing is left.**

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use skiff_runtimes::oci::ExecOutput;
use skiff_runtimes::{
    Content, EndReason, RunRequest, RunStats, Running, Runtime, RuntimeError, Terminated,
};
use tokio::sync::watch;

use crate::cgroup::{CgroupError, CgroupOps, Cgroups, PodCgroup};
use crate::net::{Cidr, NetError, NetHost, netns};
use crate::pod::probes::{Checker, Handler};
use crate::proxy::{ProxyError, Ruleset};

/// Which host calls fail.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// The n-th counted call (from 0) fails, once.
    Once(usize),
    /// Every call of this operation fails.
    Always(&'static str),
}

#[derive(Debug, Default)]
struct JournalState {
    calls: Vec<String>,
    counted: usize,
    fault: Fault,
    failed: Vec<String>,
}

/// The calls the fakes saw, in order, and the fault plan they follow.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<JournalState>>);

impl Journal {
    /// Follow `fault` from now on, counting calls afresh.
    pub fn arm(&self, fault: Fault) {
        let mut s = self.0.lock().expect("journal");
        s.fault = fault;
        s.counted = 0;
    }

    /// Record a call of `op`; `Err` when the plan says this call fails.
    /// Counted calls are the ones that happen a fixed number of times per
    /// pod start (not those made once per sandbox thread).
    pub fn call(&self, op: &'static str, detail: String, counted: bool) -> Result<(), String> {
        let mut s = self.0.lock().expect("journal");
        let entry = format!("{op} {detail}");
        s.calls.push(entry.clone());
        let n = s.counted;
        if counted {
            s.counted += 1;
        }
        let fail = match &s.fault {
            Fault::None => false,
            Fault::Once(k) => counted && *k == n,
            Fault::Always(o) => *o == op,
        };
        if fail {
            s.failed.push(entry);
            return Err(format!("injected failure of {op}"));
        }
        Ok(())
    }

    /// Every call so far, as `op detail`.
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().expect("journal").calls.clone()
    }

    /// The calls that failed by the plan.
    pub fn failed(&self) -> Vec<String> {
        self.0.lock().expect("journal").failed.clone()
    }

    /// How many counted calls were made.
    pub fn counted(&self) -> usize {
        self.0.lock().expect("journal").counted
    }

    /// The operation names of the calls so far, first occurrence order.
    pub fn ops(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for c in self.calls() {
            let op = c.split(' ').next().unwrap_or("").to_string();
            if !seen.contains(&op) {
                seen.push(op);
            }
        }
        seen
    }
}

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

    fn call(&self, op: &'static str, detail: String) -> Result<(), NetError> {
        self.journal
            .call(op, detail, true)
            .map_err(|reason| NetError::Netlink {
                op: op.into(),
                reason,
            })
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
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
        ready(r)
    }

    fn local_route(&self, cidr: Cidr) -> BoxFuture<'_, Result<(), NetError>> {
        let r = self.call("local_route", cidr.to_string()).map(|()| {
            self.state
                .lock()
                .expect("net state")
                .routes
                .insert(format!("local {cidr}"));
        });
        ready(r)
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
        ready(r)
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
        ready(r)
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
        ready(r)
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
        ready(r)
    }

    fn delete_link<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), NetError>> {
        let r = self.call("delete_link", name.into()).map(|()| {
            self.state.lock().expect("net state").links.remove(name);
        });
        ready(r)
    }

    fn forget_neighbour(&self, bridge: u32, ip: Ipv4Addr) -> BoxFuture<'_, Result<(), NetError>> {
        ready(self.call("forget_neighbour", format!("{bridge} {ip}")))
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
        cpu_millis: Option<u64>,
    ) -> Result<PodCgroup, CgroupError> {
        let path = format!("skiff/{node}/pod{uid}");
        self.journal
            .call("create_cgroup", format!("{path} {cpu_millis:?}"), true)
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

/// One request the fake API server answered.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub method: String,
    pub path: String,
    pub body: Value,
}

/// An API server in memory: serves Wasm images from `/v2/`, takes status
/// patches, events and deletes, and records every request.
#[derive(Clone, Default)]
pub struct FakeApi {
    /// Repository → the component bytes of its only layer.
    images: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    calls: Arc<Mutex<Vec<ApiCall>>>,
}

fn sha256(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl FakeApi {
    /// Serve `bytes` as the Wasm layer of image `repo` (any tag).
    pub fn image(&self, repo: &str, bytes: &[u8]) {
        self.images
            .lock()
            .expect("images")
            .insert(repo.into(), bytes.to_vec());
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.calls.lock().expect("calls").clone()
    }

    /// The statuses the agent wrote, in order.
    pub fn statuses(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "PATCH" && c.path.ends_with("/status"))
            .map(|c| c.body["status"].clone())
            .collect()
    }

    /// The reasons of the events recorded, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
            .map(|c| c.body["reason"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(api.answer(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    async fn answer(
        &self,
        req: http::Request<kube::client::Body>,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let raw = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        self.calls.lock().expect("calls").push(ApiCall {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        let respond = |code: u16, v: Vec<u8>, digest: Option<String>| {
            let mut r = http::Response::builder()
                .status(code)
                .header("content-type", "application/json");
            if let Some(d) = digest {
                r = r.header("docker-content-digest", d);
            }
            r.body(http_body_util::Full::new(bytes::Bytes::from(v)))
                .unwrap_or_default()
        };
        let json = |code: u16, v: Value| respond(code, v.to_string().into_bytes(), None);
        let not_found = || {
            json(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found"}),
            )
        };
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["v2", repo @ .., "manifests", _]) => {
                let Some(layer) = self
                    .images
                    .lock()
                    .expect("images")
                    .get(&repo.join("/"))
                    .cloned()
                else {
                    return not_found();
                };
                let config = b"{}".to_vec();
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                        "digest": sha256(&config), "size": config.len()},
                    "layers": [{"mediaType": "application/wasm", "digest": sha256(&layer),
                        "size": layer.len()}],
                })
                .to_string()
                .into_bytes();
                let d = sha256(&manifest);
                respond(200, manifest, Some(d))
            }
            ("GET", ["v2", repo @ .., "blobs", digest]) => {
                match self.images.lock().expect("images").get(&repo.join("/")) {
                    Some(l) if sha256(l) == *digest => respond(200, l.clone(), None),
                    _ => not_found(),
                }
            }
            ("PATCH", ["api", "v1", "namespaces", ns, "pods", name, "status"])
            | ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => json(
                200,
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": ns}}),
            ),
            ("POST", ["api", "v1", "namespaces", _, "events"]) => json(201, body),
            ("PATCH", ["api", "v1", "namespaces", ns, "events", name]) => json(
                200,
                json!({"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": ns},
                    "involvedObject": {}}),
            ),
            _ => not_found(),
        }
    }
}

/// Probe results by port: a port not set passes.
#[derive(Default)]
pub struct FakeChecker {
    failing: Mutex<BTreeSet<u16>>,
}

impl FakeChecker {
    pub fn set(&self, port: u16, ok: bool) {
        let mut f = self.failing.lock().expect("checker");
        if ok {
            f.remove(&port);
        } else {
            f.insert(port);
        }
    }
}

impl Checker for FakeChecker {
    fn check<'a>(
        &'a self,
        _ip: IpAddr,
        h: &'a Handler,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), String>> {
        let port = match h {
            Handler::Tcp { port } => *port,
            _ => 0,
        };
        let failing = self.failing.lock().expect("checker").contains(&port);
        ready(if failing {
            Err(format!("port {port} refused"))
        } else {
            Ok(())
        })
    }
}

/// One start the fake runtime saw.
#[derive(Debug, Clone)]
pub struct Start {
    pub container: String,
    pub at: Instant,
}

/// A runtime whose "component" is a script in the layer bytes:
/// `serve` (runs until stopped), `stubborn` (ignores the polite stop: ends
/// only when the grace period is over), `exit CODE MS` (exits after MS
/// milliseconds), `fail REASON` (the start fails: `config`, `create`, `run`).
#[derive(Clone, Default)]
pub struct FakeRuntime {
    pub starts: Arc<Mutex<Vec<Start>>>,
    /// (container, grace) of every stop.
    pub stops: Arc<Mutex<Vec<(String, Duration)>>>,
}

impl FakeRuntime {
    pub fn starts_of(&self, container: &str) -> usize {
        self.starts
            .lock()
            .expect("starts")
            .iter()
            .filter(|s| s.container == container)
            .count()
    }

    pub fn order(&self) -> Vec<String> {
        self.starts
            .lock()
            .expect("starts")
            .iter()
            .map(|s| s.container.clone())
            .collect()
    }
}

impl Runtime for FakeRuntime {
    fn handler(&self) -> &'static str {
        "wasmtime"
    }

    fn accepts(&self, content: &Content) -> Result<(), RuntimeError> {
        match content {
            Content::Wasm { .. } => Ok(()),
            Content::Oci(_) => Err(RuntimeError::NotMine("not a script".into())),
        }
    }

    fn start<'a>(
        &'a self,
        content: &'a Content,
        req: RunRequest,
    ) -> BoxFuture<'a, Result<Arc<dyn Running>, RuntimeError>> {
        Box::pin(async move {
            self.accepts(content)?;
            let Content::Wasm { bytes, .. } = content else {
                return Err(RuntimeError::NotMine("not a script".into()));
            };
            let script = String::from_utf8_lossy(bytes).to_string();
            let words: Vec<&str> = script.split_whitespace().collect();
            self.starts.lock().expect("starts").push(Start {
                container: req.container.clone(),
                at: Instant::now(),
            });
            let (tx, done) = watch::channel(None);
            let stubborn = words.first() == Some(&"stubborn");
            match words.as_slice() {
                ["fail", "config"] => Err(RuntimeError::Config("bad config".into())),
                ["fail", "create"] => Err(RuntimeError::Create("cannot create".into())),
                ["fail", _] => Err(RuntimeError::Run("will not run".into())),
                ["exit", code, ms] => {
                    let code: i32 = code.parse().unwrap_or(1);
                    let ms: u64 = ms.parse().unwrap_or(0);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let _ = tx.send(Some(Terminated {
                            exit_code: code,
                            reason: if code == 0 {
                                EndReason::Completed
                            } else {
                                EndReason::Error
                            },
                            message: None,
                            event: None,
                        }));
                    });
                    Ok(Arc::new(FakeRun {
                        name: req.container,
                        done,
                        tx: None,
                        stubborn,
                        stops: self.stops.clone(),
                    }) as Arc<dyn Running>)
                }
                _ => Ok(Arc::new(FakeRun {
                    name: req.container,
                    done,
                    tx: Some(tx),
                    stubborn,
                    stops: self.stops.clone(),
                }) as Arc<dyn Running>),
            }
        })
    }
}

type Ended = Option<Terminated>;

struct FakeRun {
    name: String,
    done: watch::Receiver<Ended>,
    tx: Option<watch::Sender<Ended>>,
    stubborn: bool,
    stops: Arc<Mutex<Vec<(String, Duration)>>>,
}

impl Running for FakeRun {
    fn wait(&self) -> BoxFuture<'_, Result<Terminated, RuntimeError>> {
        let mut rx = self.done.clone();
        Box::pin(async move {
            let ended = rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| v.clone());
            match ended {
                Some(t) => Ok(t),
                // The run was dropped: it never ends by itself.
                None => std::future::pending().await,
            }
        })
    }

    fn stop<'a>(&'a self, grace: Duration, pre_stop: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        self.stops
            .lock()
            .expect("stops")
            .push((self.name.clone(), grace));
        Box::pin(async move {
            pre_stop.await;
            if self.stubborn {
                tokio::time::sleep(grace).await;
            }
            if let Some(tx) = &self.tx {
                let _ = tx.send(Some(Terminated {
                    exit_code: 137,
                    reason: EndReason::Error,
                    message: None,
                    event: None,
                }));
            }
        })
    }

    fn remove(&self) -> BoxFuture<'_, ()> {
        ready(())
    }

    fn stats(&self) -> RunStats {
        RunStats::default()
    }

    fn exec<'a>(
        &'a self,
        _command: &'a [String],
        _scratch: &'a Path,
    ) -> BoxFuture<'a, Result<ExecOutput, RuntimeError>> {
        ready(Err(RuntimeError::Unsupported("no processes".into())))
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
