//! `skiff bench containers`: container pods beside their peers in one run —
//! container pod start (bound → Ready) against `ctr run -d` of the same image
//! on the same containerd, Wasm pod start against container pod start, and the
//! agent's memory holding N container pods against N Wasm pods.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::pods::{Api, NODE, Seen, pct, rss_kib, start_cluster, wait_for, watch};

#[derive(clap::Args)]
pub struct ContainersBench {
    /// The hello-wasm component (see `skiff bench pods`).
    #[arg(
        long,
        default_value = "target/wasm/wasm32-wasip2/release/hello_wasm.wasm"
    )]
    pub component: PathBuf,
    /// Pods started one at a time, per kind (and `ctr run`s).
    #[arg(long, default_value_t = 20)]
    pub starts: usize,
    /// Pods of each kind held at once for the memory figure.
    #[arg(long, default_value_t = 100)]
    pub density: usize,
}

const NS: &str = "default";
const BUSYBOX: &str = "bench/busybox:v1";

fn pod(name: &str, image: &str, command: Option<&[&str]>) -> Value {
    let mut c = json!({"name": "main", "image": image});
    if let Some(cmd) = command {
        c["command"] = json!(cmd);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [c]}})
}

async fn create(api: &Api, p: &Value) -> Result<()> {
    let r = api
        .http
        .post(format!("{}/api/v1/namespaces/{NS}/pods", api.url))
        .bearer_auth(&api.token)
        .json(p)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("create pod: {}", r.text().await?);
    }
    Ok(())
}

async fn delete_all(api: &Api) -> Result<()> {
    api.http
        .delete(format!("{}/api/v1/namespaces/{NS}/pods", api.url))
        .bearer_auth(&api.token)
        .send()
        .await?;
    wait_for(Duration::from_secs(300), async || {
        let l = api
            .get(&format!("/api/v1/namespaces/{NS}/pods"))
            .await
            .ok()?;
        l["items"].as_array()?.is_empty().then_some(())
    })
    .await
}

/// Start pods one at a time; bound → Ready of each, in ms.
async fn one_by_one(
    api: &Api,
    seen: &Arc<Mutex<Seen>>,
    prefix: &str,
    image: &str,
    command: Option<&[&str]>,
    n: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        create(api, &pod(&name, image, command)).await?;
        let s = seen.clone();
        let ms = wait_for(Duration::from_secs(60), async || {
            let s = s.lock().unwrap();
            let (b, r) = (s.bound.get(&name)?, s.ready.get(&name)?);
            Some(r.duration_since(*b).as_secs_f64() * 1000.0)
        })
        .await
        .with_context(|| format!("pod {name} Ready"))?;
        out.push(ms);
    }
    Ok(out)
}

/// `ctr run -d` of the bench image on the agent's containerd, timed; each
/// container removed afterwards.
fn ctr_runs(socket: &std::path::Path, n: usize) -> Result<Vec<f64>> {
    let ns = format!("skiff-{NODE}");
    let ctr = |args: &[&str]| -> Result<()> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", &ns])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("bench-ctr-{i}");
        let t = Instant::now();
        ctr(&["run", "-d", "--null-io", BUSYBOX, &id, "sleep", "3600"])?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        ctr(&["task", "kill", "-s", "SIGKILL", &id])?;
        std::thread::sleep(Duration::from_millis(100));
        let _ = ctr(&["task", "rm", "-f", &id]);
        ctr(&["container", "rm", &id])?;
    }
    Ok(out)
}

/// RSS of every containerd shim (KiB), one per running container.
fn shims_kib() -> (usize, u64) {
    let mut n = 0;
    let mut kib = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("/usr/bin/containerd-shim-runc-v2")
            && cmd.contains(&format!("skiff-{NODE}"))
            && let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>()
        {
            // A shim may exit between the two reads.
            if let Some(k) = super::api::try_rss_kib(pid) {
                n += 1;
                kib += k;
            }
        }
    }
    (n, kib)
}

pub(super) fn summary(label: &str, v: &mut [f64]) -> f64 {
    let p50 = pct(v, 0.5);
    println!(
        "{label:<40} p50 {p50:7.1} ms  p99 {:7.1} ms  (n={})",
        pct(v, 0.99),
        v.len()
    );
    p50
}

/// Build the busybox test image as `name` (`pack_args` set its command) and
/// import it into the bench cluster.
pub(super) fn import_busybox(
    cluster: &super::pods::Cluster,
    name: &str,
    pack_args: &[&str],
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tar = dir.path().join("busybox.tar");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/busybox/build.sh");
    let built = Command::new("bash")
        .arg(&script)
        .arg(&tar)
        .arg(name)
        .args(pack_args)
        .env("SKIFF", std::env::current_exe()?)
        .output()?;
    anyhow::ensure!(
        built.status.success(),
        "busybox image: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let kubeconfig = cluster.data_dir().join("kubeconfig");
    let out = Command::new(std::env::current_exe()?)
        .args(["image", "import"])
        .arg(&tar)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

pub async fn run(b: ContainersBench) -> Result<()> {
    let cluster = start_cluster(&b.component, b.density.max(b.starts) + 20).await?;
    let api = cluster.api.clone();
    import_busybox(&cluster, BUSYBOX, &[])?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let _watch = watch(&api, seen.clone()).await?;
    // A first container pod pulls and unpacks the image; not counted.
    one_by_one(&api, &seen, "warmup", BUSYBOX, Some(&["sleep", "3600"]), 1).await?;
    one_by_one(&api, &seen, "warmwasm", "bench/hello:v1", None, 1).await?;
    delete_all(&api).await?;

    println!("== start, one at a time ({} each) ==", b.starts);
    let mut ctr_ms = ctr_runs(
        &cluster.agent_data_dir().join("containerd/containerd.sock"),
        b.starts,
    )?;
    let mut box_ms = one_by_one(
        &api,
        &seen,
        "box",
        BUSYBOX,
        Some(&["sleep", "3600"]),
        b.starts,
    )
    .await?;
    delete_all(&api).await?;
    let mut wasm_ms = one_by_one(&api, &seen, "wasm", "bench/hello:v1", None, b.starts).await?;
    delete_all(&api).await?;
    let ctr_p50 = summary("ctr run -d (same image, same containerd)", &mut ctr_ms);
    let box_p50 = summary("container pod, bound -> Ready", &mut box_ms);
    let wasm_p50 = summary("Wasm pod, bound -> Ready", &mut wasm_ms);
    println!(
        "container pod / ctr run: {:.2}x   container pod / Wasm pod: {:.1}x",
        box_p50 / ctr_p50,
        box_p50 / wasm_p50
    );

    println!("== memory with {} pods of each kind ==", b.density);
    let idle = rss_kib(cluster.agent_pid);
    for (kind, image, cmd) in [
        ("box", BUSYBOX, Some(&["sleep", "3600"][..])),
        ("wasm", "bench/hello:v1", None),
    ] {
        let t = Instant::now();
        for i in 0..b.density {
            create(&api, &pod(&format!("d{kind}-{i}"), image, cmd)).await?;
        }
        let s = seen.clone();
        let (n, prefix) = (b.density, format!("d{kind}-"));
        wait_for(Duration::from_secs(600), async || {
            let s = s.lock().unwrap();
            (s.ready.keys().filter(|k| k.starts_with(&prefix)).count() >= n).then_some(())
        })
        .await
        .context("all density pods Ready")?;
        let ready_s = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let agent = rss_kib(cluster.agent_pid);
        let (shims, shim_kib) = shims_kib();
        println!(
            "{n} {kind} pods Ready in {ready_s:.1} s: agent RSS {} MiB (idle {} MiB); {shims} shims {} MiB",
            agent / 1024,
            idle / 1024,
            shim_kib / 1024
        );
        delete_all(&api).await?;
    }
    Ok(())
}
