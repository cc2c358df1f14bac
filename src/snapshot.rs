//! `skiff snapshot save|restore|inspect`: back up a running cluster's store to a
//! file and build a new data dir from one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Subcommand;
use serde_json::Value;
use skiff_control::store::backup::{self, Backup};

#[derive(clap::Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Save a consistent snapshot of a running cluster's store to FILE (mode 0600:
    /// it holds the cluster CA key and tokens).
    Save(SaveArgs),
    /// Build a new one-server data dir from a snapshot (the dir must not exist or
    /// be empty); then run `skiff server --data-dir D`.
    Restore(RestoreArgs),
    /// Check a snapshot file and print its header.
    Inspect {
        /// The snapshot file.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct SaveArgs {
    /// Where to write the snapshot.
    file: PathBuf,
    /// URL of a server (https://HOST:6443); default: the kubeconfig's.
    #[arg(long)]
    server: Option<String>,
    /// Kubeconfig with the server, CA and token (default: `<data-dir>/kubeconfig`
    /// with --data-dir, else $KUBECONFIG, else ./skiff-data/kubeconfig).
    #[arg(long, conflicts_with = "data_dir")]
    kubeconfig: Option<PathBuf>,
    /// A server's data dir: use its kubeconfig.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The admin or join token (default: the kubeconfig's).
    #[arg(long)]
    token: Option<String>,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The snapshot file.
    file: PathBuf,
    /// The new data dir (must not exist, or be empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// The peer address the restored server will listen on (its `--peer-addr`).
    #[arg(long, default_value = "127.0.0.1:6444")]
    peer_addr: String,
}

pub async fn run(a: SnapshotArgs) -> Result<()> {
    match a.command {
        SnapshotCommand::Save(s) => save(s).await,
        SnapshotCommand::Restore(r) => restore(r),
        SnapshotCommand::Inspect { file } => {
            let bytes = read(&file)?;
            let h = backup::header(&bytes).with_context(|| file.display().to_string())?;
            Backup::decode(&bytes).with_context(|| file.display().to_string())?;
            println!("{}", serde_json::to_string_pretty(&h)?);
            Ok(())
        }
    }
}

fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("read {}", file.display()))
}

/// Server URL, token and an HTTPS client trusting the cluster CA.
struct Target {
    server: String,
    token: String,
    client: reqwest::Client,
}

fn target(a: &SaveArgs) -> Result<Target> {
    let path = a
        .kubeconfig
        .clone()
        .or_else(|| a.data_dir.as_ref().map(|d| d.join("kubeconfig")))
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("skiff-data/kubeconfig"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read kubeconfig {}", path.display()))?;
    let kc: Value = serde_norway::from_str(&text)
        .with_context(|| format!("parse kubeconfig {}", path.display()))?;
    let current = kc["current-context"].as_str().unwrap_or_default();
    let ctx = kc["contexts"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == current))
        .map(|c| &c["context"]);
    let find = |list: &str, field: &str| -> Value {
        let name = ctx.and_then(|c| c[field].as_str());
        kc[list]
            .as_array()
            .and_then(|l| l.iter().find(|e| name.is_none_or(|n| e["name"] == n)))
            .map(|e| e[field].clone())
            .unwrap_or(Value::Null)
    };
    let cluster = find("clusters", "cluster");
    let user = find("users", "user");
    let server = match &a.server {
        Some(s) => s.clone(),
        None => cluster["server"]
            .as_str()
            .context("kubeconfig has no server")?
            .to_string(),
    };
    let token = match &a.token {
        Some(t) => t.clone(),
        None => user["token"]
            .as_str()
            .context("kubeconfig has no token (give --token)")?
            .to_string(),
    };
    skiff_control::api::tls::install_crypto_provider();
    let mut b = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10));
    match cluster["certificate-authority-data"].as_str() {
        Some(ca) => {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(ca)
                .context("certificate-authority-data")?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        None => bail!(
            "kubeconfig {} has no certificate-authority-data",
            path.display()
        ),
    }
    Ok(Target {
        server: server.trim_end_matches('/').to_string(),
        token,
        client: b.build()?,
    })
}

async fn save(a: SaveArgs) -> Result<()> {
    let t = target(&a)?;
    let url = format!("{}/skiff/v0/snapshot", t.server);
    let resp = t
        .client
        .get(&url)
        .bearer_auth(&t.token)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!(
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        );
    }
    let b = Backup::decode(&bytes).with_context(|| format!("snapshot from {url}"))?;
    backup::write_private(&a.file, &bytes)?;
    println!(
        "snapshot saved to {}: revision {}, {} keys, {} bytes",
        a.file.display(),
        b.applied,
        b.kvs.len(),
        bytes.len()
    );
    Ok(())
}

fn restore(a: RestoreArgs) -> Result<()> {
    let bytes = read(&a.file)?;
    let b = Backup::decode(&bytes).with_context(|| a.file.display().to_string())?;
    let r = backup::restore(&b, &a.data_dir, &a.peer_addr)?;
    println!(
        "restored revision {} ({} keys) into {} as node {:x}; start it with: skiff server --data-dir {} --peer-addr {}",
        r.applied,
        r.keys,
        a.data_dir.display(),
        r.node_id,
        a.data_dir.display(),
        a.peer_addr
    );
    Ok(())
}
