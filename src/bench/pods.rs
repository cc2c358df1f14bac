//! `skiff bench pods`: Wasm pods on a real agent. HTTP throughput and latency of
//! the hello-wasm pod at its pod IP beside `wasmtime serve` on the same
//! component (same load tool, wrk, same run); binding → Ready for a burst of
//! pods; and density: many idle pods all answering, with the agent's memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use super::free_port;

#[derive(clap::Args)]
pub struct PodsBench {
    /// The hello-wasm component (build: cargo build --release --target wasm32-wasip2
    /// --manifest-path examples/hello-wasm/Cargo.toml --target-dir target/wasm).
    #[arg(
        long,
        default_value = "target/wasm/wasm32-wasip2/release/hello_wasm.wasm"
    )]
    pub component: PathBuf,
    /// Pods created at once for the start-up figures.
    #[arg(long, default_value_t = 100)]
    pub start_pods: usize,
    /// Clients creating the burst of pods at once.
    #[arg(long, default_value_t = 8)]
    pub create_clients: usize,
    /// Pods started one at a time (each waited for) before the burst.
    #[arg(long, default_value_t = 20)]
    pub one_by_one: usize,
    /// Idle pods for the density figures (includes the start-up pods).
    #[arg(long, default_value_t = 1000)]
    pub density_pods: usize,
    /// Seconds of HTTP load per target.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Open connections of the HTTP load.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// The agent's warm pod namespaces (`skiff agent --warm-netns`).
    #[arg(long, default_value_t = 8)]
    pub warm_netns: usize,
    /// Run the agent with `--no-cgroups`.
    #[arg(long)]
    pub no_cgroups: bool,
    /// The `wasmtime` binary for the peer (`wasmtime serve -S cli`); `none` skips it.
    #[arg(long, default_value = "wasmtime")]
    pub wasmtime: String,
}

pub(super) const NODE: &str = "skiff-bench";
const BRIDGE: &str = "skb0";
const CLUSTER_CIDR: &str = "10.88.16.0/20";
const NS: &str = "default";

/// Child processes killed, and the host network cleaned, on drop.
pub(super) struct Procs {
    children: Vec<Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let prefix = format!("skiff-{NODE}-");
        if let Ok(d) = std::fs::read_dir("/run/netns") {
            for e in d.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with(&prefix) {
                    let _ = Command::new("ip").args(["netns", "del", &n]).status();
                }
            }
        }
        // Each pod namespace's resolv.conf directory (the agent is killed, so
        // it cannot remove them itself).
        if let Ok(d) = std::fs::read_dir("/etc/netns") {
            for e in d.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        // The pods' cgroups (the killed agent cannot remove them).
        skiff_node::host::remove_node_cgroups(NODE);
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
        let _ = Command::new("ip")
            .args(["route", "del", "unreachable", CLUSTER_CIDR])
            .status();
        for table in [
            skiff_node::proxy::table_name(NODE),
            skiff_node::netpol::rules::table_name(NODE),
        ] {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &table])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[derive(Clone)]
pub(super) struct Api {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    /// The API at `addr` with `token`, trusting the CA in the server's data dir.
    pub(super) fn new(addr: &str, token: String, data: &Path) -> Result<Api> {
        Ok(Api {
            url: format!("https://{addr}"),
            token,
            http: reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
                    data.join("ca.crt"),
                )?)?)
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    /// Wait (up to 60 s) until node `name` is Ready.
    pub(super) async fn node_ready(&self, name: &str) -> Result<()> {
        wait_for(Duration::from_secs(60), async || {
            let n = self.get(&format!("/api/v1/nodes/{name}")).await.ok()?;
            ready(&n).then_some(())
        })
        .await
        .with_context(|| format!("node {name} becomes Ready"))
    }

    pub(super) async fn get(&self, path: &str) -> Result<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(r.json().await?)
    }

    async fn create_pod(&self, name: &str) -> Result<()> {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "web", "image": "bench/hello:v1",
                "ports": [{"containerPort": 8080}]}]}});
        let r = self
            .http
            .post(format!("{}/api/v1/namespaces/{NS}/pods", self.url))
            .bearer_auth(&self.token)
            .json(&pod)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("create pod {name}: {}", r.text().await?);
        }
        Ok(())
    }
}

pub(super) fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Whether a pod's or node's Ready condition is True.
fn ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Per pod: when the client saw it bound and when it saw it Ready.
#[derive(Default)]
pub(super) struct Seen {
    pub added: HashMap<String, Instant>,
    pub bound: HashMap<String, Instant>,
    pub ready: HashMap<String, Instant>,
}

/// Watch pods and note when each is first seen bound and Ready.
pub(super) async fn watch(
    api: &Api,
    seen: Arc<Mutex<Seen>>,
) -> Result<tokio::task::JoinHandle<()>> {
    let r = api
        .http
        .get(format!(
            "{}/api/v1/namespaces/{NS}/pods?watch=true",
            api.url
        ))
        .bearer_auth(&api.token)
        .timeout(Duration::from_secs(3600))
        .send()
        .await?;
    let mut stream = r.bytes_stream();
    Ok(tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let p = &ev["object"];
                let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                let now = Instant::now();
                let mut s = seen.lock().unwrap();
                s.added.entry(name.clone()).or_insert(now);
                if p["spec"]["nodeName"].is_string() {
                    s.bound.entry(name.clone()).or_insert(now);
                }
                if ready(p) {
                    s.ready.entry(name).or_insert(now);
                }
            }
        }
    }))
}

fn parse_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    for (suffix, mult) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| v * mult);
        }
    }
    None
}

/// (requests/s, p50 ms, p99 ms) of `wrk` against `url`.
pub(super) fn wrk(url: &str, seconds: u64, connections: usize) -> Result<(f64, f64, f64)> {
    wrk_with(url, seconds, connections, &[])
}

/// [`wrk`] with request headers (`Host: x`).
pub(super) fn wrk_with(
    url: &str,
    seconds: u64,
    connections: usize,
    headers: &[&str],
) -> Result<(f64, f64, f64)> {
    let mut cmd = Command::new("wrk");
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .args([
            &format!("-t{}", connections.clamp(1, 2)),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .context("run wrk (apt-get install wrk)")?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// (requests/s, p50 ms, p99 ms) from wrk's `--latency` output; errors
/// (non-2xx answers, none at all) are an error.
pub(super) fn parse_wrk(text: &str) -> Result<(f64, f64, f64)> {
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_string))
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk output: {text}"))?;
    let p50 = field("50%").and_then(|v| parse_ms(&v)).unwrap_or(f64::NAN);
    let p99 = field("99%").and_then(|v| parse_ms(&v)).unwrap_or(f64::NAN);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors: {text}");
    }
    Ok((rps, p50, p99))
}

pub(super) fn rss_kib(pid: u32) -> u64 {
    super::api::rss_kib(pid)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

pub(super) async fn wait_for<T>(
    within: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> Result<T> {
    let t = Instant::now();
    while t.elapsed() < within {
        if let Some(v) = f().await {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {within:?}")
}

/// Run this `skiff` binary with `args` and then `extra`; its stdout.
pub(super) fn skiff(args: &[&str], extra: &[&Path]) -> Result<String> {
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .args(extra)
        .output()?;
    if !out.status.success() {
        bail!("skiff {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// A server and one agent on the bench's own bridge, with the hello-wasm
/// component imported as `bench/hello:v1`; everything goes on drop.
pub(super) struct Cluster {
    pub procs: Procs,
    pub api: Api,
    pub agent_pid: u32,
    pub server_pid: u32,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// The server's data directory (kubeconfig, join token).
    pub(super) fn data_dir(&self) -> PathBuf {
        self._dir.path().join("server")
    }

    /// The agent's data directory (its containerd lives under it).
    pub(super) fn agent_data_dir(&self) -> PathBuf {
        self._dir.path().join("agent")
    }
}

pub(super) async fn start_cluster(component: &Path, max_pods: usize) -> Result<Cluster> {
    start_cluster_with(component, max_pods, &[]).await
}

/// [`start_cluster`] with more agent flags (a later flag wins).
pub(super) async fn start_cluster_with(
    component: &Path,
    max_pods: usize,
    agent_args: &[String],
) -> Result<Cluster> {
    if !component.exists() {
        bail!(
            "{} is missing: build examples/hello-wasm first",
            component.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server");
    let api_addr = format!("127.0.0.1:{}", free_port()?);
    let mut procs = Procs {
        children: Vec::new(),
    };
    procs.children.push(
        Command::new(std::env::current_exe()?)
            .args(["server", "--disable-agent", "--api-addr", &api_addr])
            .args(["--peer-addr", &format!("127.0.0.1:{}", free_port()?)])
            .args([
                "--cluster-cidr",
                CLUSTER_CIDR,
                "--node-cidr-mask-size",
                "21",
            ])
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log"))?)
            .spawn()?,
    );
    let kubeconfig = data.join("kubeconfig");
    let token_file = data.join("join-token");
    wait_for(Duration::from_secs(30), async || {
        (kubeconfig.exists() && token_file.exists()).then_some(())
    })
    .await?;
    let join = std::fs::read_to_string(&token_file)?.trim().to_string();
    let admin = std::fs::read_to_string(&kubeconfig)?
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .context("token in kubeconfig")?;
    let max_pods = max_pods.to_string();
    procs.children.push(
        Command::new(std::env::current_exe()?)
            .args([
                "agent",
                "--server",
                &format!("https://{api_addr}"),
                "--token",
                &join,
            ])
            .args([
                "--node-name",
                NODE,
                "--bridge",
                BRIDGE,
                "--max-pods",
                &max_pods,
                // As before node-IP discovery: the bench stays on loopback.
                "--node-ip",
                "127.0.0.1",
                // Nothing the bench runs asks names outside the cluster.
                "--resolv-conf",
                "/dev/null",
                "--disable-default-registry-endpoint",
                "--ingress-http-port",
                "0",
                "--ingress-https-port",
                "0",
            ])
            .args(agent_args)
            .arg("--data-dir")
            .arg(dir.path().join("agent"))
            .env(
                "RUST_LOG",
                std::env::var("SKIFF_BENCH_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                std::env::var("SKIFF_BENCH_AGENT_LOG_FILE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| dir.path().join("agent.log")),
            )?)
            .spawn()?,
    );
    let agent_pid = procs.children[1].id();
    let server_pid = procs.children[0].id();
    let api = Api::new(&api_addr, admin, &data)?;
    api.node_ready(NODE).await?;
    let tar = dir.path().join("hello.tar");
    let out = Command::new(std::env::current_exe()?)
        .args(["image", "pack"])
        .arg(component)
        .args(["--name", "bench/hello:v1", "-o"])
        .arg(&tar)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "pack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    skiff(
        &["image", "import"],
        &[&tar, Path::new("--kubeconfig"), &kubeconfig],
    )?;
    Ok(Cluster {
        procs,
        api,
        agent_pid,
        server_pid,
        _dir: dir,
    })
}

pub async fn run(b: PodsBench) -> Result<()> {
    if !b.component.exists() {
        bail!(
            "{} is missing: build examples/hello-wasm first",
            b.component.display()
        );
    }
    let max_pods = b.density_pods.max(b.start_pods) + b.one_by_one + 10;
    // `_dir` is bound first so that it goes last: the data dirs must outlive
    // the processes (a `..` here would delete them at once).
    let Cluster {
        _dir: _keep,
        procs,
        api,
        agent_pid,
        server_pid,
    } = start_cluster(&b.component, max_pods).await?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {cpus} cpus; agent and load generator share them; {} warm pod namespaces",
        b.warm_netns
    );

    // HTTP: the pod at its IP beside wasmtime serve, same component, same wrk.
    api.create_pod("web").await?;
    let ip = wait_for(Duration::from_secs(60), async || {
        let p = api
            .get(&format!("/api/v1/namespaces/{NS}/pods/web"))
            .await
            .ok()?;
        ready(&p).then(|| p["status"]["podIP"].as_str().map(str::to_string))?
    })
    .await?;
    let (rps, p50, p99) = wrk(&format!("http://{ip}:8080/"), b.seconds, b.connections)?;
    println!(
        "http skiff pod    {rps:>10.0} req/s  p50 {p50:.2} ms  p99 {p99:.2} ms  ({} connections, {}s)",
        b.connections, b.seconds
    );
    if b.wasmtime != "none" {
        let port = free_port()?;
        let mut serve = Command::new(&b.wasmtime)
            .args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")])
            .arg(&b.component)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("run wasmtime serve (cargo install wasmtime-cli@48.0.8)")?;
        let up = wait_for(Duration::from_secs(30), async || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .await;
        let peer = up.and_then(|()| {
            wrk(
                &format!("http://127.0.0.1:{port}/"),
                b.seconds,
                b.connections,
            )
        });
        let _ = serve.kill();
        let _ = serve.wait();
        let (prps, pp50, pp99) = peer?;
        println!("http wasmtime serve {prps:>8.0} req/s  p50 {pp50:.2} ms  p99 {pp99:.2} ms",);
        println!("http ratio skiff/wasmtime: {:.2}x throughput", rps / prps);
    }

    // Start-up: a burst of pods, bound → Ready and created → Ready as a client sees them.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = watch(&api, seen.clone()).await?;
    // One at a time first: the latency of a pod start without a queue.
    let mut one_bind = Vec::new();
    let mut one_create = Vec::new();
    for i in 0..b.one_by_one {
        let name = format!("one-{i}");
        let t = Instant::now();
        api.create_pod(&name).await?;
        wait_for(Duration::from_secs(30), async || {
            seen.lock().unwrap().ready.contains_key(&name).then_some(())
        })
        .await?;
        let s = seen.lock().unwrap();
        one_bind.push((s.ready[&name] - s.bound[&name]).as_secs_f64() * 1000.0);
        one_create.push((s.ready[&name] - t).as_secs_f64() * 1000.0);
    }
    if b.one_by_one > 0 {
        println!(
            "start {} pods one at a time: bound→Ready p50 {:.1} ms p99 {:.1} ms; created→Ready p50 {:.1} ms p99 {:.1} ms",
            b.one_by_one,
            pct(&mut one_bind, 0.5),
            pct(&mut one_bind, 0.99),
            pct(&mut one_create, 0.5),
            pct(&mut one_create, 0.99),
        );
    }
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let api = Arc::new(api);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    let clients = b.create_clients.max(1);
    for w in 0..clients {
        let (api, created) = (api.clone(), created.clone());
        let n = b.start_pods;
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(clients) {
                let name = format!("start-{i}");
                let t = Instant::now();
                api.create_pod(&name).await?;
                created.lock().unwrap().insert(name, t);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let names: Vec<String> = (0..b.start_pods).map(|i| format!("start-{i}")).collect();
    wait_for(Duration::from_secs(120), async || {
        let s = seen.lock().unwrap();
        names.iter().all(|n| s.ready.contains_key(n)).then_some(())
    })
    .await
    .context("start-up pods become Ready")?;
    let all = t0.elapsed();
    {
        let s = seen.lock().unwrap();
        let c = created.lock().unwrap();
        let mut bind_ready: Vec<f64> = names
            .iter()
            .map(|n| (s.ready[n] - s.bound[n]).as_secs_f64() * 1000.0)
            .collect();
        let mut create_ready: Vec<f64> = names
            .iter()
            .map(|n| (s.ready[n] - c[n]).as_secs_f64() * 1000.0)
            .collect();
        println!(
            "start {} pods at once ({clients} creating clients): bound→Ready p50 {:.1} ms p99 {:.1} ms; created→Ready p50 {:.1} ms p99 {:.1} ms; all Ready in {:.2} s",
            b.start_pods,
            pct(&mut bind_ready, 0.5),
            pct(&mut bind_ready, 0.99),
            pct(&mut create_ready, 0.5),
            pct(&mut create_ready, 0.99),
            all.as_secs_f64()
        );
    }
    {
        let s = seen.lock().unwrap();
        let mut bound: Vec<f64> = names
            .iter()
            .map(|n| (s.bound[n] - t0).as_secs_f64() * 1000.0)
            .collect();
        let mut ready: Vec<f64> = names
            .iter()
            .map(|n| (s.ready[n] - t0).as_secs_f64() * 1000.0)
            .collect();
        println!(
            "  burst timeline from the first create: bound p50 {:.0} ms, last {:.0} ms; Ready p50 {:.0} ms, last {:.0} ms",
            pct(&mut bound, 0.5),
            pct(&mut bound, 1.0),
            pct(&mut ready, 0.5),
            pct(&mut ready, 1.0)
        );
    }
    watcher.abort();

    // Density: more idle pods, all answering; the agent's memory.
    let rss_before = rss_kib(agent_pid);
    let more = b.density_pods.saturating_sub(b.start_pods);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..more).step_by(8) {
                api.create_pod(&format!("idle-{i}")).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let t = Instant::now();
    let ips: Vec<String> = wait_for(Duration::from_secs(600), async || {
        let list = api
            .get(&format!("/api/v1/namespaces/{NS}/pods"))
            .await
            .ok()?;
        let items = list["items"].as_array()?;
        let ready: Vec<String> = items
            .iter()
            .filter(|p| ready(p))
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect();
        (ready.len() > b.density_pods + b.one_by_one).then_some(ready)
    })
    .await
    .context("density pods become Ready")?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let ips = Arc::new(ips);
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (ips, ok, http, failures) = (ips.clone(), ok.clone(), http.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..ips.len()).step_by(16) {
                match http.get(format!("http://{}:8080/", ips[i])).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{}: {}", ips[i], r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("{}: {e:?}", ips[i])),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    for f in failures.lock().unwrap().iter().take(3) {
        println!("  unanswered: {f}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "density {} pods Ready in {:.1} s; {} of {} answered; agent RSS {} MiB (before the idle pods {} MiB), {} threads; server RSS {} MiB",
        ips.len(),
        t.elapsed().as_secs_f64(),
        ok.load(std::sync::atomic::Ordering::Relaxed),
        ips.len(),
        rss_kib(agent_pid) / 1024,
        rss_before / 1024,
        threads(agent_pid),
        rss_kib(server_pid) / 1024,
    );
    drop(procs);
    Ok(())
}
