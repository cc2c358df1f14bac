//! `skiff secrets rotate-key`: a new primary encryption key for values at
//! rest, and everything sealed again with it.

use anyhow::{Context, Result, bail};
use clap::Subcommand;

#[derive(clap::Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    command: SecretsCommand,
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Make a new primary key for Secrets and the cluster's own secrets (the
    /// old keys stay for reading), then write every sealed value again with
    /// it. Only for cluster-managed keys (no --encryption-provider-config).
    RotateKey {
        #[command(flatten)]
        target: crate::kubeconfig::TargetArgs,
    },
}

pub async fn run(a: SecretsArgs) -> Result<()> {
    match a.command {
        SecretsCommand::RotateKey { target } => {
            let t = target.target()?;
            let url = format!("{}/skiff/v0/encryption/rotate", t.server);
            let resp = t
                .client
                .post(&url)
                .bearer_auth(&t.token)
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or(body);
                bail!("POST {url}: {status}: {}", message.trim());
            }
            let v: serde_json::Value = serde_json::from_str(&body).context("rotation answer")?;
            println!(
                "rotated to key {}; {} values sealed again",
                v["key"].as_str().unwrap_or("?"),
                v["rewritten"]
            );
            Ok(())
        }
    }
}
