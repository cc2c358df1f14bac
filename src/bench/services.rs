//! `skiff bench services`: the node's Service proxy. HTTP through a ClusterIP
//! beside the same pod at its pod IP (same tool, wrk, same run); endpoint
//! propagation from a pod turning Ready to its address in the node's rules;
//! and the time to program many Services with three endpoints each.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::pods::{Api, Seen, pct, start_cluster, wait_for, watch, wrk};

#[derive(clap::Args)]
pub struct ServicesBench {
    /// The hello-wasm component (see `skiff bench pods`).
    #[arg(
        long,
        default_value = "target/wasm/wasm32-wasip2/release/hello_wasm.wasm"
    )]
    pub component: PathBuf,
    /// Seconds of HTTP load per target.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Open connections of the HTTP load.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Pods whose propagation is timed, one after another.
    #[arg(long, default_value_t = 50)]
    pub propagation_pods: usize,
    /// Services (three endpoints each) programmed at once.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
}

const NS: &str = "default";
const TABLE: &str = "skiff_skiff_bench";

fn table() -> String {
    Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

pub(super) async fn post(api: &Api, path: &str, body: &Value) -> Result<Value> {
    let r = api
        .http
        .post(format!("{}{path}", api.url))
        .bearer_auth(&api.token)
        .json(body)
        .send()
        .await?;
    let ok = r.status().is_success();
    let v: Value = r.json().await?;
    if !ok {
        bail!("POST {path}: {v}");
    }
    Ok(v)
}

fn pod(name: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "web", "image": "bench/hello:v1",
            "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

fn service(name: &str, selector: Option<&str>) -> Value {
    let mut spec = json!({"ports": [{"name": "http", "port": 80, "targetPort": 8080}]});
    if let Some(app) = selector {
        spec["selector"] = json!({"app": app});
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

pub async fn run(b: ServicesBench) -> Result<()> {
    let cluster = start_cluster(&b.component, b.propagation_pods + 20).await?;
    let api = &cluster.api;
    let result = measure(&b, api).await;
    let _ = Command::new("nft")
        .args(["delete", "table", "ip", TABLE])
        .output();
    result
}

async fn measure(b: &ServicesBench, api: &Api) -> Result<()> {
    // 1. HTTP: pod IP and ClusterIP, same pod, same wrk, same run.
    post(
        api,
        &format!("/api/v1/namespaces/{NS}/pods"),
        &pod("web", "web"),
    )
    .await?;
    let svc = post(
        api,
        &format!("/api/v1/namespaces/{NS}/services"),
        &service("web", Some("web")),
    )
    .await?;
    let cip = svc["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    let ip = wait_for(Duration::from_secs(60), async || {
        let p = api
            .get(&format!("/api/v1/namespaces/{NS}/pods/web"))
            .await
            .ok()?;
        let ready = p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then(|| p["status"]["podIP"].as_str().map(String::from))?
    })
    .await
    .context("pod web Ready")?;
    wait_for(Duration::from_secs(30), async || {
        table()
            .contains(&format!("dnat to {ip}:8080"))
            .then_some(())
    })
    .await
    .context("the Service is programmed")?;
    let direct = wrk(&format!("http://{ip}:8080/"), b.seconds, b.connections)?;
    let through = wrk(&format!("http://{cip}/"), b.seconds, b.connections)?;
    let direct2 = wrk(&format!("http://{ip}:8080/"), b.seconds, b.connections)?;
    let direct_rps = (direct.0 + direct2.0) / 2.0;
    let direct_p50 = (direct.1 + direct2.1) / 2.0;
    println!(
        "http pod IP:    {direct_rps:.0} req/s  p50 {direct_p50:.3} ms  p99 {:.3} ms (mean of two runs around the ClusterIP run)",
        (direct.2 + direct2.2) / 2.0
    );
    println!(
        "http ClusterIP: {:.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
        through.0, through.1, through.2
    );
    println!(
        "ClusterIP/pod IP throughput: {:.3}x; added p50: {:.0} us",
        through.0 / direct_rps,
        (through.1 - direct_p50) * 1000.0
    );

    // Latency without queueing: one connection.
    let d1 = wrk(&format!("http://{ip}:8080/"), b.seconds, 1)?;
    let t1 = wrk(&format!("http://{cip}/"), b.seconds, 1)?;
    let d2 = wrk(&format!("http://{ip}:8080/"), b.seconds, 1)?;
    let (dp50, dp99) = ((d1.1 + d2.1) / 2.0, (d1.2 + d2.2) / 2.0);
    println!(
        "one connection: pod IP p50 {dp50:.3} ms p99 {dp99:.3} ms; ClusterIP p50 {:.3} ms p99 {:.3} ms; added p50 {:.0} us",
        t1.1,
        t1.2,
        (t1.1 - dp50) * 1000.0
    );

    // 2. Propagation: pod Ready (seen by a watch) → its address in the rules.
    post(
        api,
        &format!("/api/v1/namespaces/{NS}/services"),
        &service("prop", Some("prop")),
    )
    .await?;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watcher = watch(api, seen.clone()).await?;
    let mut lat = Vec::new();
    for i in 0..b.propagation_pods {
        let name = format!("prop-{i}");
        post(
            api,
            &format!("/api/v1/namespaces/{NS}/pods"),
            &pod(&name, "prop"),
        )
        .await?;
        let t0 = Instant::now();
        let mut seen_ip = None;
        let programmed = loop {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("{name} never reached the rules");
            }
            if seen_ip.is_none() {
                let p = api
                    .get(&format!("/api/v1/namespaces/{NS}/pods/{name}"))
                    .await?;
                seen_ip = p["status"]["podIP"].as_str().map(String::from);
            }
            if let Some(ip) = &seen_ip
                && table().contains(&format!("dnat to {ip}:8080"))
            {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let ready = wait_for(Duration::from_secs(10), async || {
            seen.lock().unwrap().ready.get(&name).copied()
        })
        .await?;
        lat.push(programmed.saturating_duration_since(ready).as_secs_f64() * 1000.0);
    }
    watcher.abort();
    println!(
        "endpoint propagation (pod Ready seen by a watch -> address in the node's nft rules), {} pods: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );

    // 3. Many Services with three endpoints each (EndpointSlices written
    // directly; the addresses are never sent anything).
    let n = b.services;
    let t = Instant::now();
    let shared = api.clone();
    let make = move |i: usize| {
        let api = shared.clone();
        async move {
            let name = format!("many-{i}");
            post(
                &api,
                &format!("/api/v1/namespaces/{NS}/services"),
                &service(&name, None),
            )
            .await?;
            let eps: Vec<Value> = (0..3)
                .map(|k| json!({"addresses": [format!("10.88.23.{}", 10 + k)], "conditions": {"ready": true}}))
                .collect();
            post(
                &api,
                &format!("/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"),
                &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": eps}),
            )
            .await?;
            Ok(())
        }
    };
    super::load(n, 16, make).await?;
    let created = t.elapsed();
    wait_for(Duration::from_secs(300), async || {
        (table().matches(" goto s_").count() >= n + 2).then_some(())
    })
    .await
    .context("all Services programmed")?;
    let programmed = t.elapsed();
    // One more change at this size: a full sync of the table.
    let t1 = Instant::now();
    post(
        api,
        &format!("/api/v1/namespaces/{NS}/services"),
        &service("one-more", Some("web")),
    )
    .await?;
    while table().matches(" goto s_").count() < n + 3 {
        if t1.elapsed() > Duration::from_secs(60) {
            bail!("the extra Service never reached the rules");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let one_more = t1.elapsed();
    println!(
        "{n} Services x 3 endpoints: created through the API in {:.2} s, all in the node's rules after {:.2} s; one more Service at that size reached the rules in {:.0} ms ({} rule lines)",
        created.as_secs_f64(),
        programmed.as_secs_f64(),
        one_more.as_secs_f64() * 1000.0,
        table().lines().count()
    );
    Ok(())
}
