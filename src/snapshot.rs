//! `skiff snapshot save|restore|inspect`: back up a running cluster's store to a
//! file and build a new data dir from one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
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
    #[command(flatten)]
    target: crate::kubeconfig::TargetArgs,
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

async fn save(a: SaveArgs) -> Result<()> {
    let t = a.target.target()?;
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
