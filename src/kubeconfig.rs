//! The cluster a kubeconfig names, for the CLI's own requests (`skiff image`,
//! `skiff snapshot`): its server URL, its token, and an HTTPS client that
//! trusts the cluster CA from the kubeconfig.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::Value;

/// Server URL (no trailing `/`), token and a client trusting the cluster CA.
pub struct Target {
    pub server: String,
    pub token: String,
    pub client: reqwest::Client,
}

/// The kubeconfig to read: `explicit`, else `$KUBECONFIG`, else the README's
/// `./skiff-data/kubeconfig`.
pub fn path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("skiff-data/kubeconfig"))
}

/// The current context's server, token and CA in the kubeconfig at `path`.
pub fn target(path: &Path) -> Result<Target> {
    let text = std::fs::read_to_string(path)
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
    let (cluster, user) = (find("clusters", "cluster"), find("users", "user"));
    let server = cluster["server"]
        .as_str()
        .with_context(|| format!("kubeconfig {} has no server", path.display()))?
        .trim_end_matches('/')
        .to_string();
    let token = user["token"].as_str().unwrap_or_default().to_string();
    skiff_control::api::tls::install_crypto_provider();
    let ca = cluster["certificate-authority-data"]
        .as_str()
        .with_context(|| {
            format!(
                "kubeconfig {} has no certificate-authority-data",
                path.display()
            )
        })?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .context("certificate-authority-data")?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .build()?;
    Ok(Target {
        server,
        token,
        client,
    })
}

/// Which server to talk to, and as whom: a kubeconfig's server, CA and
/// token, with `--server` and `--token` taking precedence.
#[derive(clap::Args)]
pub struct TargetArgs {
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

impl TargetArgs {
    pub fn target(&self) -> anyhow::Result<Target> {
        let path = path(
            self.kubeconfig
                .clone()
                .or_else(|| self.data_dir.as_ref().map(|d| d.join("kubeconfig"))),
        );
        let mut t = target(&path)?;
        if let Some(s) = &self.server {
            t.server = s.trim_end_matches('/').to_string();
        }
        if let Some(tok) = &self.token {
            t.token = tok.clone();
        }
        if t.token.is_empty() {
            anyhow::bail!("kubeconfig {} has no token (give --token)", path.display());
        }
        Ok(t)
    }
}
