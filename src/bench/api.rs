//! `skiff bench api`: a real `skiff server` process over HTTPS: start-up time, idle
//! memory, ConfigMap creates with many clients, list latency over many objects,
//! memory per open watch; etcd's HTTP/JSON gateway as the peer for writes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;

use super::etcd::start_etcd;
use super::{free_port, load};

#[derive(clap::Args)]
pub struct ApiBench {
    /// ConfigMaps to create (1 KiB of data each).
    #[arg(long, default_value_t = 20_000)]
    pub creates: usize,
    /// Concurrent clients for the creates.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Objects in the namespace whose list is timed.
    #[arg(long, default_value_t = 10_000)]
    pub list_objects: usize,
    /// Watches held open at once.
    #[arg(long, default_value_t = 1_000)]
    pub watches: usize,
    /// Creates per credential in the RBAC comparison (the admin token
    /// against a ServiceAccount token bound by a RoleBinding; 0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub rbac_creates: usize,
    /// Also put the same number of 1 KiB values into a local etcd.
    #[arg(long, default_value = "etcd", value_parser = ["etcd", "none"])]
    pub peer: String,
}

struct Server {
    child: Child,
    url: String,
    token: String,
    ca: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident memory of `pid` in KiB, if it can be read.
pub(crate) fn try_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// The resident memory of `pid` in KiB. A figure of 0 would be a lie in a
/// table: the bench stops instead.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    try_rss_kib(pid)
        .unwrap_or_else(|| panic!("cannot read the RSS of process {pid}: has it exited?"))
}

async fn start_server() -> Result<(Server, Duration)> {
    let dir = tempfile::tempdir()?;
    let data: PathBuf = dir.path().join("data");
    let api = format!("127.0.0.1:{}", free_port()?);
    let log = std::fs::File::create(dir.path().join("server.log"))?;
    let t0 = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .arg("server")
        .arg("--data-dir")
        .arg(&data)
        // No node agent: it would build a pod network on the host, and the
        // API figures are about the control plane.
        .arg("--disable-agent")
        .args([
            "--api-addr",
            &api,
            "--peer-addr",
            &format!("127.0.0.1:{}", free_port()?),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let probe = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_millis(500))
        .build()?;
    let url = format!("https://{api}");
    let started = loop {
        if probe
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("server did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let kubeconfig = std::fs::read_to_string(data.join("kubeconfig"))?;
    let token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .context("token in kubeconfig")?
        .to_string();
    let ca = std::fs::read(data.join("ca.crt"))?;
    Ok((
        Server {
            child,
            url,
            token,
            ca,
            _dir: dir,
        },
        started,
    ))
}

fn client(s: &Server, http2: bool) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&s.ca)?)
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256);
    if !http2 {
        b = b.http1_only();
    }
    Ok(b.build()?)
}

async fn create_namespace(c: &reqwest::Client, s: &Server, name: &str) -> Result<()> {
    let r = c
        .post(format!("{}/api/v1/namespaces", s.url))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("create namespace: {}", r.text().await?);
    }
    Ok(())
}

/// Create `n` 1 KiB ConfigMaps `PREFIX-i` in `ns` with `token` from
/// `concurrency` clients.
async fn create_configmaps(
    c: &Arc<reqwest::Client>,
    s: &Arc<Server>,
    ns: &str,
    token: &Arc<String>,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> Result<super::Stats> {
    let value = Arc::new("x".repeat(1024));
    let url = Arc::new(format!("{}/api/v1/namespaces/{ns}/configmaps", s.url));
    let prefix = Arc::new(prefix.to_string());
    let (c, token) = (c.clone(), token.clone());
    load(n, concurrency, move |i| {
        let (c, url, token, value, prefix) = (
            c.clone(),
            url.clone(),
            token.clone(),
            value.clone(),
            prefix.clone(),
        );
        async move {
            let r = c
                .post(url.as_str())
                .bearer_auth(token.as_str())
                .header("Content-Type", "application/json")
                .body(format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{prefix}-{i:06}"}},"data":{{"v":"{value}"}}}}"#
                ))
                .send()
                .await?;
            if r.status().as_u16() != 201 {
                bail!("create: {} {}", r.status(), r.text().await?);
            }
            Ok(())
        }
    })
    .await
}

/// POST `body` to `path` as the admin; the answer.
async fn admin_post(
    c: &reqwest::Client,
    s: &Server,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value> {
    let r = c
        .post(format!("{}{path}", s.url))
        .bearer_auth(&s.token)
        .json(&body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("POST {path}: {} {}", r.status(), r.text().await?);
    }
    Ok(r.json().await?)
}

/// The authorizer's cost: the same creates with the admin token (a
/// superuser: no role is read) and with a ServiceAccount token whose
/// RoleBinding allows them (signature check, account and RBAC lookups),
/// in alternating rounds so both see the same machine and store sizes.
async fn rbac_comparison(
    c: &Arc<reqwest::Client>,
    s: &Arc<Server>,
    n: usize,
    concurrency: usize,
) -> Result<()> {
    for ns in ["bench-admin", "bench-sa"] {
        create_namespace(c, s, ns).await?;
    }
    let ns = "bench-sa";
    admin_post(c, s, &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "writer"}})).await?;
    admin_post(c, s, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "cm-writer"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "list"]}]})).await?;
    admin_post(c, s, &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "writer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-writer"},
            "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": ns}]})).await?;
    let tr = admin_post(c, s, &format!("/api/v1/namespaces/{ns}/serviceaccounts/writer/token"),
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})).await?;
    let sa_token = Arc::new(
        tr["status"]["token"]
            .as_str()
            .context("a token in the TokenRequest answer")?
            .to_string(),
    );
    let admin_token = Arc::new(s.token.clone());
    // The binding reaches every server's policy cache within moments.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rounds = 4;
    let per = n.div_ceil(rounds);
    let (mut admin, mut sa) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let a = create_configmaps(
            c,
            s,
            "bench-admin",
            &admin_token,
            &format!("r{r}"),
            per,
            concurrency,
        )
        .await?;
        let b = create_configmaps(
            c,
            s,
            "bench-sa",
            &sa_token,
            &format!("r{r}"),
            per,
            concurrency,
        )
        .await?;
        admin.push(a);
        sa.push(b);
    }
    let merge = |v: Vec<super::Stats>| {
        let mut lat: Vec<Duration> = v.iter().flat_map(|s| s.lat.clone()).collect();
        lat.sort();
        super::Stats {
            writes: v.iter().map(|s| s.writes).sum(),
            elapsed: v.iter().map(|s| s.elapsed).sum(),
            lat,
        }
    };
    let (admin, sa) = (merge(admin), merge(sa));
    for (who, st) in [
        ("admin token (system:masters)", &admin),
        ("ServiceAccount token + RoleBinding", &sa),
    ] {
        println!(
            "| RBAC: creates as {who}, {} × 1 KiB, {concurrency} clients, {rounds} alternating rounds | {:.0} /s, p50 {:.2} ms, p99 {:.2} ms |",
            st.writes,
            st.per_sec(),
            st.pct(0.5),
            st.pct(0.99)
        );
    }
    println!(
        "| RBAC: ServiceAccount / admin throughput | {:.3} ({:+.1} %) |",
        sa.per_sec() / admin.per_sec(),
        (sa.per_sec() / admin.per_sec() - 1.0) * 100.0
    );
    Ok(())
}

pub async fn run(b: ApiBench) -> Result<()> {
    skiff_control::api::tls::install_crypto_provider();
    let (server, started) = start_server().await?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);
    println!(
        "# skiff bench api: one `skiff server` process over HTTPS (TLS 1.3, HTTP/1.1 clients)"
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| start → /readyz ok | {:.0} ms |",
        started.as_secs_f64() * 1000.0
    );
    println!("| idle RSS | {:.1} MiB |", idle as f64 / 1024.0);

    let c = Arc::new(client(&server, false)?);
    let s = Arc::new(server);
    create_namespace(&c, &s, "bench").await?;
    let before = rss_kib(pid);
    let mut held = Vec::new();
    let per_conn = 100;
    let clients: Vec<reqwest::Client> = (0..b.watches.div_ceil(per_conn))
        .map(|_| client(&s, true))
        .collect::<Result<_>>()?;
    for i in 0..b.watches {
        let r = clients[i / per_conn]
            .get(format!(
                "{}/api/v1/namespaces/bench/configmaps?watch=true&resourceVersion=1000000000&timeoutSeconds=600",
                s.url
            ))
            .bearer_auth(&s.token)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("watch: {}", r.status());
        }
        held.push(r);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    println!(
        "| {} open watches | +{:.1} MiB RSS ({:.1} KiB each) |",
        b.watches,
        after.saturating_sub(before) as f64 / 1024.0,
        after.saturating_sub(before) as f64 / b.watches.max(1) as f64
    );
    drop(held);
    let creates = b.creates.max(b.list_objects);
    let token = Arc::new(s.token.clone());
    let st = create_configmaps(&c, &s, "bench", &token, "cm", creates, b.concurrency).await?;
    println!(
        "| creates ({} × 1 KiB ConfigMaps, {} clients) | {:.0} /s, p50 {:.2} ms, p99 {:.2} ms |",
        st.writes,
        b.concurrency,
        st.per_sec(),
        st.pct(0.5),
        st.pct(0.99)
    );
    let mut lists = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = c
            .get(format!("{}/api/v1/namespaces/bench/configmaps", s.url))
            .bearer_auth(&s.token)
            .send()
            .await?;
        let v: serde_json::Value = r.json().await?;
        lists.push(t.elapsed());
        let n = v["items"].as_array().map_or(0, Vec::len);
        if n < b.list_objects {
            bail!("list returned {n} items");
        }
    }
    lists.sort();
    println!(
        "| list of {} objects (JSON, full) | p50 {:.0} ms, max {:.0} ms |",
        creates,
        lists[2].as_secs_f64() * 1000.0,
        lists[4].as_secs_f64() * 1000.0
    );

    println!(
        "| RSS after all of the above | {:.1} MiB |",
        rss_kib(pid) as f64 / 1024.0
    );
    if b.rbac_creates > 0 {
        rbac_comparison(&c, &s, b.rbac_creates, b.concurrency).await?;
    }
    if b.peer == "etcd" {
        let (_etcd, endpoints, _root) = start_etcd(1)?;
        let endpoint = endpoints.split(',').next().unwrap_or_default().to_string();
        let ec = Arc::new(reqwest::Client::builder().http1_only().build()?);
        let value = base64::engine::general_purpose::STANDARD.encode("x".repeat(1024));
        let url = Arc::new(format!("http://{endpoint}/v3/kv/put"));
        let pst = load(b.creates, b.concurrency, move |i| {
            let (ec, url, value) = (ec.clone(), url.clone(), value.clone());
            async move {
                let key =
                    base64::engine::general_purpose::STANDARD.encode(format!("/bench/cm-{i:06}"));
                let r = ec
                    .post(url.as_str())
                    .body(format!(r#"{{"key":"{key}","value":"{value}"}}"#))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("etcd put: {}", r.status());
                }
                Ok(())
            }
        })
        .await?;
        println!(
            "| peer: etcd 3.4 HTTP/JSON gateway puts ({} × 1 KiB, {} clients, plain HTTP) | {:.0} /s, p50 {:.2} ms, p99 {:.2} ms |",
            pst.writes,
            b.concurrency,
            pst.per_sec(),
            pst.pct(0.5),
            pst.pct(0.99)
        );
        println!(
            "| ratio skiff creates / etcd puts | {:.2} |",
            st.per_sec() / pst.per_sec()
        );
    }
    Ok(())
}
