//! Secrets at rest and certificates over time, end to end: a Secret's value
//! is in no file under the data dir, reads back after `skiff secrets
//! rotate-key` and a restart; a user's `EncryptionConfiguration` is used;
//! the serving certificate is renewed while the server runs.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use common::{Server, skiff_bin};

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

fn secret_value(s: &Server, name: &str) -> String {
    use base64::Engine;
    let b64 = s.k(&["get", "secret", name, "-o", "jsonpath={.data.password}"]);
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap_or_default(),
    )
    .unwrap_or_default()
}

/// Wait until every file under the data dir is free of `marker` (sled
/// writes its pages a moment after the Raft log).
fn assert_nowhere(dir: &Path, marker: &str) -> Result<()> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(marker);
    std::thread::sleep(Duration::from_secs(2));
    for needle in [marker.as_bytes(), b64.as_bytes()] {
        let hits = files_containing(dir, needle);
        if !hits.is_empty() {
            bail!(
                "{:?} in plain text in {hits:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    Ok(())
}

#[test]
fn secret_values_are_sealed_at_rest_and_read_back_after_rotation() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("d");
    let mut s = Server::new(&dir, &[]);
    s.start()?;
    s.wait_ready(Duration::from_secs(20))?;
    let marker = format!("hunter2-{}", std::process::id());
    s.k(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={marker}"),
    ]);
    // A ConfigMap is not sealed (only Secrets are, by default).
    let plain = format!("visible-{}", std::process::id());
    s.k(&[
        "create",
        "configmap",
        "cm",
        &format!("--from-literal=k={plain}"),
    ]);
    assert_eq!(secret_value(&s, "db"), marker);
    assert_nowhere(&dir, &marker)?;
    assert!(
        !files_containing(&dir, plain.as_bytes()).is_empty(),
        "the scan finds what is stored in plain text"
    );

    let out = Command::new(skiff_bin())
        .args(["secrets", "rotate-key", "--data-dir", dir.to_str().unwrap()])
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("rotated to key"), "{said}");
    assert_eq!(secret_value(&s, "db"), marker, "reads back after rotation");
    s.k(&[
        "create",
        "secret",
        "generic",
        "db2",
        &format!("--from-literal=password={marker}2"),
    ]);

    s.kill();
    s.start()?;
    s.wait_ready(Duration::from_secs(20))?;
    assert_eq!(secret_value(&s, "db"), marker, "reads back after a restart");
    assert_eq!(secret_value(&s, "db2"), format!("{marker}2"));
    assert_nowhere(&dir, &marker)?;
    Ok(())
}

#[test]
fn a_users_encryption_configuration_is_used_and_rotate_key_defers_to_it() -> Result<()> {
    let root = tempfile::tempdir()?;
    let config = root.path().join("enc.yaml");
    std::fs::write(
        &config,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets, configmaps]\n    providers:\n      - aesgcm:\n          keys:\n            - name: mine\n              secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n      - identity: {}\n",
    )?;
    let dir = root.path().join("d");
    let mut s = Server::new(
        &dir,
        &["--encryption-provider-config", config.to_str().unwrap()],
    );
    s.start()?;
    s.wait_ready(Duration::from_secs(20))?;
    let marker = format!("cm-secret-{}", std::process::id());
    s.k(&[
        "create",
        "configmap",
        "cm",
        &format!("--from-literal=k={marker}"),
    ]);
    assert_eq!(
        s.k(&["get", "configmap", "cm", "-o", "jsonpath={.data.k}"])
            .trim(),
        marker
    );
    assert_nowhere(&dir, &marker)?;
    let out = Command::new(skiff_bin())
        .args(["secrets", "rotate-key", "--data-dir", dir.to_str().unwrap()])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--encryption-provider-config"),
        "{err}"
    );
    Ok(())
}

/// The serial of the certificate the API presents.
fn serving_serial(s: &Server) -> Result<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import ssl,sys,socket\nh,p=sys.argv[1].rsplit(':',1)\nc=ssl.create_default_context(cafile=sys.argv[2])\nwith socket.create_connection((h,int(p))) as t:\n  with c.wrap_socket(t,server_hostname=h) as x:\n    print(x.getpeercert()['serialNumber'])",
            &s.api,
            s.dir.join("ca.crt").to_str().unwrap(),
        ])
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn the_serving_certificate_is_renewed_without_a_restart() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("d");
    // Valid for 20 s: renewed about every 13 s, with 7 s to spare before
    // expiry on a loaded machine.
    let mut s = Server::new(&dir, &["--cert-lifetime", "20s"]);
    s.start()?;
    s.wait_ready(Duration::from_secs(20))?;
    let first = serving_serial(&s)?;
    let pid = s.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let now = serving_serial(&s)?;
        if now != first {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the serving certificate {first} was never renewed");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(s.pid(), pid, "the same process");
    let metrics = s.k(&["get", "--raw", "/metrics"]);
    for c in ["ca", "serving", "peer"] {
        assert!(
            metrics.contains(&format!(
                "skiff_certificate_expiration_timestamp_seconds{{certificate=\"{c}\"}}"
            )),
            "{c} in metrics"
        );
    }
    // kubectl still trusts the renewed certificate.
    s.k(&["get", "ns", "default"]);
    let out = Command::new(skiff_bin())
        .args([
            "version",
            "--verbose",
            "--data-dir",
            s.dir.to_str().unwrap(),
        ])
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    for want in [
        "cluster CA: skiff-ca valid",
        "API serving: skiff-apiserver valid",
        "Raft peer: skiff-peer-",
        "renewed from",
    ] {
        assert!(said.contains(want), "{want} in {said}");
    }
    Ok(())
}
