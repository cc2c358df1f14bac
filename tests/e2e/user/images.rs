//! The cluster's image store: `skiff image import` of an OCI layout tarball (a Wasm
//! artifact), of a `docker save` archive and of a layout with nested indexes,
//! pulls through `/v2/` by tag and digest under normalised names, chunked
//! pushes of large blobs, the errors bad content gets, `skiff image ls` and
//! `skiff image rm`.

use crate::common;

use std::path::{Path, PathBuf};

use anyhow::Result;
use common::digest;
use common::single_server;
use serde_json::{Value, json};

fn hello_wasm() -> Vec<u8> {
    std::fs::read(common::example_wasm("hello-wasm", "hello_wasm.wasm")).unwrap()
}

fn wasm_layout(dir: &Path, wasm: &[u8], name: &str) -> PathBuf {
    common::oci_layout(dir, wasm, "application/wasm", name)
}

#[test]
fn import_then_pull_by_tag_and_digest_and_push_large_blobs() -> Result<()> {
    let (root, s) = single_server()?;
    let wasm = hello_wasm();
    let tarball = wasm_layout(root.path(), &wasm, "acc/hello:v1");
    let out = std::process::Command::new(common::skiff_bin())
        .args(["image", "import"])
        .arg(&tarball)
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        printed.starts_with("docker.io/acc/hello:v1@sha256:"),
        "{printed}"
    );
    let manifest_digest = printed.split('@').nth(1).unwrap().to_string();

    let token = s.admin_token();
    let http = s.http();
    let get = |path: &str| {
        http.get(format!("{}{path}", s.url()))
            .bearer_auth(&token)
            .send()
    };
    // The short and the fully qualified name are the same image.
    for path in [
        "/v2/acc/hello/manifests/v1",
        "/v2/docker.io/acc/hello/manifests/v1",
        &format!("/v2/acc/hello/manifests/{manifest_digest}"),
    ] {
        let r = get(path)?;
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(
            r.headers()["docker-content-digest"].to_str()?,
            manifest_digest
        );
        let m: Value = r.json()?;
        assert_eq!(m["layers"][0]["mediaType"], "application/wasm");
    }
    let layer = get(&format!("/v2/acc/hello/blobs/{}", digest(&wasm)))?.bytes()?;
    assert_eq!(layer.as_ref(), wasm.as_slice());
    assert_eq!(get("/v2/acc/hello/manifests/v2")?.status().as_u16(), 404);

    // A 5 MiB blob in two chunks (POST, PATCH, PUT).
    let big: Vec<u8> = (0..5 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761u32) >> 24) as u8)
        .collect();
    let r = http
        .post(format!("{}/v2/acc/big/blobs/uploads/", s.url()))
        .bearer_auth(&token)
        .send()?;
    assert_eq!(r.status().as_u16(), 202);
    let loc = r.headers()["location"].to_str()?.to_string();
    let r = http
        .patch(format!("{}{loc}", s.url()))
        .bearer_auth(&token)
        .body(big[..3 << 20].to_vec())
        .send()?;
    assert_eq!(r.status().as_u16(), 202);
    let r = http
        .put(format!("{}{loc}?digest={}", s.url(), digest(&big)))
        .bearer_auth(&token)
        .body(big[3 << 20..].to_vec())
        .send()?;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text()?);
    assert_eq!(
        get(&format!("/v2/acc/big/blobs/{}", digest(&big)))?
            .bytes()?
            .len(),
        big.len()
    );

    // Uploads left open are capped per repository (429), not elsewhere.
    let open = |repo: &str| {
        http.post(format!("{}/v2/{repo}/blobs/uploads/", s.url()))
            .bearer_auth(&token)
            .send()
            .map(|r| r.status().as_u16())
    };
    for _ in 0..64 {
        assert_eq!(open("acc/hoard")?, 202);
    }
    assert_eq!(open("acc/hoard")?, 429);
    assert_eq!(open("acc/other")?, 202);

    // Bad content: a wrong digest, a manifest naming a missing blob.
    let r = http
        .post(format!(
            "{}/v2/acc/x/blobs/uploads/?digest={}",
            s.url(),
            digest(b"other")
        ))
        .bearer_auth(&token)
        .body("not other")
        .send()?;
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>()?["errors"][0]["code"], "DIGEST_INVALID");
    let dangling = json!({"schemaVersion": 2, "config": {"digest": digest(b"nothing"), "size": 7, "mediaType": "x"}, "layers": []});
    let r = http
        .put(format!("{}/v2/acc/x/manifests/v1", s.url()))
        .bearer_auth(&token)
        .body(dangling.to_string())
        .send()?;
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<Value>()?["errors"][0]["code"],
        "MANIFEST_BLOB_UNKNOWN"
    );
    // Anonymous pulls are refused.
    assert_eq!(
        http.get(format!("{}/v2/acc/hello/manifests/v1", s.url()))
            .send()?
            .status()
            .as_u16(),
        401
    );
    // A file that is not a layout is a clear error.
    let junk = root.path().join("junk.tar");
    std::fs::write(&junk, b"definitely not a tarball")?;
    let out = std::process::Command::new(common::skiff_bin())
        .args(["image", "import"])
        .arg(&junk)
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.tar"), "{err}");
    Ok(())
}

fn skiff_image(s: &common::Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::skiff_bin())
        .arg("image")
        .args(args)
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .output()
        .unwrap()
}

fn kube_token(s: &common::Server) -> String {
    s.admin_token()
}

fn tar_of(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut t = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    t.finish().unwrap();
}

fn blob_name(b: &[u8]) -> String {
    format!("blobs/sha256/{}", digest(b).trim_start_matches("sha256:"))
}

#[test]
fn docker_save_and_nested_index_then_ls_and_rm() -> Result<()> {
    let (root, s) = single_server()?;

    // A legacy `docker save` archive whose one layer (a 9 MiB tar) goes up in chunks.
    let big: Vec<u8> = (0..9u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let layer_path = root.path().join("layer.tar");
    tar_of(&layer_path, &[("data".into(), big)]);
    let layer = std::fs::read(&layer_path)?;
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/data"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]}}))?;
    let saved = root.path().join("saved.tar");
    tar_of(
        &saved,
        &[
            (
                "manifest.json".into(),
                serde_json::to_vec(&json!([{"Config": "config.json",
                "RepoTags": ["acc/saved:v1"], "Layers": ["abc/layer.tar"]}]))?,
            ),
            ("config.json".into(), config),
            ("abc/layer.tar".into(), layer.clone()),
        ],
    );
    let out = s.import_tar(&saved)?;
    assert!(out.starts_with("docker.io/acc/saved:v1@sha256:"), "{out}");

    // An OCI layout: index.json -> index -> index -> a Wasm artifact (present)
    // and a linux/s390x image (absent): the Wasm manifest is imported.
    let wasm = hello_wasm();
    let wasm_config = br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec();
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": digest(&wasm_config), "size": wasm_config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": digest(&wasm), "size": wasm.len()}]}))?;
    let index_type = "application/vnd.oci.image.index.v1+json";
    let inner = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": index_type, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(b"elsewhere"), "size": 9,
            "platform": {"os": "linux", "architecture": "s390x"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
            "platform": {"os": "wasip2", "architecture": "wasm"}}]}),
    )?;
    let outer = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": index_type, "manifests": [
        {"mediaType": index_type, "digest": digest(&inner), "size": inner.len()}]}),
    )?;
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
        {"mediaType": index_type, "digest": digest(&outer), "size": outer.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))?;
    let nested = root.path().join("nested.tar");
    let mut files = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_string(), index),
    ];
    for b in [&wasm_config, &wasm, &manifest, &inner, &outer] {
        files.push((blob_name(b), b.to_vec()));
    }
    tar_of(&nested, &files);
    let out = skiff_image(
        &s,
        &["import", nested.to_str().unwrap(), "--name", "acc/nested"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("docker.io/acc/nested:v1@{}", digest(&manifest))
    );
    // Not a terminal: nothing but the reference.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ls = |s: &common::Server| {
        let out = skiff_image(s, &["ls"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = ls(&s);
    let row = |name: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(name))
            .map(str::to_string)
    };
    let saved_row = row("docker.io/acc/saved:v1").unwrap_or_else(|| panic!("{listed}"));
    assert!(
        saved_row.contains(" container ") && saved_row.contains("MiB"),
        "{listed}"
    );
    let nested_row = row("docker.io/acc/nested:v1").unwrap_or_else(|| panic!("{listed}"));
    assert!(
        nested_row.contains(&digest(&manifest)) && nested_row.contains(" Wasm "),
        "{listed}"
    );

    // rm drops the tag, the manifest and the blobs only it named.
    let out = skiff_image(&s, &["rm", "acc/saved:v1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deleted docker.io/acc/saved:v1"
    );
    let listed = ls(&s);
    assert!(!listed.contains("acc/saved"), "{listed}");
    assert!(listed.contains("docker.io/acc/nested:v1"), "{listed}");
    let blob = s
        .http()
        .head(format!("{}/v2/acc/saved/blobs/{}", s.url(), digest(&layer)))
        .bearer_auth(kube_token(&s))
        .send()?;
    assert_eq!(blob.status().as_u16(), 404);

    // An unknown reference fails, naming it.
    let out = skiff_image(&s, &["rm", "acc/nope:v1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("acc/nope:v1") && err.contains("not found"),
        "{err}"
    );
    Ok(())
}
