//! `skiff image import FILE.tar`: push an OCI layout tarball into the cluster's
//! image store through its `/v2/` endpoint, and print the references.
//! `skiff image pack COMPONENT.wasm --name REF -o FILE.tar`: wrap a Wasm
//! component as an OCI artifact (`application/wasm` layer, wasm config) in an
//! OCI layout tarball.
//! `skiff image pack-rootfs DIR --name REF -o FILE.tar`: pack a directory as a
//! one-layer container image (OCI image config, uncompressed tar layer).

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::Value;
use skiff_control::images::{Reference, digest_of};

#[derive(clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Import an OCI image layout tarball; prints each image's reference.
    Import(ImportArgs),
    /// Pack a Wasm component as an OCI artifact in an OCI layout tarball.
    Pack(PackArgs),
    /// Pack a root filesystem directory as a container image in an OCI layout tarball.
    PackRootfs(PackRootfsArgs),
}

#[derive(clap::Args)]
struct PackRootfsArgs {
    /// The root filesystem (its files, symlinks and modes are kept).
    dir: PathBuf,
    /// The image's reference, e.g. `acc/busybox:v1`.
    #[arg(long)]
    name: String,
    /// The image's Entrypoint (repeat for each word).
    #[arg(long, allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// The image's Cmd (repeat for each word).
    #[arg(long, allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// Environment variables, `KEY=VALUE` (repeatable; default `PATH=/bin:/usr/bin:/sbin:/usr/sbin`).
    #[arg(long)]
    env: Vec<String>,
    /// The image's WorkingDir.
    #[arg(long)]
    workdir: Option<String>,
    /// The image's User (`uid[:gid]`).
    #[arg(long)]
    user: Option<String>,
    /// Where to write the tarball.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(clap::Args)]
struct PackArgs {
    /// The component (`.wasm`).
    component: PathBuf,
    /// The image's reference (`org.opencontainers.image.ref.name`), e.g. `acc/hello:v1`.
    #[arg(long)]
    name: String,
    /// Where to write the tarball.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The tarball (an OCI image layout: oci-layout, index.json, blobs/).
    file: PathBuf,
    /// Kubeconfig of the cluster (default: $KUBECONFIG, else ./skiff-data/kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Repository for images whose ref.name annotation is only a tag (or missing).
    #[arg(long)]
    name: Option<String>,
}

pub async fn run(a: ImageArgs) -> Result<()> {
    match a.what {
        What::Import(i) => import(i).await,
        What::Pack(p) => pack(p),
        What::PackRootfs(p) => pack_rootfs(p),
    }
}

/// The host's architecture as OCI image configs name it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Write a one-layer container image of `a.dir`.
fn pack_rootfs(a: PackRootfsArgs) -> Result<()> {
    Reference::parse(&a.name)?;
    if !a.dir.is_dir() {
        bail!("{} is not a directory", a.dir.display());
    }
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer.mode(tar::HeaderMode::Deterministic);
    layer
        .append_dir_all(".", &a.dir)
        .with_context(|| format!("pack {}", a.dir.display()))?;
    let layer = layer.into_inner()?;
    let env = if a.env.is_empty() {
        vec!["PATH=/bin:/usr/bin:/sbin:/usr/sbin".to_string()]
    } else {
        a.env
    };
    let mut cfg = serde_json::json!({"Env": env});
    if !a.entrypoint.is_empty() {
        cfg["Entrypoint"] = serde_json::json!(a.entrypoint);
    }
    if !a.cmd.is_empty() {
        cfg["Cmd"] = serde_json::json!(a.cmd);
    }
    if let Some(w) = a.workdir {
        cfg["WorkingDir"] = serde_json::json!(w);
    }
    if let Some(u) = a.user {
        cfg["User"] = serde_json::json!(u);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci_arch(), "os": "linux", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(&layer), "size": layer.len()}],
    }))?;
    write_layout(&a.output, &a.name, &manifest, &[&config, &layer])
}

/// Write an OCI layout tarball: `manifest` named `name`, and its blobs.
fn write_layout(output: &PathBuf, name: &str, manifest: &[u8], blobs: &[&[u8]]) -> Result<()> {
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest_of(manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}}],
    }))?;
    let file =
        std::fs::File::create(output).with_context(|| format!("create {}", output.display()))?;
    let mut t = tar::Builder::new(file);
    let mut add = |p: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, p, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for b in blobs.iter().copied().chain(std::iter::once(manifest)) {
        let d = digest_of(b);
        add(
            &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            b,
        )?;
    }
    t.into_inner()?;
    println!("{}", output.display());
    Ok(())
}

/// Write an OCI layout tarball holding `component` as a Wasm artifact.
fn pack(a: PackArgs) -> Result<()> {
    let wasm =
        std::fs::read(&a.component).with_context(|| format!("read {}", a.component.display()))?;
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        bail!("{} is not a Wasm binary", a.component.display());
    }
    Reference::parse(&a.name)?;
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.wasm.config.v0+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": digest_of(&wasm), "size": wasm.len()}],
    }))?;
    write_layout(&a.output, &a.name, &manifest, &[&config, &wasm])
}

struct Target {
    server: String,
    token: String,
    client: reqwest::Client,
}

fn target(kubeconfig: Option<PathBuf>) -> Result<Target> {
    let path = kubeconfig
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
    let cluster_name = ctx.and_then(|c| c["cluster"].as_str());
    let user_name = ctx.and_then(|c| c["user"].as_str());
    let find = |list: &str, name: Option<&str>, field: &str| -> Value {
        kc[list]
            .as_array()
            .and_then(|l| l.iter().find(|e| name.is_none_or(|n| e["name"] == n)))
            .map(|e| e[field].clone())
            .unwrap_or(Value::Null)
    };
    let cluster = find("clusters", cluster_name, "cluster");
    let user = find("users", user_name, "user");
    let server = cluster["server"]
        .as_str()
        .context("kubeconfig has no server")?
        .trim_end_matches('/')
        .to_string();
    let token = user["token"]
        .as_str()
        .context("kubeconfig has no token")?
        .to_string();
    skiff_control::api::tls::install_crypto_provider();
    let mut b = reqwest::Client::builder();
    if let Some(ca) = cluster["certificate-authority-data"].as_str() {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .context("certificate-authority-data")?;
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(Target {
        server,
        token,
        client: b.build()?,
    })
}

fn read_layout(file: &PathBuf) -> Result<HashMap<String, Vec<u8>>> {
    let f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let mut archive = tar::Archive::new(f);
    let mut out = HashMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("{} is not a tar archive", file.display()))?
    {
        let mut entry = entry.with_context(|| format!("read {}", file.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf)?;
        out.insert(path, buf);
    }
    if !out.contains_key("index.json") {
        bail!(
            "{} is not an OCI image layout (no index.json)",
            file.display()
        );
    }
    Ok(out)
}

fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> Result<&'a Vec<u8>> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unsupported digest {digest}"))?;
    let b = files
        .get(&format!("blobs/sha256/{hex}"))
        .with_context(|| format!("blob {digest} missing from the layout"))?;
    if digest_of(b) != digest {
        bail!("blob {digest} in the layout does not match its digest");
    }
    Ok(b)
}

async fn push_blob(t: &Target, repo: &str, digest: &str, bytes: &[u8]) -> Result<()> {
    let head = t
        .client
        .head(format!("{}/v2/{repo}/blobs/{digest}", t.server))
        .bearer_auth(&t.token)
        .send()
        .await?;
    if head.status().is_success() {
        return Ok(());
    }
    let r = t
        .client
        .post(format!(
            "{}/v2/{repo}/blobs/uploads/?digest={digest}",
            t.server
        ))
        .bearer_auth(&t.token)
        .header("Content-Type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!(
            "push blob {digest}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn import(a: ImportArgs) -> Result<()> {
    let files = read_layout(&a.file)?;
    let index: Value =
        serde_json::from_slice(&files["index.json"]).context("index.json is not json")?;
    let t = target(a.kubeconfig)?;
    let manifests = index["manifests"]
        .as_array()
        .context("index.json has no manifests")?;
    if manifests.is_empty() {
        bail!("index.json lists no images");
    }
    for m in manifests {
        let digest = m["digest"].as_str().context("manifest without digest")?;
        let media = m["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json");
        let ref_name = m
            .pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(Value::as_str);
        let full = match (ref_name, &a.name) {
            (Some(r), _) if r.contains('/') || r.contains(':') && !r.starts_with(':') => {
                r.to_string()
            }
            (Some(tag), Some(n)) => format!("{n}:{tag}"),
            (None, Some(n)) => n.clone(),
            (Some(tag), None) => {
                bail!("image {digest} is tagged only {tag:?}: pass --name REPOSITORY")
            }
            (None, None) => bail!(
                "image {digest} has no org.opencontainers.image.ref.name: pass --name REPOSITORY"
            ),
        };
        let reference = Reference::parse(&full)?;
        let repo = reference.repository.clone();
        let manifest_bytes = blob(&files, digest)?;
        let manifest: Value =
            serde_json::from_slice(manifest_bytes).context("manifest is not json")?;
        let mut needed: Vec<&str> = Vec::new();
        if let Some(c) = manifest.pointer("/config/digest").and_then(Value::as_str) {
            needed.push(c);
        }
        for l in manifest["layers"].as_array().into_iter().flatten() {
            if let Some(d) = l["digest"].as_str() {
                needed.push(d);
            }
        }
        for d in needed {
            push_blob(&t, &repo, d, blob(&files, d)?).await?;
        }
        let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
        let r = t
            .client
            .put(format!("{}/v2/{repo}/manifests/{tag}", t.server))
            .bearer_auth(&t.token)
            .header("Content-Type", media)
            .body(manifest_bytes.clone())
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            bail!(
                "push manifest: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        println!("{repo}:{tag}@{digest}");
    }
    Ok(())
}
