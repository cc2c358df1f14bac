//! `skiff bench scale`: scale to zero side by side in one run — the first
//! request after scale-to-zero (through the ClusterIP, held by the node's
//! activator while the Deployment wakes), for a Wasm and a container
//! Deployment, next to warm requests to the same Service; then the memory of
//! the agent and the server holding 1,000 scaled-to-zero Services.
//!
//! The anchor (not runnable here) is Knative's published 2–4 s cold start.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::containers::{import_busybox, summary};
use super::pods::{Api, NODE, rss_kib, start_cluster, wait_for};

#[derive(clap::Args)]
pub struct ScaleBench {
    /// The hello-wasm component (see `skiff bench pods`).
    #[arg(
        long,
        default_value = "target/wasm/wasm32-wasip2/release/hello_wasm.wasm"
    )]
    pub component: PathBuf,
    /// Cold starts of the Wasm Deployment.
    #[arg(long, default_value_t = 100)]
    pub wasm_starts: usize,
    /// Cold starts of the container Deployment.
    #[arg(long, default_value_t = 100)]
    pub container_starts: usize,
    /// Warm requests per Deployment.
    #[arg(long, default_value_t = 100)]
    pub warm: usize,
    /// Scaled-to-zero Services for the memory figure.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
}

const NS: &str = "default";
const HTTPD: &str = "bench/busybox-httpd:v1";

/// A scale-to-zero Deployment and its Service. The idle window is long: the
/// bench scales to zero itself, so every start is one it timed.
fn objects(name: &str, image: &str, replicas: u32) -> (Value, Value) {
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"skiff.dev/scale-to-zero-after": "1h"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": image,
                        "ports": [{"name": "http", "containerPort": 8080}]}]}}}});
    let s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
    (d, s)
}

async fn post(api: &Api, path: &str, body: &Value) -> Result<Value> {
    let r = api
        .http
        .post(format!("{}{path}", api.url))
        .bearer_auth(&api.token)
        .json(body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("POST {path}: {}", r.text().await?);
    }
    Ok(r.json().await?)
}

async fn create(api: &Api, name: &str, image: &str, replicas: u32) -> Result<String> {
    let (d, s) = objects(name, image, replicas);
    post(
        api,
        &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
        &d,
    )
    .await?;
    let svc = post(api, &format!("/api/v1/namespaces/{NS}/services"), &s).await?;
    svc.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("clusterIP")
}

async fn scale(api: &Api, name: &str, replicas: u32) -> Result<()> {
    let r = api
        .http
        .patch(format!(
            "{}/apis/apps/v1/namespaces/{NS}/deployments/{name}/scale",
            api.url
        ))
        .bearer_auth(&api.token)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"spec": {"replicas": replicas}}).to_string())
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("scale {name}: {}", r.text().await?);
    }
    Ok(())
}

/// Wait until `name` has no pods and its Service no endpoints, then give the
/// node's proxy a moment to send the Service to the activator.
async fn wait_zero(api: &Api, name: &str) -> Result<()> {
    wait_for(Duration::from_secs(120), async || {
        let pods = api
            .get(&format!("/api/v1/namespaces/{NS}/pods?labelSelector=app%3D{name}"))
            .await
            .ok()?;
        let slices = api
            .get(&format!(
                "/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{name}"
            ))
            .await
            .ok()?;
        let no_endpoints = slices["items"].as_array()?.iter().all(|s| {
            s["endpoints"].as_array().is_none_or(Vec::is_empty)
        });
        (pods["items"].as_array()?.is_empty() && no_endpoints).then_some(())
    })
    .await
    .with_context(|| format!("{name} at zero"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// One request on a fresh connection; its latency in ms.
async fn request(http: &reqwest::Client, url: &str) -> Result<f64> {
    let t = Instant::now();
    let r = http.get(url).send().await?;
    let code = r.status();
    let _ = r.bytes().await?;
    if !code.is_success() && code != reqwest::StatusCode::NOT_FOUND {
        bail!("GET {url}: {code}");
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// `n` cold starts of `name` (scaled to zero before each), then `warm`
/// requests while it runs.
async fn cold_and_warm(
    api: &Api,
    name: &str,
    ip: &str,
    n: usize,
    warm: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("http://{ip}/");
    let mut cold = Vec::new();
    for i in 0..n {
        scale(api, name, 0).await?;
        wait_zero(api, name).await?;
        cold.push(
            request(&http, &url)
                .await
                .with_context(|| format!("cold start {i} of {name}"))?,
        );
    }
    // Warm: the pod is up; let its endpoint reach the proxy first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut hot = Vec::new();
    for _ in 0..warm {
        hot.push(request(&http, &url).await?);
    }
    Ok((cold, hot))
}

fn activator_rules(table: &str) -> usize {
    Command::new("nft")
        .args(["list", "chain", "ip", table, "services"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains(":8012"))
                .count()
        })
        .unwrap_or(0)
}

pub async fn run(b: ScaleBench) -> Result<()> {
    let cluster = start_cluster(&b.component, 50).await?;
    let api = cluster.api.clone();
    import_busybox(
        &cluster,
        HTTPD,
        &[
            "--cmd", "httpd", "--cmd", "-f", "--cmd", "-p", "--cmd", "8080", "--cmd", "-h",
            "--cmd", "/var/www",
        ],
    )?;
    let wasm_ip = create(&api, "cold-wasm", "bench/hello:v1", 1).await?;
    let box_ip = create(&api, "cold-box", HTTPD, 1).await?;
    // First starts pull, compile and unpack; not counted.
    let warmup = reqwest::Client::builder().no_proxy().build()?;
    for ip in [&wasm_ip, &box_ip] {
        wait_for(Duration::from_secs(120), async || {
            request(&warmup, &format!("http://{ip}/")).await.ok()
        })
        .await
        .with_context(|| format!("{ip} answers"))?;
    }
    scale(&api, "cold-box", 0).await?;

    println!("== first request after scale-to-zero, through the ClusterIP ==");
    let (mut wasm_cold, mut wasm_warm) =
        cold_and_warm(&api, "cold-wasm", &wasm_ip, b.wasm_starts, b.warm).await?;
    scale(&api, "cold-wasm", 0).await?;
    let (mut box_cold, mut box_warm) =
        cold_and_warm(&api, "cold-box", &box_ip, b.container_starts, b.warm).await?;
    scale(&api, "cold-box", 0).await?;
    let wc = summary("Wasm, cold (0 -> 1 -> answer)", &mut wasm_cold);
    let ww = summary("Wasm, warm", &mut wasm_warm);
    let bc = summary("container, cold (0 -> 1 -> answer)", &mut box_cold);
    let bw = summary("container, warm", &mut box_warm);
    println!(
        "cold / warm: Wasm {:.0}x, container {:.0}x;  container cold / Wasm cold: {:.1}x;  Knative's published 2-4 s / Wasm cold p50: {:.0}x-{:.0}x",
        wc / ww,
        bc / bw,
        bc / wc,
        2000.0 / wc,
        4000.0 / wc
    );

    println!("== memory with {} scaled-to-zero Services ==", b.services);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (agent0, server0) = (rss_kib(cluster.agent_pid), rss_kib(cluster.server_pid));
    let t = Instant::now();
    for i in 0..b.services {
        create(&api, &format!("idle-{i}"), "bench/hello:v1", 0).await?;
    }
    let table = format!("skiff_{}", NODE.replace('-', "_"));
    let want = b.services + 2;
    wait_for(Duration::from_secs(300), async || {
        (activator_rules(&table) >= want).then_some(())
    })
    .await
    .context("the proxy sends every idle Service to the activator")?;
    let programmed = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (agent1, server1) = (rss_kib(cluster.agent_pid), rss_kib(cluster.server_pid));
    println!(
        "created and programmed in {programmed:.1} s; activator rules: {}",
        activator_rules(&table)
    );
    println!(
        "agent RSS {:.1} -> {:.1} MiB ({:.1} KiB per Service);  server RSS {:.1} -> {:.1} MiB ({:.1} KiB per Service)",
        agent0 as f64 / 1024.0,
        agent1 as f64 / 1024.0,
        agent1.saturating_sub(agent0) as f64 / b.services as f64,
        server0 as f64 / 1024.0,
        server1 as f64 / 1024.0,
        server1.saturating_sub(server0) as f64 / b.services as f64,
    );
    drop(cluster);
    Ok(())
}
