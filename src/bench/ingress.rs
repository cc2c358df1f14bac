//! `skiff bench ingress`: HTTP through the node's Ingress router beside the
//! same pod at its pod IP (wrk, same run), with nginx as a reverse proxy to
//! that pod as the anchor a user compares with (an Ingress controller is
//! nginx or Traefik elsewhere): throughput at 64 connections, and the p50
//! one connection adds.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::pods::{Api, start_cluster_with, wait_for, wrk_with};
use super::services::post;

#[derive(clap::Args)]
pub struct IngressBench {
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
}

const NS: &str = "default";
const HOST: &str = "bench.ingress.example";

/// nginx as a reverse proxy on `port` to `backend`, with keep-alive
/// upstream connections (as ingress-nginx configures it); killed on drop.
struct Nginx {
    child: std::process::Child,
    /// Its config, pid and logs; kept until it is gone.
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(port: u16, backend: &str) -> Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 2;\n\
                 pid {pid};\n\
                 error_log {dir}/error.log;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n\
                   access_log off;\n\
                   client_body_temp_path {dir};\n\
                   proxy_temp_path {dir};\n\
                   upstream pod {{ server {backend}; keepalive 128; }}\n\
                   server {{\n\
                     listen 127.0.0.1:{port};\n\
                     location / {{\n\
                       proxy_pass http://pod;\n\
                       proxy_http_version 1.1;\n\
                       proxy_set_header Connection \"\";\n\
                       proxy_set_header Host $host;\n\
                       proxy_set_header X-Forwarded-For $remote_addr;\n\
                     }}\n\
                   }}\n\
                 }}\n",
                pid = dir.path().join("nginx.pid").display(),
                dir = dir.path().display(),
            ),
        )?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("run nginx (apt-get install nginx-light)")?;
        Ok(Nginx { child, _dir: dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line(what: &str, r: (f64, f64, f64)) {
    println!(
        "{what:<22} {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
        r.0, r.1, r.2
    );
}

pub async fn run(b: IngressBench) -> Result<()> {
    let port = super::free_port()?;
    let args = vec!["--ingress-http-port".to_string(), port.to_string()];
    let cluster = start_cluster_with(&b.component, 20, &args).await?;
    let api = &cluster.api;
    let ip = serve_one(api).await?;
    let host = format!("Host: {HOST}");
    let via = format!("http://127.0.0.1:{port}/");
    let pod = format!("http://{ip}:8080/");
    wait_for(Duration::from_secs(30), async || {
        wrk_with(&via, 1, 1, &[&host]).ok().map(|_| ())
    })
    .await
    .context("the Ingress is served")?;
    let nginx_port = super::free_port()?;
    let _nginx = Nginx::start(nginx_port, &format!("{ip}:8080"))?;
    let nginx = format!("http://127.0.0.1:{nginx_port}/");
    wait_for(Duration::from_secs(10), async || {
        wrk_with(&nginx, 1, 1, &[&host]).ok().map(|_| ())
    })
    .await
    .context("nginx answers")?;
    for (conns, label) in [(b.connections, "connections"), (1, "connection")] {
        println!("-- {conns} {label}, {} s each --", b.seconds);
        let d1 = wrk_with(&pod, b.seconds, conns, &[])?;
        let r = wrk_with(&via, b.seconds, conns, &[&host])?;
        let n = wrk_with(&nginx, b.seconds, conns, &[&host])?;
        let d2 = wrk_with(&pod, b.seconds, conns, &[])?;
        let d = (
            (d1.0 + d2.0) / 2.0,
            (d1.1 + d2.1) / 2.0,
            (d1.2 + d2.2) / 2.0,
        );
        line("pod IP (mean of two)", d);
        line("Skiff Ingress router", r);
        line("nginx reverse proxy", n);
        println!(
            "router/pod throughput {:.2}x (nginx/pod {:.2}x); added p50 {:.0} us (nginx {:.0} us)",
            r.0 / d.0,
            n.0 / d.0,
            (r.1 - d.1) * 1000.0,
            (n.1 - d.1) * 1000.0
        );
    }
    Ok(())
}

/// One hello-wasm pod behind a Service and an Ingress; its pod IP.
async fn serve_one(api: &Api) -> Result<String> {
    post(
        api,
        &format!("/api/v1/namespaces/{NS}/pods"),
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "bench/hello:v1",
                "ports": [{"name": "http", "containerPort": 8080}]}]}}),
    )
    .await?;
    post(
        api,
        &format!("/api/v1/namespaces/{NS}/services"),
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await?;
    post(
        api,
        &format!("/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"),
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
            "spec": {"rules": [{"host": HOST, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
    )
    .await?;
    wait_for(Duration::from_secs(60), async || {
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
    .context("pod web Ready")
}
