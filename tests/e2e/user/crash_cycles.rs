//! Crash cycles: one server killed with SIGKILL again and again while a
//! client writes, and after each kill the write that was in flight torn on
//! disk the way a power cut tears it (part of a sector of what changed since
//! the last acknowledged write reverts, or the file's new tail is cut). After
//! every restart each acknowledged write is there; a store that cannot tell
//! its files are whole must refuse to start with an error naming them, never
//! serve what is left.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::Server;
use skiff_history::faults::{Rng, Tear, tear};

/// How many cycles (`SKIFF_CRASH_CYCLES`; `skiff bench chaos` runs 1,000).
fn cycles() -> usize {
    std::env::var("SKIFF_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}

/// How a restart went.
enum Restart {
    Serving,
    /// It refused to start; its error.
    Refused(String),
}

fn restart(s: &mut Server) -> Result<Restart> {
    let log_before = s.log().len();
    s.start()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = s
            .child
            .as_mut()
            .map(|c| c.try_wait())
            .transpose()?
            .flatten()
        {
            s.child = None;
            let log = s.log();
            let err = log.get(log_before..).unwrap_or_default().to_string();
            assert!(
                !err.contains("panicked"),
                "the server panicked on a torn file instead of refusing it:\n{err}"
            );
            assert!(!status.success(), "the server exited 0 on a torn file");
            return Ok(Restart::Refused(err));
        }
        if s.wait_ready(Duration::from_millis(200)).is_ok() {
            return Ok(Restart::Serving);
        }
        if Instant::now() > deadline {
            bail!("server neither serves nor exits; log:\n{}", s.log());
        }
    }
}

#[test]
fn crash_cycles_with_torn_last_writes_lose_no_acknowledged_write() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut s = Server::new(&root.path().join("solo"), &["--enable-debug-kv"]);
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    eprintln!("crash cycles: seed {seed}");
    let mut rng = Rng(seed);
    let db = s.dir.join("store/db");
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let (mut torn, mut acked_in_flight) = (0, 0);
    let n = cycles();
    for cycle in 0..n {
        let c = s.client();
        for i in 0..4 {
            let (k, v) = (format!("/w/{cycle:05}-{i}"), format!("v{cycle}-{i}"));
            c.create(&k, &v)
                .with_context(|| format!("cycle {cycle}: write {k}"))?;
            acked.insert(k, v);
        }
        let before = std::fs::read(&db)?;
        // One more write in flight, and the kill somewhere in its path.
        let (k, v) = (format!("/w/{cycle:05}-x"), format!("v{cycle}-x"));
        let in_flight = {
            let (k, v) = (k.clone(), v.clone());
            std::thread::spawn(move || c.create(&k, &v).is_ok())
        };
        std::thread::sleep(Duration::from_micros(rng.below(1500)));
        s.kill();
        if in_flight.join().unwrap_or(false) {
            // Acknowledged before the kill: it must survive, and nothing
            // written up to its acknowledgement may be torn.
            acked.insert(k, v);
            acked_in_flight += 1;
            if let Restart::Refused(err) = restart(&mut s)? {
                bail!("cycle {cycle}: the store refused to start after a plain kill:\n{err}");
            }
        } else {
            let t = tear(&db, &before, &mut rng)?;
            if t != Tear::Nothing {
                torn += 1;
            }
            // Only what was never acknowledged is torn: the store must find
            // the damage, drop that write and serve everything before it.
            if let Restart::Refused(err) = restart(&mut s)? {
                assert!(
                    err.contains(&s.dir.display().to_string()),
                    "cycle {cycle}: the refusal names the damaged file ({t:?}):\n{err}"
                );
                bail!(
                    "cycle {cycle}: a torn unacknowledged write made the store refuse to start ({t:?}, seed {seed}):\n{err}"
                );
            }
        }
        let have: BTreeMap<String, String> = s.client().list("/w/", false)?.into_iter().collect();
        for (k, v) in &acked {
            assert_eq!(
                have.get(k),
                Some(v),
                "cycle {cycle}: acknowledged write {k} lost (seed {seed})"
            );
        }
    }
    eprintln!(
        "crash cycles: {n} kills, {torn} torn writes, {acked_in_flight} in-flight writes acknowledged before the kill, no refusal, {} acknowledged writes all present",
        acked.len()
    );
    Ok(())
}

#[test]
fn crashes_at_each_point_of_the_write_path_lose_no_acknowledged_write() -> Result<()> {
    // The store's failpoints (the test build has them): the server kills
    // itself at the Nth pass through a point while four clients write;
    // restarted without them, it holds every acknowledged write.
    let root = tempfile::tempdir()?;
    let mut s = Server::new(&root.path().join("solo"), &["--enable-debug-kv"]);
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let points = [
        "before-append",
        "after-append",
        "before-flush",
        "after-flush",
    ];
    for (round, point) in points.iter().cycle().take(12).enumerate() {
        s.kill();
        // Past start-up's own writes, somewhere in the clients' (the point
        // may also fire during start-up: a crash there counts as well).
        let spec = format!("{point}@{}", 20 + round * 9);
        s.start_env(&[("SKIFF_FAILPOINTS", &spec)])?;
        let written = std::sync::Mutex::new(Vec::new());
        let dead = std::sync::atomic::AtomicBool::new(false);
        let clients: Vec<common::Client> = (0..4).map(|_| s.client()).collect();
        let status = std::thread::scope(|sc| -> Result<std::process::ExitStatus> {
            for (t, c) in clients.into_iter().enumerate() {
                let (written, dead, spec) = (&written, &dead, &spec);
                sc.spawn(move || {
                    let mut i = 0u64;
                    while !dead.load(std::sync::atomic::Ordering::Relaxed) {
                        i += 1;
                        let (k, v) = (format!("/w/{round:02}-{t}-{i:06}"), format!("{spec}-{i}"));
                        match c.create(&k, &v) {
                            Ok(_) => written.lock().unwrap().push((k, v)),
                            // Not up yet, or going down: not acknowledged.
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                });
            }
            let deadline = Instant::now() + Duration::from_secs(90);
            let child = s.child.as_mut().context("server")?;
            let status = loop {
                if let Some(st) = child.try_wait()? {
                    break st;
                }
                if Instant::now() > deadline {
                    dead.store(true, std::sync::atomic::Ordering::Relaxed);
                    bail!("{spec}: the failpoint never crashed the server");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            dead.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(status)
        })?;
        s.child = None;
        assert!(
            !status.success() && s.log().contains("failpoint reached"),
            "{spec}: the failpoint crashed the server ({status})"
        );
        acked.extend(written.into_inner().unwrap());
        s.start()?;
        s.wait_ready(Duration::from_secs(30))?;
        let have: BTreeMap<String, String> = s.client().list("/w/", false)?.into_iter().collect();
        for (k, v) in &acked {
            assert_eq!(have.get(k), Some(v), "{spec}: acknowledged write {k} lost");
        }
    }
    eprintln!(
        "failpoints: 12 crashes at {points:?}, {} acknowledged writes all present",
        acked.len()
    );
    Ok(())
}
