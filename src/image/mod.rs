//! `skiff image import FILE`: push the images of an OCI image layout (tarball,
//! `.tar.gz` or directory) or a `docker save` archive into the cluster's image
//! store through its `/v2/` endpoint, and print the references.
//! `skiff image ls` / `skiff image rm REF...`: list and delete them.
//! `skiff image pack COMPONENT.wasm --name REF -o FILE.tar`: wrap a Wasm
//! component as an OCI artifact (`application/wasm` layer, wasm config) in an
//! OCI layout tarball.
//! `skiff image pack-rootfs DIR --name REF -o FILE.tar`: pack a directory as a
//! one-layer container image (OCI image config, uncompressed tar layer).

mod archive;
mod list;
mod push;
mod source;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use skiff_control::imagestore::{Reference, digest_of};

#[derive(clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Import an OCI image layout (tarball, .tar.gz or directory) or a `docker save`
    /// archive; prints each image's reference.
    Import(ImportArgs),
    /// List the cluster's images: reference, digest, kind (Wasm/container), size.
    Ls(LsArgs),
    /// Delete images by tag or digest (blobs no other image uses go too).
    Rm(RmArgs),
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
struct LsArgs {
    /// Kubeconfig of the cluster (default: $KUBECONFIG, else ./skiff-data/kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RmArgs {
    /// References, e.g. `acc/hello:v1` or `acc/hello@sha256:...`.
    #[arg(required = true)]
    references: Vec<String>,
    /// Kubeconfig of the cluster (default: $KUBECONFIG, else ./skiff-data/kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// An OCI image layout (tarball, .tar.gz or directory: index.json, blobs/) or a
    /// `docker save` archive (manifest.json).
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
        What::Ls(l) => list::ls(&push::target(l.kubeconfig)?).await,
        What::Rm(r) => list::rm(&push::target(r.kubeconfig)?, &r.references).await,
        What::Pack(p) => pack(p),
        What::PackRootfs(p) => pack_rootfs(p),
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
        "architecture": archive::host_arch(), "os": "linux", "config": cfg,
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

async fn import(a: ImportArgs) -> Result<()> {
    let progress = push::Progress::new();
    let src = source::Source::open(&a.file)?;
    let plans = archive::plan(&src, a.name.as_deref(), &|s| progress.status(s))
        .with_context(|| format!("read {}", a.file.display()))?;
    progress.clear();
    let t = push::target(a.kubeconfig)?;
    for plan in &plans {
        for line in push::push(&t, &src, plan, &progress).await? {
            println!("{line}");
        }
    }
    Ok(())
}
