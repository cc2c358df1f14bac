//! `skiff bench workloads`: the workload controllers on a real agent. Time
//! for a large Wasm Deployment to be all Ready and each pod's start-up
//! (created → Ready as a watching client sees it, p50/p99, against the
//! Kubernetes SLO of p99 ≤ 5 s); a rolling update of a Deployment with
//! maxSurge 25%; and the ReplicaSet controller's reconcile rate over a
//! synthetic cache.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::pods::{Api, Seen, pct, start_cluster, wait_for, watch};

#[derive(clap::Args)]
pub struct WorkloadsBench {
    /// The hello-wasm component (see `skiff bench pods`).
    #[arg(
        long,
        default_value = "target/wasm/wasm32-wasip2/release/hello_wasm.wasm"
    )]
    pub component: PathBuf,
    /// Replicas of the large Deployment.
    #[arg(long, default_value_t = 1000)]
    pub replicas: usize,
    /// Replicas of the Deployment that is rolled (maxSurge 25%, maxUnavailable 25%).
    #[arg(long, default_value_t = 100)]
    pub rollout: usize,
    /// Pods in the synthetic cache of the reconcile benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub cache_pods: usize,
    /// ReplicaSets sharing those pods.
    #[arg(long, default_value_t = 100)]
    pub cache_sets: usize,
}

const NS: &str = "default";

fn deployment(name: &str, replicas: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "bench/hello:v1",
                    "env": [{"name": "GREETING", "value": "v1"}],
                    "ports": [{"containerPort": 8080}]}]}}}})
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        content_type: &str,
    ) -> Result<Value> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.header("content-type", content_type).body(b.to_string());
        }
        let r = r.send().await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status}: {v}");
        }
        Ok(v)
    }
}

/// Whether a deployment's rollout is complete, as `kubectl rollout status` judges.
fn rolled_out(d: &Value, want: usize) -> bool {
    let n = |p: &str| d.pointer(p).and_then(Value::as_u64).unwrap_or(0) as usize;
    n("/status/observedGeneration") >= n("/metadata/generation")
        && n("/status/updatedReplicas") == want
        && n("/status/replicas") == want
        && n("/status/availableReplicas") == want
}

async fn wait_rolled_out(api: &Api, name: &str, want: usize, within: Duration) -> Result<()> {
    let path = format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}");
    wait_for(within, async || {
        let d = api.get(&path).await.ok()?;
        rolled_out(&d, want).then_some(())
    })
    .await
}

pub async fn run(b: WorkloadsBench) -> Result<()> {
    // The controller alone first: no cluster needed.
    let passes = 5;
    let per_set = b.cache_pods / b.cache_sets.max(1);
    let (n, took) =
        skiff_control::controllers::bench::replicaset_reconcile(b.cache_sets, per_set, passes)
            .await?;
    println!(
        "replicaset reconcile: {n} reconciles of {} sets over a {}-pod cache in {:.2} s: {:.0} reconciles/s, {:.2} ms each",
        b.cache_sets,
        b.cache_sets * per_set,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / n as f64
    );

    let max_pods = b.replicas.max(b.rollout + b.rollout / 4 + 1) + 20;
    let c = start_cluster(&b.component, max_pods).await?;
    let api = &c.api;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cpus} cpus shared by the server, the agent and this client");

    // A rolling update of `rollout` replicas.
    let path = format!("/apis/apps/v1/namespaces/{NS}/deployments");
    let json_ct = "application/json";
    api.send(
        reqwest::Method::POST,
        &path,
        Some(deployment("roll", b.rollout)),
        json_ct,
    )
    .await?;
    wait_rolled_out(api, "roll", b.rollout, Duration::from_secs(600)).await?;
    let t = Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "GREETING", "value": "v2"}]}]}}}});
    api.send(
        reqwest::Method::PATCH,
        &format!("{path}/roll"),
        Some(patch),
        "application/strategic-merge-patch+json",
    )
    .await?;
    // The new generation must be observed before completion is judged.
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_rolled_out(api, "roll", b.rollout, Duration::from_secs(900)).await?;
    let rollout = t.elapsed();
    println!(
        "rollout: {} replicas, maxSurge 25% maxUnavailable 25%: {:.1} s",
        b.rollout,
        rollout.as_secs_f64()
    );
    api.send(reqwest::Method::DELETE, &format!("{path}/roll"), None, "")
        .await?;
    wait_for(Duration::from_secs(600), async || {
        let pods = api
            .get(&format!(
                "/api/v1/namespaces/{NS}/pods?labelSelector=app%3Droll"
            ))
            .await
            .ok()?;
        pods["items"].as_array()?.is_empty().then_some(())
    })
    .await?;

    // A large Deployment: time to all Ready, and each pod's start-up.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = watch(api, seen.clone()).await?;
    let t = Instant::now();
    api.send(
        reqwest::Method::POST,
        &path,
        Some(deployment("big", b.replicas)),
        json_ct,
    )
    .await?;
    wait_rolled_out(api, "big", b.replicas, Duration::from_secs(1800)).await?;
    let all_ready = t.elapsed();
    watcher.abort();
    let (mut startup, counted) = {
        let s = seen.lock().unwrap();
        let v: Vec<f64> = s
            .ready
            .iter()
            .filter(|(n, _)| n.starts_with("big-"))
            .filter_map(|(n, r)| Some(r.duration_since(*s.added.get(n)?).as_secs_f64()))
            .collect();
        let len = v.len();
        (v, len)
    };
    let p50 = pct(&mut startup, 0.50);
    let p99 = pct(&mut startup, 0.99);
    println!(
        "deployment: {} replicas all Ready in {:.1} s ({:.0} pods/s); pod start-up created → Ready p50 {p50:.2} s p99 {p99:.2} s over {counted} pods (Kubernetes SLO: p99 ≤ 5 s)",
        b.replicas,
        all_ready.as_secs_f64(),
        b.replicas as f64 / all_ready.as_secs_f64()
    );
    println!(
        "agent RSS {} MiB, server RSS {} MiB with {} pods",
        super::pods::rss_kib(c.agent_pid) / 1024,
        super::pods::rss_kib(c.server_pid) / 1024,
        b.replicas
    );
    Ok(())
}
