//! Pushing to the cluster's registry (`/v2/` on the API server) with
//! standard clients (issue 22): `skopeo copy` of a container image and an
//! `oras` push of a Wasm component (the Python SDK), each authenticated
//! with the cluster's credentials as HTTP Basic (a token as the password,
//! what `docker login` sends); the pushed images run as pods by reference
//! alone. Without credentials the registry answers 401 with a Basic
//! challenge.

use std::process::Command;

use anyhow::Result;

use crate::common::{self, run};

#[test]
fn skopeo_and_oras_push_into_the_cluster_registry_and_the_images_run() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    std::fs::copy(c.s.dir.join("ca.crt"), certs.join("ca.crt"))?;
    let token = c.s.admin_token();
    let registry = c.s.api.clone();

    // Without credentials: 401 and how to authenticate.
    let anon = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()?
        .get(format!("https://{registry}/v2/"))
        .send()?;
    assert_eq!(anon.status().as_u16(), 401);
    assert_eq!(
        anon.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"skiff\"")
    );

    // skopeo: a container image from an OCI archive.
    let tar = common::busybox_image(
        &c.s,
        "acc/pushed-httpd:v1",
        &[
            "--cmd", "httpd", "--cmd", "-f", "--cmd", "-p", "--cmd", "8080", "--cmd", "-h",
            "--cmd", "/",
        ],
    )?;
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-creds"])
        .arg(format!("skiff:{token}"))
        .arg("--dest-cert-dir")
        .arg(&certs)
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("docker://{registry}/pushed/httpd:v1")))?;

    // oras (Python SDK): a Wasm component as an artifact.
    let wasm = common::example_wasm("hello-wasm", "hello_wasm.wasm");
    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(hostname={registry:?}, tls_verify={ca:?}, auth_backend='basic')\n\
         c.auth.set_basic_auth('skiff', {token:?})\n\
         c.push(target={target:?}, files=[{file:?}], manifest_config='/dev/null:application/vnd.wasm.config.v0+json', disable_path_validation=True)\n",
        ca = certs.join("ca.crt").to_string_lossy(),
        target = format!("{registry}/pushed/hello:v1"),
        file = format!("{}:application/wasm", wasm.display()),
    );
    run(Command::new("python3")
        .args(["-c", &script])
        .current_dir(dir.path()))?;

    // Both run by reference, without `skiff image import`.
    c.s.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: pushed-box}\nspec:\n  containers:\n  - name: web\n    image: pushed/httpd:v1\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: pushed-wasm}\nspec:\n  containers:\n  - name: web\n    image: pushed/hello:v1\n    ports: [{containerPort: 8080}]\n",
    );
    for p in ["pushed-box", "pushed-wasm"] {
        c.s.k(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=90s",
        ]);
    }
    let ip = |p: &str| c.s.k(&["get", "pod", p, "-o", "jsonpath={.status.podIP}"]);
    let wasm_answer = common::http_get(&format!("http://{}:8080/", ip("pushed-wasm")))?;
    assert_eq!(wasm_answer, (200, "hello from wasm\n".to_string()));
    let box_answer = common::http_get(&format!("http://{}:8080/bin/sh", ip("pushed-box")))?;
    assert_eq!(box_answer.0, 200, "{box_answer:?}");
    Ok(())
}
