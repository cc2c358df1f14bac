//! Archive parsing on small `docker save` archives and nested-index layouts
//! built in the test.

use std::path::Path;

use serde_json::{Value, json};

use super::*;

/// A tar archive of `files`, plus symbolic links `(name, target)`.
fn tarball(dir: &Path, files: &[(&str, Vec<u8>)], links: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.join("a.tar");
    let mut t = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    for (name, to) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        t.append_link(&mut h, name, to).unwrap();
    }
    t.finish().unwrap();
    path
}

fn blob_name(b: &[u8]) -> String {
    format!(
        "blobs/sha256/{}",
        digest_of(b).trim_start_matches("sha256:")
    )
}

fn json_bytes(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn no_hash(_: &str) {}

#[test]
fn docker_save_becomes_a_docker_v2_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let plain = b"a plain tar layer".to_vec();
    let gz = [&[0x1f, 0x8b, 8, 0][..], b"compressed"].concat();
    let config = json_bytes(json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&plain), "sha256:00"]}}));
    let cfg_name = format!("{}.json", digest_of(&config).trim_start_matches("sha256:"));
    let manifest = json_bytes(json!([{
        "Config": cfg_name,
        "RepoTags": ["acc/app:v1", "registry.local:5000/team/app:2"],
        "Layers": ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"],
    }]));
    let path = tarball(
        dir.path(),
        &[
            ("manifest.json", manifest),
            (&cfg_name, config.clone()),
            ("l1/layer.tar", plain.clone()),
            ("l2/layer.tar", gz.clone()),
        ],
        // docker save links a layer it already wrote.
        &[("l3/layer.tar", "../l1/layer.tar")],
    );
    let src = Source::open(&path).unwrap();
    let plans = plan(&src, None, &no_hash).unwrap();
    assert_eq!(plans.len(), 1);
    let p = &plans[0];
    let refs: Vec<String> = p
        .references
        .iter()
        .map(|r| r.to_string_normalized())
        .collect();
    assert_eq!(
        refs,
        ["docker.io/acc/app:v1", "registry.local:5000/team/app:2"]
    );
    assert!(p.children.is_empty());
    let m: Value = serde_json::from_slice(&p.top.bytes).unwrap();
    assert_eq!(p.top.media_type, DOCKER_MANIFEST);
    assert_eq!(m["mediaType"], DOCKER_MANIFEST);
    assert_eq!(p.top.digest, digest_of(&p.top.bytes));
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(m["config"]["digest"], digest_of(&config));
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.docker.image.rootfs.diff.tar",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.diff.tar",
        ]
    );
    assert_eq!(m["layers"][1]["digest"], digest_of(&gz));
    assert_eq!(m["layers"][1]["size"], gz.len());
    // The blobs to push stream from where the archive has them.
    assert_eq!(p.top.blobs[0].path, cfg_name);
    assert_eq!(p.top.blobs[2].digest, digest_of(&gz));
    let mut read = Vec::new();
    src.reader(&p.top.blobs[3].path)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, plain);

    // No RepoTags: --name names the image.
    let manifest =
        json_bytes(json!([{"Config": cfg_name, "RepoTags": null, "Layers": ["l1/layer.tar"]}]));
    let config1 = json_bytes(json!({"rootfs": {"diff_ids": [digest_of(&plain)]}}));
    let cfg1 = "c.json";
    let path = tarball(
        dir.path(),
        &[
            ("manifest.json", manifest.clone()),
            (&cfg_name, config1.clone()),
            ("l1/layer.tar", plain.clone()),
        ],
        &[],
    );
    let src = Source::open(&path).unwrap();
    let err = plan(&src, None, &no_hash).unwrap_err().to_string();
    assert!(err.contains("--name"), "{err}");
    let p = plan(&src, Some("acc/untagged:v3"), &no_hash).unwrap();
    assert_eq!(
        p[0].references[0].to_string_normalized(),
        "docker.io/acc/untagged:v3"
    );
    let _ = cfg1;

    // A plain layer that is not the config's diff_id is refused.
    let manifest =
        json_bytes(json!([{"Config": cfg_name, "RepoTags": ["a:b"], "Layers": ["l1/layer.tar"]}]));
    let path = tarball(
        dir.path(),
        &[
            ("manifest.json", manifest),
            (&cfg_name, config1),
            ("l1/layer.tar", b"other".to_vec()),
        ],
        &[],
    );
    let err = plan(&Source::open(&path).unwrap(), None, &no_hash)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the one the image config names"), "{err}");
}

/// An image manifest with its config and one layer, as layout files.
fn image(files: &mut Vec<(String, Vec<u8>)>, os: &str, arch: &str, wasm: bool) -> (Vec<u8>, Value) {
    let config = json_bytes(json!({"os": os, "architecture": arch}));
    let layer = format!("layer of {os}/{arch}").into_bytes();
    let (ct, lt) = if wasm {
        ("application/vnd.wasm.config.v0+json", "application/wasm")
    } else {
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
        )
    };
    let m = json_bytes(json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": ct, "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": lt, "digest": digest_of(&layer), "size": layer.len()}]}));
    let desc = json!({"mediaType": OCI_MANIFEST, "digest": digest_of(&m), "size": m.len(),
        "platform": {"os": os, "architecture": arch}});
    files.push((blob_name(&config), config));
    files.push((blob_name(&layer), layer));
    files.push((blob_name(&m), m.clone()));
    (m, desc)
}

fn index_of(entries: Vec<Value>) -> Vec<u8> {
    json_bytes(json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}))
}

fn layout(
    dir: &Path,
    mut files: Vec<(String, Vec<u8>)>,
    top: &[u8],
    name: &str,
) -> std::path::PathBuf {
    files.push((blob_name(top), top.to_vec()));
    files.push((
        "index.json".into(),
        json_bytes(
            json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_INDEX,
            "digest": digest_of(top), "size": top.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}}]}),
        ),
    ));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    tarball(dir, &refs, &[])
}

#[test]
fn nested_index_with_one_platform_imports_that_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let (host, host_desc) = image(&mut files, "linux", host_arch(), false);
    // Another platform the archive does not hold, and an attestation.
    let mut elsewhere = Vec::new();
    let (_, other_desc) = image(&mut elsewhere, "linux", "s390x", false);
    let (att, mut att_desc) = image(&mut files, "unknown", "unknown", false);
    att_desc["annotations"] = json!({"vnd.docker.reference.type": "attestation-manifest"});
    let _ = att;
    let inner = index_of(vec![other_desc, host_desc, att_desc]);
    files.push((blob_name(&inner), inner.clone()));
    let outer = index_of(vec![
        json!({"mediaType": OCI_INDEX, "digest": digest_of(&inner), "size": inner.len()}),
    ]);
    let path = layout(dir.path(), files, &outer, "acc/multi:v1");
    let plans = plan(&Source::open(&path).unwrap(), None, &no_hash).unwrap();
    assert_eq!(plans.len(), 1);
    let p = &plans[0];
    assert_eq!(
        p.references[0].to_string_normalized(),
        "docker.io/acc/multi:v1"
    );
    assert!(p.children.is_empty());
    assert_eq!(p.top.digest, digest_of(&host));
    assert_eq!(p.top.media_type, OCI_MANIFEST);
    assert_eq!(p.top.blobs.len(), 2);
    let note = p.note.as_deref().unwrap();
    assert!(note.contains(&format!("linux/{}", host_arch())), "{note}");
}

#[test]
fn complete_index_is_kept_whole_and_wasm_is_wasi_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let (_, wasm_desc) = image(&mut files, "wasip2", "wasm", true);
    let (_, linux_desc) = image(&mut files, "linux", host_arch(), false);
    let index = index_of(vec![linux_desc, wasm_desc]);
    let path = layout(dir.path(), files.clone(), &index, "acc/both:v1");
    let plans = plan(&Source::open(&path).unwrap(), None, &no_hash).unwrap();
    let p = &plans[0];
    assert_eq!(p.top.digest, digest_of(&index));
    assert_eq!(p.top.media_type, OCI_INDEX);
    assert_eq!(p.children.len(), 2);
    assert!(p.children.iter().all(|c| c.blobs.len() == 2));
    let note = p.note.as_deref().unwrap();
    assert!(
        note.contains("kept whole") && note.contains("wasip2/wasm"),
        "{note}"
    );

    // The same layout as a directory.
    let root = dir.path().join("layout");
    for (name, data) in &files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    std::fs::write(root.join(blob_name(&index)), &index).unwrap();
    std::fs::write(
        root.join("index.json"),
        json_bytes(
            json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_INDEX,
            "digest": digest_of(&index), "size": index.len(),
            "annotations": {"io.containerd.image.name": "docker.io/acc/dir:v2",
                "org.opencontainers.image.ref.name": "v2"}}]}),
        ),
    )
    .unwrap();
    let plans = plan(&Source::open(&root).unwrap(), None, &no_hash).unwrap();
    assert_eq!(
        plans[0].references[0].to_string_normalized(),
        "docker.io/acc/dir:v2"
    );
    assert_eq!(plans[0].children.len(), 2);
}

#[test]
fn an_index_without_this_platform_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let (_, a) = image(&mut files, "linux", "s390x", false);
    let (_, b) = image(&mut files, "linux", "ppc64le", false);
    let inner = index_of(vec![a, b]);
    files.push((blob_name(&inner), inner.clone()));
    let outer = index_of(vec![
        json!({"mediaType": OCI_INDEX, "digest": digest_of(&inner), "size": inner.len()}),
    ]);
    let path = layout(dir.path(), files, &outer, "acc/far:v1");
    let err = plan(&Source::open(&path).unwrap(), None, &no_hash)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/s390x, linux/ppc64le") && err.contains("wasi/wasm"),
        "{err}"
    );
}
