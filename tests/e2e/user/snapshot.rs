//! Store backup and restore end to end: `skiff snapshot save` from a running
//! server, `skiff snapshot restore` into a new data dir, a server there serving the
//! same objects with revisions that keep growing; scheduled snapshots; refusals.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use common::{Server, skiff_bin};

fn skiff(args: &[&str]) -> std::process::Output {
    Command::new(skiff_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("skiff runs")
}

fn rv(s: &Server, args: &[&str]) -> u64 {
    s.json(args)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn save_restore_keeps_objects_and_revisions() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut s = Server::new(
        &root.path().join("old"),
        &["--snapshot-schedule", "1s", "--snapshot-retention", "2"],
    );
    s.start()?;
    s.wait_ready(Duration::from_secs(20))?;
    s.k(&["create", "namespace", "snap"]);
    s.k(&[
        "create",
        "configmap",
        "a",
        "-n",
        "snap",
        "--from-literal=k=v",
    ]);
    s.k(&[
        "create",
        "configmap",
        "b",
        "-n",
        "snap",
        "--from-literal=x=y",
    ]);
    let rv_a = rv(&s, &["configmap", "a", "-n", "snap"]);
    let rv_b = rv(&s, &["configmap", "b", "-n", "snap"]);

    let file = root.path().join("backup.snap");
    let out = skiff(&["snapshot", "save", p(&file), "--data-dir", p(&s.dir)]);
    assert!(out.status.success(), "save: {out:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file)?.permissions().mode() & 0o777,
        0o600
    );

    // Scheduled snapshots (every second, the newest two kept) are valid files.
    let snaps = s.dir.join("snapshots");
    let list = || -> Vec<std::path::PathBuf> {
        let mut n: Vec<_> = std::fs::read_dir(&snaps)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        n.retain(|p| p.extension().is_some_and(|e| e == "snap"));
        n
    };
    common::eventually(Duration::from_secs(10), || {
        (list().len() >= 2).then_some(())
    })
    .expect("two scheduled snapshots");
    s.kill();
    let names = list();
    assert_eq!(names.len(), 2, "retention 2 kept {names:?}");
    let out = skiff(&["snapshot", "inspect", p(&names[0])]);
    assert!(out.status.success(), "inspect: {out:?}");

    let new_dir = root.path().join("new");
    let mut s2 = Server::new(&new_dir, &[]);
    let out = skiff(&[
        "snapshot",
        "restore",
        p(&file),
        "--data-dir",
        p(&new_dir),
        "--peer-addr",
        &s2.peer,
    ]);
    assert!(out.status.success(), "restore: {out:?}");
    // The same again: the data dir is no longer empty.
    let out = skiff(&[
        "snapshot",
        "restore",
        p(&file),
        "--data-dir",
        p(&new_dir),
        "--peer-addr",
        &s2.peer,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not empty"), "{err}");

    s2.start()?;
    s2.wait_ready(Duration::from_secs(20))?;
    // Same CA and tokens: the old kubeconfig's credentials still work.
    assert_eq!(
        std::fs::read(s.dir.join("ca.crt"))?,
        std::fs::read(new_dir.join("ca.crt"))?
    );
    assert_eq!(s.token(), s2.token());
    let cm = s2.json(&["configmap", "a", "-n", "snap"]);
    assert_eq!(cm["data"]["k"], "v");
    assert_eq!(rv(&s2, &["configmap", "a", "-n", "snap"]), rv_a);
    assert_eq!(rv(&s2, &["configmap", "b", "-n", "snap"]), rv_b);
    s2.k(&["create", "configmap", "c", "-n", "snap"]);
    let rv_c = rv(&s2, &["configmap", "c", "-n", "snap"]);
    assert!(rv_c > rv_b, "new write at {rv_c} after {rv_b}");
    Ok(())
}

#[test]
fn newer_data_dir_format_is_refused() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("d");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("format"), "999\n")?;
    let s = Server::new(&dir, &[]);
    let out = s.command().env("RUST_LOG", "warn").output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("format version 999") && err.contains("supports format version 1"),
        "{err}"
    );
    // Nothing was written into it.
    assert!(!dir.join("join-token").exists() && !dir.join("store").exists());
    Ok(())
}
