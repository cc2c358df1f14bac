//! `skiff image ls` (the catalog, each repository's tags and what each tag
//! names: digest, Wasm or container, size of its blobs) and `skiff image rm`
//! (`DELETE /v2/<name>/manifests/<tag or digest>`).

use anyhow::{Result, bail};
use serde_json::Value;
use skiff_common::media::{ImageKind, WASM_ARCHES, kind_of};
use skiff_control::imagestore::Reference;

use super::push::{Target, human, oci_error};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// One row of `skiff image ls`.
pub struct Row {
    pub reference: String,
    pub digest: String,
    pub kind: String,
    pub size: u64,
}

async fn get_json(t: &Target, path: &str) -> Result<(Value, Option<String>)> {
    let r = t
        .request(reqwest::Method::GET, path)
        .header("Accept", ACCEPT)
        .send()
        .await?;
    let status = r.status();
    let digest = r
        .headers()
        .get("docker-content-digest")
        .and_then(|d| d.to_str().ok())
        .map(str::to_string);
    let body = r.text().await?;
    if !status.is_success() {
        bail!("GET {path}: {status}: {}", oci_error(&body).1);
    }
    Ok((serde_json::from_str(&body)?, digest))
}

fn text<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// Kind and blob size of an image manifest.
fn describe(m: &Value) -> (&'static str, u64) {
    let layers: Vec<&Value> = m["layers"].as_array().into_iter().flatten().collect();
    let types: Vec<&str> = layers.iter().map(|l| text(l, "/mediaType")).collect();
    let size = m
        .pointer("/config/size")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + layers
            .iter()
            .filter_map(|l| l["size"].as_u64())
            .sum::<u64>();
    let kind = match kind_of(text(m, "/config/mediaType"), &types) {
        Some(ImageKind::Wasm) => "Wasm",
        Some(ImageKind::Container) => "container",
        None => "other",
    };
    (kind, size)
}

/// Every tagged image of the cluster.
pub async fn rows(t: &Target) -> Result<Vec<Row>> {
    let (catalog, _) = get_json(t, "/v2/_catalog").await?;
    let mut rows = Vec::new();
    for repo in catalog["repositories"].as_array().into_iter().flatten() {
        let repo = repo.as_str().unwrap_or_default();
        let (tags, _) = get_json(t, &format!("/v2/{repo}/tags/list")).await?;
        for tag in tags["tags"].as_array().into_iter().flatten() {
            let tag = tag.as_str().unwrap_or_default();
            let (m, digest) = get_json(t, &format!("/v2/{repo}/manifests/{tag}")).await?;
            let (kind, size) = match m["manifests"].as_array() {
                Some(list) => {
                    let wasm = list.iter().any(|d| {
                        text(d, "/platform/os").starts_with("wasi")
                            || WASM_ARCHES.contains(&text(d, "/platform/architecture"))
                    });
                    let mut size = 0;
                    for d in list {
                        if let Ok((child, _)) =
                            get_json(t, &format!("/v2/{repo}/manifests/{}", text(d, "/digest")))
                                .await
                        {
                            size += describe(&child).1;
                        }
                    }
                    let kind = if wasm { "Wasm" } else { "container" };
                    (format!("{kind} (index of {})", list.len()), size)
                }
                None => {
                    let (kind, size) = describe(&m);
                    (kind.to_string(), size)
                }
            };
            rows.push(Row {
                reference: format!("{repo}:{tag}"),
                digest: digest.unwrap_or_default(),
                kind,
                size,
            });
        }
    }
    Ok(rows)
}

pub async fn ls(t: &Target) -> Result<()> {
    let rows = rows(t).await?;
    let w = |f: &dyn Fn(&Row) -> usize, title: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let (wr, wd, wk) = (
        w(&|r| r.reference.len(), "REFERENCE"),
        w(&|r| r.digest.len(), "DIGEST"),
        w(&|r| r.kind.len(), "KIND"),
    );
    println!(
        "{:wr$}  {:wd$}  {:wk$}  SIZE",
        "REFERENCE", "DIGEST", "KIND"
    );
    for r in &rows {
        println!(
            "{:wr$}  {:wd$}  {:wk$}  {}",
            r.reference,
            r.digest,
            r.kind,
            human(r.size)
        );
    }
    Ok(())
}

/// Delete each reference; every failure is reported, and fails the command.
pub async fn rm(t: &Target, refs: &[String]) -> Result<()> {
    let mut failed = Vec::new();
    for given in refs {
        let r = match Reference::parse(given) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                failed.push(given.clone());
                continue;
            }
        };
        let reference = r.digest.clone().or(r.tag.clone()).unwrap_or_default();
        let resp = t
            .request(
                reqwest::Method::DELETE,
                &format!("/v2/{}/manifests/{reference}", r.repository),
            )
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            println!("deleted {}", r.to_string_normalized());
            continue;
        }
        let (code, message) = oci_error(&resp.text().await.unwrap_or_default());
        if status.as_u16() == 404 && code.starts_with("MANIFEST_UNKNOWN") {
            eprintln!(
                "error: image {given} ({}) not found in the cluster",
                r.to_string_normalized()
            );
        } else {
            eprintln!("error: delete {given}: {status}: {message}");
        }
        failed.push(given.clone());
    }
    if !failed.is_empty() {
        bail!("could not delete {}", failed.join(", "));
    }
    Ok(())
}
