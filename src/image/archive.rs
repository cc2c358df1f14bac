//! What an archive holds, as images to push: an OCI image layout (`index.json`,
//! `blobs/`; image indexes nested to any depth) or a legacy `docker save`
//! archive (`manifest.json`, `<layer>.tar`, `<config>.json`), turned into
//! manifests, the blobs they name and the references to push them under.
//!
//! **An image index is kept whole when every manifest it lists is in the
//! archive with its blobs; otherwise (e.g. `docker save` of one platform) the
//! manifest for this node's platform is imported in its place.** The node's
//! platform is `wasi/wasm` for a Wasm artifact, else `linux/<host arch>`.

use std::io::Read;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use skiff_common::media::WASM_ARCHES;
use skiff_control::imagestore::{Reference, digest_of};

use super::source::Source;

/// JSON files larger than this are not metadata.
const MAX_JSON: u64 = 16 << 20;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A blob to push: its digest, size and where the archive has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub path: String,
}

/// A manifest (or index) to push, with the blobs it needs first.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub blobs: Vec<Blob>,
}

/// One image: `children` (an index's manifests, pushed by digest), then `top`
/// under each of `references`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub references: Vec<Reference>,
    pub children: Vec<Manifest>,
    pub top: Manifest,
    /// What was done to the archive's image, when it was not pushed as is.
    pub note: Option<String>,
}

/// The host's architecture as OCI platforms name it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Read the images in `src`; `name` is the repository (or full reference) for
/// images the archive names only by tag, or not at all. `on_hash` is told
/// about layers being hashed (legacy archives name layers by path only).
pub fn plan(src: &Source, name: Option<&str>, on_hash: &dyn Fn(&str)) -> Result<Vec<Plan>> {
    if src.has("index.json") {
        oci_layout(src, name)
    } else if src.has("manifest.json") {
        docker_save(src, name, on_hash)
    } else {
        bail!(
            "{} is neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)",
            src.name()
        )
    }
}

fn blob_path(digest: &str) -> Result<String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(format!("blobs/sha256/{hex}"))
        }
        _ => bail!("unsupported digest {digest:?}"),
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A JSON blob of the layout, checked against its digest.
fn json_blob(src: &Source, digest: &str) -> Result<(Vec<u8>, Value)> {
    let path = blob_path(digest)?;
    if !src.has(&path) {
        bail!("blob {digest} is missing from {}", src.name());
    }
    let bytes = src.read(&path, MAX_JSON)?;
    if digest_of(&bytes) != digest {
        bail!("blob {digest} in {} does not match its digest", src.name());
    }
    let v = serde_json::from_slice(&bytes).with_context(|| format!("blob {digest} is not JSON"))?;
    Ok((bytes, v))
}

fn is_index(media: &str, v: &Value) -> bool {
    media == OCI_INDEX || media == DOCKER_LIST || v.get("manifests").is_some()
}

/// A layout blob a manifest names (config or layer), present with its size.
fn layout_blob(src: &Source, d: &Value) -> Result<Blob> {
    let digest = text(d, "/digest");
    let path = blob_path(digest)?;
    let size = src
        .size(&path)
        .with_context(|| format!("blob {digest} is missing from {}", src.name()))?;
    Ok(Blob {
        digest: digest.to_string(),
        size,
        path,
    })
}

/// An image manifest of the layout and its blobs.
fn layout_manifest(src: &Source, desc: &Value) -> Result<Manifest> {
    let digest = text(desc, "/digest");
    let (bytes, v) = json_blob(src, digest)?;
    let mut blobs = Vec::new();
    if let Some(c) = v.get("config") {
        blobs.push(layout_blob(src, c)?);
    }
    for l in v
        .get("layers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        blobs.push(layout_blob(src, l)?);
    }
    let media = match text(&v, "/mediaType") {
        "" => match text(desc, "/mediaType") {
            "" => OCI_MANIFEST,
            m => m,
        },
        m => m,
    };
    Ok(Manifest {
        digest: digest.to_string(),
        media_type: media.to_string(),
        bytes,
        blobs,
    })
}

/// `os/arch[/variant]` of an index entry.
fn platform(desc: &Value) -> String {
    let mut p = format!(
        "{}/{}",
        text(desc, "/platform/os"),
        text(desc, "/platform/architecture")
    );
    if let Some(v) = desc.pointer("/platform/variant").and_then(Value::as_str) {
        p = format!("{p}/{v}");
    }
    p
}

fn is_wasm_platform(desc: &Value) -> bool {
    text(desc, "/platform/os").starts_with("wasi")
        || WASM_ARCHES.contains(&text(desc, "/platform/architecture"))
}

fn is_attestation(desc: &Value) -> bool {
    desc.pointer("/annotations/vnd.docker.reference.type")
        .is_some()
        || text(desc, "/platform/os") == "unknown"
}

/// The image manifests under an index, through nested indexes, with the
/// descriptors that lead to them (the nearest platform wins).
fn leaves(src: &Source, index: &Value, depth: usize, out: &mut Vec<Value>) -> Result<()> {
    if depth > 8 {
        bail!("image indexes nested too deep in {}", src.name());
    }
    for d in index
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let nested = is_index(text(d, "/mediaType"), &Value::Null)
            || (src.has(&blob_path(text(d, "/digest"))?) && {
                let (_, v) = json_blob(src, text(d, "/digest"))?;
                is_index("", &v)
            });
        if nested {
            let (_, v) = json_blob(src, text(d, "/digest"))?;
            let before = out.len();
            leaves(src, &v, depth + 1, out)?;
            // An inner entry without a platform takes the outer one's.
            if d.get("platform").is_some() {
                for leaf in &mut out[before..] {
                    if leaf.get("platform").is_none() {
                        leaf["platform"] = d["platform"].clone();
                    }
                }
            }
        } else {
            out.push(d.clone());
        }
    }
    Ok(())
}

/// The entry of `leaves` this node runs: Wasm, else linux/<host arch>, else
/// the only image there is.
fn choose(leaves: &[Value]) -> Option<&Value> {
    let images: Vec<&Value> = leaves.iter().filter(|d| !is_attestation(d)).collect();
    images
        .iter()
        .find(|d| is_wasm_platform(d))
        .or_else(|| {
            images.iter().find(|d| {
                text(d, "/platform/os") == "linux"
                    && text(d, "/platform/architecture") == host_arch()
            })
        })
        .or_else(|| (images.len() == 1).then(|| &images[0]))
        .copied()
}

/// The full reference an entry of `index.json` is pushed under.
fn layout_reference(entry: &Value, name: Option<&str>) -> Result<Reference> {
    let digest = text(entry, "/digest");
    let containerd = entry
        .pointer("/annotations/io.containerd.image.name")
        .and_then(Value::as_str);
    let ref_name = entry
        .pointer("/annotations/org.opencontainers.image.ref.name")
        .and_then(Value::as_str);
    let full = match (containerd, ref_name, name) {
        (Some(c), _, _) => c.to_string(),
        (None, Some(r), _) if r.contains('/') || r.contains(':') && !r.starts_with(':') => {
            r.to_string()
        }
        (None, Some(tag), Some(n)) => format!("{n}:{}", tag.trim_start_matches(':')),
        (None, None, Some(n)) => n.to_string(),
        (None, Some(tag), None) => {
            bail!("image {digest} is tagged only {tag:?}: pass --name REPOSITORY")
        }
        (None, None, None) => {
            bail!("image {digest} has no org.opencontainers.image.ref.name: pass --name REPOSITORY")
        }
    };
    Ok(Reference::parse(&full)?)
}

fn oci_layout(src: &Source, name: Option<&str>) -> Result<Vec<Plan>> {
    let index: Value = serde_json::from_slice(&src.read("index.json", MAX_JSON)?)
        .context("index.json is not JSON")?;
    let entries = index["manifests"]
        .as_array()
        .context("index.json has no manifests")?;
    if entries.is_empty() {
        bail!("index.json lists no images");
    }
    let mut plans = Vec::new();
    for entry in entries {
        let reference = layout_reference(entry, name)?;
        let digest = text(entry, "/digest");
        let (bytes, v) = json_blob(src, digest)?;
        let media = match text(&v, "/mediaType") {
            "" => text(entry, "/mediaType"),
            m => m,
        };
        if !is_index(media, &v) {
            plans.push(Plan {
                references: vec![reference],
                children: Vec::new(),
                top: layout_manifest(src, entry)?,
                note: None,
            });
            continue;
        }
        // A one-level index whose manifests are all here is kept whole.
        let listed = v["manifests"].as_array().cloned().unwrap_or_default();
        let whole: Option<Vec<Manifest>> = listed
            .iter()
            .map(|d| {
                let m = layout_manifest(src, d).ok()?;
                let parsed: Value = serde_json::from_slice(&m.bytes).ok()?;
                (!is_index(&m.media_type, &parsed)).then_some(m)
            })
            .collect();
        if let Some(children) = whole
            && !children.is_empty()
        {
            let mut all = Vec::new();
            leaves(src, &v, 0, &mut all)?;
            let note = match choose(&all) {
                Some(d) => format!(
                    "{}: image index kept whole ({} manifests; this node runs {})",
                    reference.to_string_normalized(),
                    children.len(),
                    platform(d)
                ),
                None => format!(
                    "{}: image index kept whole ({} manifests; none for wasi/wasm or linux/{})",
                    reference.to_string_normalized(),
                    children.len(),
                    host_arch()
                ),
            };
            plans.push(Plan {
                references: vec![reference],
                children,
                top: Manifest {
                    digest: digest.to_string(),
                    media_type: if media.is_empty() { OCI_INDEX } else { media }.to_string(),
                    bytes,
                    blobs: Vec::new(),
                },
                note: Some(note),
            });
            continue;
        }
        let mut all = Vec::new();
        leaves(src, &v, 0, &mut all)?;
        let present: Vec<Value> = all
            .into_iter()
            .filter(|d| {
                blob_path(text(d, "/digest"))
                    .map(|p| src.has(&p))
                    .unwrap_or(false)
            })
            .collect();
        let Some(chosen) = choose(&present) else {
            let have: Vec<String> = present
                .iter()
                .filter(|d| !is_attestation(d))
                .map(platform)
                .collect();
            bail!(
                "image index {digest} ({}) has no manifest for wasi/wasm or linux/{} in {} (it has: {})",
                reference.to_string_normalized(),
                host_arch(),
                src.name(),
                if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                }
            );
        };
        let top = layout_manifest(src, chosen)?;
        plans.push(Plan {
            note: Some(format!(
                "{}: the archive holds only part of image index {digest}; imported the {} manifest {}",
                reference.to_string_normalized(),
                platform(chosen),
                top.digest
            )),
            references: vec![reference],
            children: Vec::new(),
            top,
        });
    }
    Ok(plans)
}

/// Digest and size of a file in the archive, and the media type its first
/// bytes show (gzip, zstd or plain tar).
fn hash_layer(src: &Source, path: &str) -> Result<(String, u64, &'static str)> {
    let mut r = src.reader(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let mut head: Vec<u8> = Vec::new();
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 4 {
            head.extend_from_slice(&buf[..n.min(4 - head.len())]);
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    let kind = if head.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else {
        "tar"
    };
    let digest = format!(
        "sha256:{}",
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Ok((digest, size, kind))
}

fn docker_save(src: &Source, name: Option<&str>, on_hash: &dyn Fn(&str)) -> Result<Vec<Plan>> {
    let list: Value = serde_json::from_slice(&src.read("manifest.json", MAX_JSON)?)
        .context("manifest.json is not JSON")?;
    let list = list
        .as_array()
        .context("manifest.json is not a list of images")?;
    if list.is_empty() {
        bail!("manifest.json lists no images");
    }
    let mut plans = Vec::new();
    for image in list {
        let config_path = image["Config"]
            .as_str()
            .context("an image in manifest.json has no Config")?;
        let config = src.read(config_path, MAX_JSON)?;
        let config_json: Value = serde_json::from_slice(&config)
            .with_context(|| format!("{config_path} is not JSON"))?;
        let diff_ids: Vec<&str> = config_json
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let paths: Vec<&str> = image["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if paths.is_empty() {
            bail!("image {config_path} in manifest.json has no Layers");
        }
        let mut blobs = vec![Blob {
            digest: digest_of(&config),
            size: config.len() as u64,
            path: config_path.to_string(),
        }];
        let mut layers = Vec::new();
        let mut kinds = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            on_hash(&format!(
                "hashing layer {}/{} of {config_path}",
                i + 1,
                paths.len()
            ));
            let (digest, size, kind) = hash_layer(src, path)?;
            if kind == "tar" && diff_ids.get(i).is_some_and(|d| *d != digest) {
                bail!(
                    "layer {path} is not the one the image config names ({})",
                    diff_ids[i]
                );
            }
            kinds.push(kind);
            layers.push((digest.clone(), size));
            blobs.push(Blob {
                digest,
                size,
                path: path.to_string(),
            });
        }
        // Docker's own media types, unless a zstd layer needs OCI's.
        let oci = kinds.contains(&"zstd");
        let layer_type = |kind: &str| match (oci, kind) {
            (true, "gzip") => "application/vnd.oci.image.layer.v1.tar+gzip",
            (true, "zstd") => "application/vnd.oci.image.layer.v1.tar+zstd",
            (true, _) => "application/vnd.oci.image.layer.v1.tar",
            (false, "gzip") => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (false, _) => "application/vnd.docker.image.rootfs.diff.tar",
        };
        let (media, config_type) = if oci {
            (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
        } else {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
            )
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media,
            "config": {"mediaType": config_type, "size": config.len(), "digest": digest_of(&config)},
            "layers": layers.iter().zip(&kinds).map(|((d, s), k)| json!({
                "mediaType": layer_type(k), "size": s, "digest": d,
            })).collect::<Vec<_>>(),
        }))?;
        let tags: Vec<&str> = image["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let references = if tags.is_empty() {
            let n = name.with_context(|| {
                format!("image {config_path} in manifest.json has no RepoTags: pass --name REPOSITORY[:TAG]")
            })?;
            vec![Reference::parse(n)?]
        } else {
            tags.iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<Vec<_>, _>>()?
        };
        plans.push(Plan {
            references,
            children: Vec::new(),
            top: Manifest {
                digest: digest_of(&manifest),
                media_type: media.to_string(),
                bytes: manifest,
                blobs,
            },
            note: None,
        });
    }
    Ok(plans)
}

#[cfg(test)]
mod tests;
