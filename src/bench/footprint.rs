//! `skiff bench footprint`: what Skiff costs a host. The size of the `skiff`
//! binary being run, the resident memory of `skiff server` with its embedded
//! node agent when idle, and again with N idle Wasm pods Ready. The server runs
//! with `--no-containerd` so the figure is Skiff's own process (containerd's is
//! its own process and is reported by `skiff bench containers`). Cleans up
//! with `skiff uninstall`.
//!
//! The peer figures (k3s) are published ones, not measured here: k3s is not
//! installable on this machine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::free_port;
use super::pods::{Api, rss_kib, skiff, wait_for};

#[derive(clap::Args)]
pub struct FootprintBench {
    /// The hello-wasm component (see `skiff bench pods`).
    #[arg(
        long,
        default_value = "target/wasm/wasm32-wasip2/release/hello_wasm.wasm"
    )]
    pub component: PathBuf,
    /// Idle Wasm pods for the second figure.
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Seconds to let the server settle before each reading.
    #[arg(long, default_value_t = 10)]
    pub settle: u64,
}

const NODE: &str = "skiff-footprint";

/// The server process; `skiff uninstall` takes it and its host state away.
struct Running {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(exe) = std::env::current_exe() {
            let _ = Command::new(exe)
                .args(["uninstall", "--data-dir"])
                .arg(self.dir.path().join("data"))
                .stdout(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn run(b: FootprintBench) -> Result<()> {
    let exe = std::env::current_exe()?;
    let size = std::fs::metadata(&exe)?.len();
    println!("== binary ==");
    println!(
        "{}: {:.1} MB ({size} bytes)",
        exe.display(),
        size as f64 / 1e6
    );
    anyhow::ensure!(
        b.component.exists(),
        "{} is missing: build examples/hello-wasm first",
        b.component.display()
    );
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let api_addr = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new(&exe)
        .args(["server", "--api-addr", &api_addr])
        .args(["--peer-addr", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--node-name", NODE, "--bridge", "skfp0", "--no-containerd"])
        .args(["--node-ip", "127.0.0.1", "--resolv-conf", "/dev/null"])
        .arg("--disable-default-registry-endpoint")
        .args(["--ingress-http-port", "0", "--ingress-https-port", "0"])
        .args([
            "--cluster-cidr",
            "10.88.32.0/20",
            "--node-cidr-mask-size",
            "22",
        ])
        .args(["--service-cidr", "10.96.32.0/20"])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("server.log"))?)
        .spawn()?;
    let pid = child.id();
    let running = Running { child, dir };
    let started = Instant::now();
    let kubeconfig = data.join("kubeconfig");
    wait_for(Duration::from_secs(60), async || {
        kubeconfig.exists().then_some(())
    })
    .await?;
    let token = std::fs::read_to_string(&kubeconfig)?
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .context("token in kubeconfig")?;
    let api = Api::new(&api_addr, token, &data)?;
    api.node_ready(NODE).await?;
    println!("== skiff server with its embedded agent ==");
    println!(
        "node Ready {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(b.settle)).await;
    let idle = rss_kib(pid);
    println!("idle RSS: {:.1} MiB", mib(idle));

    let tar = running.dir.path().join("hello.tar");
    skiff(
        &["image", "pack", "--name", "bench/hello:v1", "-o"],
        &[tar.as_path(), b.component.as_path()],
    )?;
    skiff(
        &["image", "import", "--kubeconfig"],
        &[kubeconfig.as_path(), tar.as_path()],
    )?;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "idle"},
        "spec": {"replicas": b.pods, "selector": {"matchLabels": {"app": "idle"}},
            "template": {"metadata": {"labels": {"app": "idle"}},
                "spec": {"containers": [{"name": "web", "image": "bench/hello:v1",
                    "ports": [{"containerPort": 8080}]}]}}}});
    let r = api
        .http
        .post(format!(
            "{}/apis/apps/v1/namespaces/default/deployments",
            api.url
        ))
        .bearer_auth(&api.token)
        .json(&deploy)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "create: {}", r.text().await?);
    let t = Instant::now();
    wait_for(Duration::from_secs(600), async || {
        let d: Value = api
            .get("/apis/apps/v1/namespaces/default/deployments/idle")
            .await
            .ok()?;
        (d.pointer("/status/readyReplicas")?.as_u64()? as usize >= b.pods).then_some(())
    })
    .await
    .context("every pod Ready")?;
    println!(
        "{} pods Ready in {:.1} s",
        b.pods,
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(b.settle)).await;
    let busy = rss_kib(pid);
    println!(
        "RSS with {} idle Wasm pods: {:.1} MiB (+{:.1} KiB per pod)",
        b.pods,
        mib(busy),
        busy.saturating_sub(idle) as f64 / b.pods as f64
    );
    println!(
        "published k3s figures (not measured here): binary < 100 MB, server with agent ~ 500 MiB+ idle (docs: 512 MB minimum RAM); skiff/k3s idle: {:.2}x",
        mib(idle) / 512.0
    );
    drop(running);
    Ok(())
}
