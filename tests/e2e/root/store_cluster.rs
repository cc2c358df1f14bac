//! Real `skiff server` processes on loopback: leader failover, catch-up (by log and
//! by snapshot), crash safety under `kill -9`, and bad input.

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{Agent, Server, TestNet, eventually, example_wasm, http_get};

pub(super) fn start_cluster(root: &std::path::Path, extra: &[&str]) -> Result<Vec<Server>> {
    start_cluster_on(root, extra, None)
}

/// Three voters, on loopback or each in its own namespace of `net`.
pub(super) fn start_cluster_on(
    root: &std::path::Path,
    extra: &[&str],
    net: Option<&common::ServerNet>,
) -> Result<Vec<Server>> {
    let mut with_kv: Vec<&str> = extra.to_vec();
    with_kv.push("--enable-debug-kv");
    let extra = &with_kv[..];
    let server = |i: usize, args: &[&str]| {
        let dir = root.join(format!("s{}", i + 1));
        match net {
            Some(n) => Server::in_netns(&dir, args, &n.netns(i), &n.ip(i)),
            None => Server::new(&dir, args),
        }
    };
    let mut first = server(0, extra);
    first.start()?;
    first.wait_ready(Duration::from_secs(10))?;
    let token = first.node_token();
    let join_url = first.url();
    let mut servers = vec![first];
    // Three voters, or as many as the network has hosts for.
    let voters = net.map_or(3, |n| n.n);
    for i in 2..=voters {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--join", &join_url, "--token", &token]);
        let mut s = server(i - 1, &args);
        s.start()?;
        s.wait_ready(Duration::from_secs(15))?;
        servers.push(s);
    }
    let c = servers[0].client();
    eventually(Duration::from_secs(10), || {
        let st = c.status().ok()?;
        (st["voters"].as_array()?.len() == voters).then_some(())
    })
    .with_context(|| format!("{voters} voters"))?;
    Ok(servers)
}

/// Writes fresh keys through the live servers until stopped; remembers the acked ones.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    count: Arc<AtomicUsize>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(apis: Vec<String>, token: String, threads: usize, prefix: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let handles = (0..threads)
            .map(|t| {
                let (stop, acked, count) = (stop.clone(), acked.clone(), count.clone());
                let apis = apis.clone();
                let token = token.clone();
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(3))
                        .danger_accept_invalid_certs(true)
                        .build()
                        .unwrap();
                    let mut n = 0u64;
                    let mut at = t;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("{prefix}{t:02}-{n:08}");
                        let value = format!("value-{t}-{n}");
                        let url = format!("https://{}/skiff/v0/kv{key}", apis[at % apis.len()]);
                        let ok = http
                            .put(url)
                            .bearer_auth(&token)
                            .body(value.clone())
                            .send()
                            .is_ok_and(|r| r.status().is_success());
                        if ok {
                            acked.lock().unwrap().insert(key, value);
                            count.fetch_add(1, Ordering::Relaxed);
                        } else {
                            at += 1; // try another server next time
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        Writer {
            stop,
            acked,
            count,
            handles,
        }
    }

    fn acked_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

fn wait_for_writes(w: &Writer, n: usize) -> Result<()> {
    let base = w.acked_count();
    eventually(Duration::from_secs(20), || {
        (w.acked_count() >= base + n).then_some(())
    })
    .with_context(|| format!("{n} more writes"))
}

pub(super) fn leader_index(servers: &[Server]) -> Result<usize> {
    eventually(Duration::from_secs(10), || {
        servers.iter().position(|s| {
            s.child.is_some() && s.client().status().is_ok_and(|st| st["role"] == "leader")
        })
    })
    .context("no leader")
}

fn assert_has_all(server: &Server, acked: &BTreeMap<String, String>, local: bool) -> Result<()> {
    let have: BTreeMap<String, String> = server.client().list("/w/", local)?.into_iter().collect();
    for (k, v) in acked {
        if have.get(k) != Some(v) {
            bail!("{} lost acknowledged write {k}", server.api);
        }
    }
    Ok(())
}

/// How the killed leader comes back in `failover`.
#[derive(PartialEq)]
enum Return {
    Log,
    Snapshot,
    /// By snapshot, after a first start that crashes while installing it.
    SnapshotAfterACrashInIt,
}

fn failover(extra: &[&str], writes_while_down: usize, back: Return) -> Result<()> {
    let by_snapshot = back != Return::Log;
    let root = tempfile::tempdir()?;
    let mut servers = start_cluster(root.path(), extra)?;
    let apis: Vec<String> = servers.iter().map(|s| s.api.clone()).collect();
    let w = Writer::start(apis, servers[0].token(), 4, "/w/");
    wait_for_writes(&w, 100)?;

    let old = leader_index(&servers)?;
    let old_id = servers[old].client().status()?["id"].clone();
    servers[old].kill();
    let killed_at = Instant::now();
    let new = eventually(Duration::from_secs(10), || {
        servers.iter().enumerate().find_map(|(i, s)| {
            let st = s.child.as_ref().and(s.client().status().ok())?;
            (st["role"] == "leader" && st["id"] != old_id).then_some(i)
        })
    })
    .context("no new leader")?;
    // How fast is a benchmark's question (`skiff bench store`); here only that
    // a new leader is elected at all.
    let elected = killed_at.elapsed();
    eprintln!("new leader {} after {elected:?}", servers[new].api);

    wait_for_writes(&w, writes_while_down)?;
    let acked = w.finish();
    eprintln!("{} acknowledged writes", acked.len());
    for s in servers.iter().filter(|s| s.child.is_some()) {
        assert_has_all(s, &acked, false)?;
    }

    // The killed node restarts from its data dir and catches up.
    let snapshots_before = servers[old].log().matches("installing snapshot").count();
    if back == Return::SnapshotAfterACrashInIt {
        servers[old].start_env(&[("SKIFF_FAILPOINTS", "during-snapshot-install")])?;
        let crashed = eventually(Duration::from_secs(20), || {
            servers[old].child.as_mut()?.try_wait().ok()?
        })
        .context("the failpoint in the snapshot install crashed the server")?;
        servers[old].child = None;
        assert!(!crashed.success(), "crashed: {crashed}");
        assert!(
            servers[old].log().contains("failpoint reached"),
            "the crash was the failpoint's"
        );
    }
    servers[old].start()?;
    servers[old].wait_ready(Duration::from_secs(15))?;
    let commit = servers[new].client().status()?["commit"].as_u64().unwrap();
    eventually(Duration::from_secs(20), || {
        let st = servers[old].client().status().ok()?;
        (st["applied"].as_u64()? >= commit).then_some(())
    })
    .context("restarted node caught up")?;
    assert_has_all(&servers[old], &acked, true)?;
    let st = servers[old].client().status()?;
    assert_eq!(st["id"], old_id, "same node id after restart");
    let snapshots = servers[old].log().matches("installing snapshot").count() - snapshots_before;
    assert_eq!(
        snapshots > 0,
        by_snapshot,
        "caught up by snapshot: {snapshots}"
    );
    Ok(())
}

#[test]
fn leader_killed_new_leader_and_restart_catches_up_by_log() -> Result<()> {
    failover(&[], 200, Return::Log)
}

#[test]
fn leader_killed_restart_catches_up_by_snapshot() -> Result<()> {
    // A tiny compaction threshold: while the old leader is down the others compact
    // their logs past its position, so it can only catch up from a snapshot.
    failover(&["--snapshot-threshold", "50"], 400, Return::Snapshot)
}

#[test]
fn a_crash_while_installing_a_snapshot_is_recovered_from() -> Result<()> {
    // As above, but the first restart dies between restoring the snapshot's
    // state and resetting the log (a failpoint): the next start must still
    // catch up and hold every acknowledged write.
    failover(
        &["--snapshot-threshold", "50"],
        400,
        Return::SnapshotAfterACrashInIt,
    )
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut s = Server::new(&root.path().join("solo"), &["--enable-debug-kv"]);
    let mut acked = BTreeMap::new();
    for round in 0..20 {
        s.start()?;
        s.wait_ready(Duration::from_secs(10))?;
        assert_has_all(&s, &acked, false).with_context(|| format!("round {round}"))?;
        let w = Writer::start(
            vec![s.api.clone()],
            s.token(),
            4,
            &format!("/w/{round:02}/"),
        );
        wait_for_writes(&w, 20)?;
        std::thread::sleep(Duration::from_millis(50 + (round * 37) % 200));
        s.kill();
        acked.extend(w.finish());
    }
    s.start()?;
    s.wait_ready(Duration::from_secs(10))?;
    assert_has_all(&s, &acked, false)?;
    eprintln!("{} acknowledged writes survived 20 kills", acked.len());
    Ok(())
}

fn run_to_exit(s: &Server) -> Result<(std::process::ExitStatus, String)> {
    let mut child = s
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err)?;
            return Ok((status, err));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("server kept running on a damaged data dir");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The commit index the data dir's watermark file (`store.manifest`) records.
fn durable_commit(dir: &std::path::Path) -> Option<u64> {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let path = e.path();
            if path.file_name().is_some_and(|n| n == "store.manifest") {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
                return v["commit"].as_u64();
            }
            if path.is_dir() && !path.ends_with("store") {
                todo.push(path);
            }
        }
    }
    None
}

fn seeded_data_dir(root: &std::path::Path, name: &str) -> Result<Server> {
    let mut s = Server::new(&root.join(name), &["--enable-debug-kv"]);
    s.start()?;
    s.wait_ready(Duration::from_secs(10))?;
    let c = s.client();
    let first = c.create("/w/0", "x")?;
    for i in 1..50 {
        c.create(&format!("/w/{i}"), "x")?;
    }
    // The durability watermark is rewritten at most every 500 ms, on a write:
    // keep writing until it covers this batch, so the damage below is all that
    // differs from a data dir the server once made durable.
    let mut i = 50;
    eventually(Duration::from_secs(10), || {
        if durable_commit(&s.dir).is_some_and(|d| d >= first) {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(100));
        i += 1;
        c.create(&format!("/w/{i}"), "x").ok()?;
        None
    })
    .context("the durability watermark covers the writes")?;
    s.kill();
    Ok(s)
}

#[test]
fn damaged_data_dir_is_a_clear_error() -> Result<()> {
    let root = tempfile::tempdir()?;
    type Damage = fn(&std::path::Path) -> Result<std::path::PathBuf>;
    let cases: Vec<(&str, Damage)> = vec![
        ("garbage-db", |dir| {
            let db = dir.join("store/db");
            std::fs::write(&db, vec![0xA5u8; 4096])?;
            Ok(dir.join("store"))
        }),
        ("truncated-db", |dir| {
            let db = dir.join("store/db");
            let len = std::fs::metadata(&db)?.len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&db)?
                .set_len(len / 3)?;
            Ok(dir.join("store"))
        }),
        ("garbage-conf", |dir| {
            std::fs::write(dir.join("store/conf"), b"\x00\x01garbage")?;
            Ok(dir.join("store"))
        }),
        ("bad-token", |dir| {
            std::fs::write(dir.join("join-token"), b"\xff\xfe not a token")?;
            Ok(dir.join("join-token"))
        }),
        ("data-dir-is-a-file", |dir| {
            std::fs::remove_dir_all(dir)?;
            std::fs::write(dir, b"x")?;
            Ok(dir.to_path_buf())
        }),
    ];
    for (name, damage) in cases {
        let s = seeded_data_dir(root.path(), name)?;
        let named = damage(&s.dir)?;
        let (status, stderr) = run_to_exit(&s)?;
        assert!(!status.success(), "{name}: exit status {status}");
        assert!(
            !stderr.contains("panicked"),
            "{name}: panicked instead of an error:\n{stderr}"
        );
        assert!(
            stderr.contains(&named.display().to_string()),
            "{name}: error does not name {}:\n{stderr}",
            named.display()
        );
    }
    Ok(())
}

#[test]
fn garbage_on_the_peer_port_is_rejected_and_the_node_keeps_serving() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut s = Server::new(&root.path().join("solo"), &["--enable-debug-kv"]);
    s.start()?;
    s.wait_ready(Duration::from_secs(10))?;
    let c = s.client();
    c.create("/w/before", "1")?;
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        // Right magic, wrong token.
        [
            &b"SKIFFRP1"[..],
            &7u64.to_be_bytes(),
            &[0, 3],
            b"1:2",
            &[0, 3],
            b"bad",
        ]
        .concat(),
        // Right magic, oversized address field.
        [&b"SKIFFRP1"[..], &7u64.to_be_bytes(), &[0xff, 0xff]].concat(),
    ];
    for g in garbage {
        let mut sock = std::net::TcpStream::connect(&s.peer)?;
        sock.write_all(&g)?;
        let _ = sock.shutdown(std::net::Shutdown::Write);
        std::thread::sleep(Duration::from_millis(50));
    }
    c.create("/w/after", "2")?;
    let keys: Vec<String> = c.list("/w/", false)?.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec!["/w/after", "/w/before"]);
    let log = s.log();
    assert!(
        log.matches("rejected peer connection").count() >= 3,
        "rejections are logged:\n{log}"
    );
    Ok(())
}

/// The pods of `web` as `uid restartCount` lines, sorted.
fn web_pods(s: &Server) -> String {
    let out = s.k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.uid} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}",
    ]);
    let mut lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    lines.sort();
    lines.join("\n")
}

/// Requests to `url` every 100 ms until stopped; the failures seen.
fn probe(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut n, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            match http_get(&url) {
                Ok((200, _)) => {}
                other => failed.push(format!("{other:?}")),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (n, failed)
    })
}

#[test]
fn servers_restarted_one_at_a_time_lose_no_write_and_restart_no_pod() -> Result<()> {
    let net = TestNet::claim();
    let root = tempfile::tempdir()?;
    let args = net.server_args(0);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut servers = start_cluster(root.path(), &args)?;
    let node = net.node(1).0;
    let agent = Agent::join_in(
        &servers[0],
        &net,
        1,
        &root.path().join("agent"),
        None,
        &["--no-containerd"],
    )?;
    agent.wait_ready(&servers[0], &node);
    servers[0].import_wasm(
        &example_wasm("hello-wasm", "hello_wasm.wasm"),
        "acc/hello:v1",
    )?;
    servers[0].apply(&common::web_app(2));
    servers[0].k(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    let ip = servers[0].k(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let url = format!("http://{ip}/");
    eventually(Duration::from_secs(20), || {
        http_get(&url).ok().filter(|(c, _)| *c == 200)
    })
    .context("the Service answers")?;
    let pods_before = web_pods(&servers[0]);

    let apis: Vec<String> = servers.iter().map(|s| s.api.clone()).collect();
    let w = Writer::start(apis, servers[0].token(), 2, "/w/");
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(url, stop.clone());
    wait_for_writes(&w, 50)?;
    for i in 0..servers.len() {
        servers[i].kill();
        wait_for_writes(&w, 20).with_context(|| format!("writes while server {i} is down"))?;
        servers[i].start()?;
        servers[i].wait_ready(Duration::from_secs(20))?;
        let other = (i + 1) % servers.len();
        let commit = servers[other].client().status()?["commit"]
            .as_u64()
            .unwrap_or(0);
        eventually(Duration::from_secs(20), || {
            let st = servers[i].client().status().ok()?;
            (st["applied"].as_u64()? >= commit).then_some(())
        })
        .with_context(|| format!("server {i} caught up"))?;
        wait_for_writes(&w, 20)?;
    }
    let acked = w.finish();
    stop.store(true, Ordering::Relaxed);
    let (requests, failed) = prober.join().unwrap();
    eprintln!("{} acknowledged writes, {requests} requests", acked.len());
    for s in &servers {
        assert_has_all(s, &acked, false)?;
    }
    assert!(
        failed.is_empty(),
        "the Service answered throughout: {} of {requests} failed: {failed:?}",
        failed.len()
    );
    assert_eq!(
        web_pods(&servers[0]),
        pods_before,
        "no pod was replaced or restarted"
    );
    let errors = std::fs::read_to_string(&agent.log)?;
    assert!(
        errors.contains("api server changed"),
        "the agent moved to another server:\n{errors}"
    );
    Ok(())
}

/// A tmpfs mounted for a test, detached on drop.
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mnt = root.path().join("disk");
    std::fs::create_dir_all(&mnt)?;
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=160m"),
    )?;
    let _disk = SmallDisk(mnt.clone());
    let mut s = Server::new(&mnt.join("solo"), &["--enable-debug-kv"]);
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let c = s.client();
    c.create("/w/before", "1")?;
    s.k(&["create", "configmap", "kept", "--from-literal=k=v"]);

    // Fill the disk to 8 MiB short of full.
    let st = nix::sys::statvfs::statvfs(&mnt)?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let filler = mnt.join("filler");
    {
        let f = std::fs::File::create(&filler)?;
        let mut w = std::io::BufWriter::new(f);
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..(free.saturating_sub(8 << 20) >> 20) {
            w.write_all(&chunk)?;
        }
        w.flush()?;
    }
    let refused = s.kubectl(&["create", "configmap", "new", "--from-literal=k=v"]);
    assert!(
        !refused.ok && refused.stderr.contains("disk is full"),
        "a write on a full disk is refused with a clear error: {}",
        refused.stderr
    );
    assert!(
        c.create("/w/full", "x").is_err(),
        "debug kv writes refused too"
    );
    // Reads go on, and the server keeps running.
    assert_eq!(
        s.k(&["get", "configmap", "kept", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    assert!(c.list("/w/", false)?.iter().any(|(k, _)| k == "/w/before"));
    assert!(s.child.as_mut().unwrap().try_wait()?.is_none());

    // Space returns: writes resume without a restart.
    std::fs::remove_file(&filler)?;
    eventually(Duration::from_secs(10), || c.create("/w/after", "2").ok())
        .context("writes resume once space returns")?;
    s.k(&["create", "configmap", "new", "--from-literal=k=v"]);
    s.kill();
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let have: BTreeMap<String, String> = s.client().list("/w/", false)?.into_iter().collect();
    assert!(have.contains_key("/w/before") && have.contains_key("/w/after"));
    assert_eq!(
        s.k(&["get", "configmap", "new", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    s.kill();
    Ok(())
}
