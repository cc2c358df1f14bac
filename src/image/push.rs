//! Talking to the cluster's `/v2/` endpoint with the kubeconfig's credentials:
//! blobs streamed from the archive (a HEAD first — a blob the store has is
//! skipped; small ones in one POST, larger ones in 8 MiB PATCH chunks), then
//! manifests; progress on a terminal.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::archive::{Blob, Manifest, Plan};
use super::source::Source;

/// Blobs up to this size go in one request; larger ones in chunks of it.
const CHUNK: usize = 8 << 20;

pub use crate::kubeconfig::Target;

/// The cluster the kubeconfig (`--kubeconfig`, `$KUBECONFIG`, or
/// `./skiff-data/kubeconfig`) names; its token is required.
pub fn target(kubeconfig: Option<PathBuf>) -> Result<Target> {
    let path = crate::kubeconfig::path(kubeconfig);
    let t = crate::kubeconfig::target(&path)?;
    if t.token.is_empty() {
        bail!("kubeconfig {} has no token", path.display());
    }
    Ok(t)
}

/// The `code` and `message` of a distribution error body.
pub fn oci_error(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    (
        v.pointer("/errors/0/code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        v.pointer("/errors/0/message")
            .and_then(Value::as_str)
            .unwrap_or(body)
            .to_string(),
    )
}

impl Target {
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.server)
        };
        self.client.request(method, url).bearer_auth(&self.token)
    }
}

/// A status line on stderr when it is a terminal, nothing otherwise.
pub struct Progress {
    tty: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Replace the status line.
    pub fn status(&self, s: &str) {
        if self.tty {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[K{s}");
            let _ = e.flush();
        }
    }

    /// A line that stays (terminal only).
    pub fn note(&self, s: &str) {
        if self.tty {
            eprint!("\r\x1b[K{s}\n");
        }
    }

    pub fn clear(&self) {
        self.status("");
    }
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

/// Read up to `CHUNK` bytes (less only at the end).
fn read_chunk(r: &mut dyn Read) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(CHUNK);
    r.take(CHUNK as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

async fn check(r: reqwest::Response, what: &str, want: u16) -> Result<reqwest::Response> {
    if r.status().as_u16() == want {
        return Ok(r);
    }
    let status = r.status();
    let (_, message) = oci_error(&r.text().await.unwrap_or_default());
    bail!("{what}: {status}: {message}")
}

async fn push_blob(t: &Target, src: &Source, repo: &str, b: &Blob, p: &Progress) -> Result<()> {
    let label = format!("{} {}", short(&b.digest), human(b.size));
    let head = t
        .request(
            reqwest::Method::HEAD,
            &format!("/v2/{repo}/blobs/{}", b.digest),
        )
        .send()
        .await?;
    if head.status().is_success() {
        p.status(&format!("{label}: already in the cluster"));
        return Ok(());
    }
    let what = format!("push blob {}", b.digest);
    let mut reader = src.reader(&b.path)?;
    if b.size as usize <= CHUNK {
        let bytes = read_chunk(&mut reader)?;
        p.status(&format!("{label}: pushing"));
        let r = t
            .request(
                reqwest::Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={}", b.digest),
            )
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send()
            .await?;
        check(r, &what, 201).await?;
        return Ok(());
    }
    let r = t
        .request(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    let r = check(r, &what, 202).await?;
    let mut location = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .context("upload without a Location")?
        .to_string();
    let mut sent = 0u64;
    loop {
        p.status(&format!("{label}: {} / {}", human(sent), human(b.size)));
        let chunk = read_chunk(&mut reader)?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len() as u64;
        let r = t
            .request(reqwest::Method::PATCH, &location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{sent}-{}", sent + n - 1))
            .body(chunk)
            .send()
            .await?;
        let r = check(r, &what, 202).await?;
        if let Some(l) = r.headers().get("location").and_then(|l| l.to_str().ok()) {
            location = l.to_string();
        }
        sent += n;
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = t
        .request(
            reqwest::Method::PUT,
            &format!("{location}{sep}digest={}", b.digest),
        )
        .send()
        .await?;
    check(r, &what, 201).await?;
    Ok(())
}

/// Push a manifest's blobs, then it under `reference` (a tag or its digest).
/// `Ok(false)` when the registry misses a blob it names (to try again).
async fn push_manifest(
    t: &Target,
    src: &Source,
    repo: &str,
    reference: &str,
    m: &Manifest,
    p: &Progress,
) -> Result<bool> {
    for b in &m.blobs {
        push_blob(t, src, repo, b, p).await?;
    }
    let r = t
        .request(
            reqwest::Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
        )
        .header("Content-Type", &m.media_type)
        .body(m.bytes.clone())
        .send()
        .await?;
    if r.status().as_u16() == 201 {
        return Ok(true);
    }
    let status = r.status();
    let (code, message) = oci_error(&r.text().await.unwrap_or_default());
    if code == "MANIFEST_BLOB_UNKNOWN" {
        return Ok(false);
    }
    bail!("push manifest {}: {status}: {message}", m.digest)
}

/// Push one image; returns the lines to print (`repo:tag@digest`).
pub async fn push(t: &Target, src: &Source, plan: &Plan, p: &Progress) -> Result<Vec<String>> {
    if let Some(n) = &plan.note {
        p.note(n);
    }
    let mut lines = Vec::new();
    for reference in &plan.references {
        let repo = &reference.repository;
        let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
        // A blob collected between its push and the manifest's: once more.
        let mut tries = 0;
        loop {
            tries += 1;
            let mut ok = true;
            for c in &plan.children {
                ok &= push_manifest(t, src, repo, &c.digest, c, p).await?;
            }
            if ok {
                ok = push_manifest(t, src, repo, &tag, &plan.top, p).await?;
            }
            if ok {
                break;
            }
            if tries == 2 {
                bail!("push {repo}:{tag}: the cluster keeps missing blobs the manifest names");
            }
        }
        p.clear();
        lines.push(format!("{repo}:{tag}@{}", plan.top.digest));
    }
    Ok(lines)
}
