//! The cluster's image store: `skiff image import` of an OCI layout tarball (a Wasm
//! artifact), pulls through `/v2/` by tag and digest under normalised names,
//! chunked pushes of large blobs, and the errors bad content gets.

mod common;

use std::path::{Path, PathBuf};

use anyhow::Result;
use common::single_server;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn digest(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn hello_wasm() -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("examples/hello-wasm/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .unwrap()
        .success();
    assert!(ok, "build examples/hello-wasm");
    std::fs::read(target.join("wasm32-wasip2/release/hello_wasm.wasm")).unwrap()
}

/// An OCI image layout tarball holding one Wasm artifact named `name`.
fn wasm_layout(dir: &Path, wasm: &[u8], name: &str) -> PathBuf {
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.wasm.config.v0+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": digest(wasm), "size": wasm.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}}],
    }))
    .unwrap();
    let path = dir.join("image.tar");
    let mut t = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |p: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, p, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for b in [&config, &manifest, &wasm.to_vec()] {
        let d = digest(b);
        add(
            &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            b,
        );
    }
    t.finish().unwrap();
    path
}

#[test]
fn import_then_pull_by_tag_and_digest_and_push_large_blobs() -> Result<()> {
    let (root, s) = single_server()?;
    let wasm = hello_wasm();
    let tarball = wasm_layout(root.path(), &wasm, "acc/hello:v1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
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

    let token = std::fs::read_to_string(s.kubeconfig())?
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .unwrap();
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
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
