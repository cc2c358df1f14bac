//! The cluster's image store: `skiff image import` of an OCI layout tarball (a Wasm
//! artifact), pulls through `/v2/` by tag and digest under normalised names,
//! chunked pushes of large blobs, and the errors bad content gets.

mod common;

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
