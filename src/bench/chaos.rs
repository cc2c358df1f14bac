//! `skiff bench chaos`: the long fault runs. First crash cycles: one server
//! killed with SIGKILL again and again under writes, the write in flight
//! torn on disk after each kill (as a power cut tears it), every
//! acknowledged write checked after every restart. Then mixed faults on
//! three (or five) voters for a while: the leader or a follower killed or
//! paused past the election timeout, in turn, while `skiff-history`'s
//! workload records every operation; its checks and figures are printed.
//! Network partitions and packet loss need network namespaces (root): they
//! run in the test suite's chaos tier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use skiff_history::faults::{Rng, Tear, tear};
use skiff_history::workload::{self, Load, Target, http};

#[derive(clap::Args)]
pub struct ChaosBench {
    /// Kill -9 cycles of a single server, each with a torn in-flight write.
    #[arg(long, default_value_t = 1000)]
    crash_cycles: usize,
    /// How long to inject mixed faults into the voters (0: skip).
    #[arg(long, default_value = "30m", value_parser = humantime_secs)]
    duration: Duration,
    /// Voters of the mixed-fault cluster.
    #[arg(long, default_value_t = 3)]
    voters: usize,
    /// Seconds between faults.
    #[arg(long, default_value_t = 5)]
    every: u64,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = n.parse().map_err(|_| format!("not a duration: {s}"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("not a duration: {s} (use s, m or h)")),
    }))
}

/// One `skiff server` child process of the bench.
struct Proc {
    dir: PathBuf,
    api: String,
    peer: String,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Proc {
    fn new(dir: &Path, extra: &[String]) -> Result<Proc> {
        Ok(Proc {
            dir: dir.to_path_buf(),
            api: format!("127.0.0.1:{}", super::free_port()?),
            peer: format!("127.0.0.1:{}", super::free_port()?),
            extra: extra.to_vec(),
            child: None,
        })
    }

    fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))?;
        self.child = Some(
            Command::new(std::env::current_exe()?)
                .arg("server")
                .arg("--data-dir")
                .arg(&self.dir)
                .args(["--disable-agent", "--enable-debug-kv"])
                .args(["--api-addr", &self.api, "--peer-addr", &self.peer])
                .args(&self.extra)
                .env("RUST_LOG", "warn")
                .env("SKIFF_CONFIG", "")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        );
        Ok(())
    }

    /// Wait until it serves; an error if it exits first (with its log's tail).
    fn ready(&mut self, within: Duration) -> Result<()> {
        let probe = http(Duration::from_millis(500));
        let t0 = Instant::now();
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
                self.child = None;
                let log =
                    std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                bail!("server {} exited ({st}):\n{tail}", self.api);
            }
            if probe
                .get(format!("https://{}/readyz", self.api))
                .send()
                .is_ok_and(|r| r.status().is_success())
                && self.dir.join("kubeconfig").exists()
            {
                return Ok(());
            }
            if t0.elapsed() > within {
                bail!("server {} not ready after {within:?}", self.api);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.child.as_ref().context("not running")?.id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)?;
        Ok(())
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn admin_token(&self) -> String {
        self.file("kubeconfig")
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
            .unwrap_or_default()
    }

    fn status(&self) -> Option<Value> {
        http(Duration::from_secs(1))
            .get(format!("https://{}/skiff/v0/status", self.api))
            .bearer_auth(self.file("join-token"))
            .send()
            .ok()?
            .json()
            .ok()
    }

    /// Create `key` through the debug key space; true once acknowledged.
    fn create(&self, http: &reqwest::blocking::Client, key: &str, value: &str) -> bool {
        http.put(format!(
            "https://{}/skiff/v0/kv{key}?expect=absent",
            self.api
        ))
        .bearer_auth(self.file("join-token"))
        .body(value.to_string())
        .send()
        .is_ok_and(|r| r.status().is_success())
    }

    fn keys(&self) -> Result<BTreeMap<String, String>> {
        let v: Value = http(Duration::from_secs(10))
            .get(format!("https://{}/skiff/v0/kv?prefix=/w/", self.api))
            .bearer_auth(self.file("join-token"))
            .send()?
            .error_for_status()?
            .json()?;
        Ok(v["items"]
            .as_array()
            .context("items")?
            .iter()
            .map(|i| {
                let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
                (s("key"), s("value"))
            })
            .collect())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The crash cycles; their figures as a line of the report.
fn crash_cycles(root: &Path, n: usize, seed: u64) -> Result<String> {
    let mut s = Proc::new(&root.join("crash"), &[])?;
    s.start()?;
    s.ready(Duration::from_secs(30))?;
    let db = s.dir.join("store/db");
    let mut rng = Rng(seed);
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let (mut torn, mut nothing, mut in_flight_acked) = (0, 0, 0);
    let mut restarts = Vec::new();
    let client = http(Duration::from_secs(5));
    for cycle in 0..n {
        for i in 0..4 {
            let (k, v) = (format!("/w/{cycle:05}-{i}"), format!("v{cycle}-{i}"));
            if !s.create(&client, &k, &v) {
                bail!("cycle {cycle}: write {k} refused by a serving server");
            }
            acked.insert(k, v);
        }
        let before = std::fs::read(&db)?;
        let (k, v) = (format!("/w/{cycle:05}-x"), format!("v{cycle}-x"));
        let got = std::thread::scope(|sc| {
            let write = sc.spawn(|| s.create(&client, &k, &v));
            std::thread::sleep(Duration::from_micros(rng.below(1500)));
            if let Some(c) = &s.child {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            write.join().unwrap_or(false)
        });
        s.kill();
        if got {
            acked.insert(k, v);
            in_flight_acked += 1;
        } else {
            match tear(&db, &before, &mut rng)? {
                Tear::Nothing => nothing += 1,
                _ => torn += 1,
            }
        }
        let t = Instant::now();
        s.start()?;
        s.ready(Duration::from_secs(60))
            .with_context(|| format!("cycle {cycle} (seed {seed}): restart after a torn write"))?;
        restarts.push(t.elapsed());
        let have = s.keys()?;
        if let Some((k, _)) = acked.iter().find(|(k, v)| have.get(*k) != Some(*v)) {
            bail!("cycle {cycle} (seed {seed}): acknowledged write {k} lost");
        }
        if (cycle + 1).is_multiple_of(100) {
            eprintln!("crash cycles: {} done", cycle + 1);
        }
    }
    restarts.sort();
    let med = restarts
        .get(restarts.len() / 2)
        .copied()
        .unwrap_or_default();
    Ok(format!(
        "| crash cycles | {n} kill -9, {torn} torn in-flight writes ({nothing} left nothing to tear, {in_flight_acked} acknowledged before the kill) | {} acknowledged writes checked after every restart | 0 lost, 0 refusals | restart to ready: median {:.0} ms |",
        acked.len(),
        med.as_secs_f64() * 1000.0
    ))
}

/// The leader's index among `procs`, if one is known within 10 s.
fn leader(procs: &[Proc]) -> Option<usize> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Some(i) = procs
            .iter()
            .position(|p| p.child.is_some() && p.status().is_some_and(|s| s["role"] == "leader"))
        {
            return Some(i);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn mixed_faults(root: &Path, voters: usize, duration: Duration, every: Duration) -> Result<()> {
    let mut procs = vec![Proc::new(&root.join("v1"), &[])?];
    procs[0].start()?;
    procs[0].ready(Duration::from_secs(30))?;
    let join = vec![
        "--join".to_string(),
        format!("https://{}", procs[0].api),
        "--token".to_string(),
        procs[0].file("node-token"),
    ];
    for i in 2..=voters {
        let mut p = Proc::new(&root.join(format!("v{i}")), &join)?;
        p.start()?;
        p.ready(Duration::from_secs(30))?;
        procs.push(p);
    }
    let target = Target {
        apis: procs.iter().map(|p| p.api.clone()).collect(),
        token: procs[0].admin_token(),
        namespace: "default".into(),
    };
    use nix::sys::signal::Signal::{SIGCONT, SIGSTOP};
    let kinds = [
        "leader kill -9",
        "follower kill -9",
        "leader paused 3 s",
        "follower paused 3 s",
    ];
    let run = workload::run(&target, Load::default(), |faults| -> Result<()> {
        let t0 = Instant::now();
        let mut n = 0usize;
        while t0.elapsed() < duration {
            std::thread::sleep(every);
            let what = kinds[n % kinds.len()];
            n += 1;
            let l = leader(&procs).context("no leader")?;
            let victim = if what.starts_with("leader") {
                l
            } else {
                (l + 1 + n % (voters - 1)) % voters
            };
            faults.inject(what, || -> Result<()> {
                if what.ends_with("kill -9") {
                    procs[victim].kill();
                    std::thread::sleep(Duration::from_millis(1500));
                    procs[victim].start()?;
                    procs[victim].ready(Duration::from_secs(60))
                } else {
                    procs[victim].signal(SIGSTOP)?;
                    std::thread::sleep(Duration::from_secs(3));
                    procs[victim].signal(SIGCONT)
                }
            })?;
            if n.is_multiple_of(20) {
                eprintln!("mixed faults: {n} injected, {:?} in", t0.elapsed());
            }
        }
        Ok(())
    })
    .map_err(anyhow::Error::msg)?;
    let r = workload::check(&run, 20_000_000);
    let mut kills: Vec<f64> = r
        .unavailable_ms
        .iter()
        .filter(|(w, _)| w == "leader kill -9")
        .map(|u| u.1)
        .collect();
    kills.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let after_leader_kill = kills.last().copied().unwrap_or(f64::NAN);
    let median_kill = kills.get(kills.len() / 2).copied().unwrap_or(f64::NAN);
    let over_2s = kills.iter().filter(|k| **k >= 2000.0).count();
    let verdict = if r.passed() {
        "0 violations".to_string()
    } else {
        for (k, why) in &r.illegal {
            eprintln!("{k}: {why}");
        }
        format!(
            "VIOLATIONS: {} objects not linearizable, {} undecided, {} watch violations ({:?})",
            r.illegal.len(),
            r.undecided.len(),
            r.watch_violations.len(),
            r.watch_violations.iter().take(5).collect::<Vec<_>>()
        )
    };
    println!(
        "| mixed faults, {voters} voters, {:?} | {} faults ({}) | {} operations ({} answered, {} write requests = {:.0}/s, {} acknowledged writes), {} watch events; checked in {:.1?} | {verdict} | p99 write clear of faults {:.1} ms; wait for a write after a leader kill: median {median_kill:.0} ms, longest {after_leader_kill:.0} ms (target < 2,000; {over_2s} of {} kills at 2 s or more) |",
        duration,
        run.faults.len(),
        kinds.join(", "),
        r.operations,
        r.answered,
        r.write_requests,
        r.write_requests as f64 / run.elapsed.as_secs_f64(),
        r.acknowledged_writes,
        r.watch_events,
        r.checked_in,
        r.p99_write_ms.unwrap_or(f64::NAN),
        kills.len(),
    );
    if !r.passed() {
        bail!("the checks found violations (seed above; the histories' failing parts on stderr)");
    }
    Ok(())
}

pub async fn run(b: ChaosBench) -> Result<()> {
    tokio::task::spawn_blocking(move || -> Result<()> {
        let root = tempfile::tempdir()?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64
            | 1;
        println!("# skiff bench chaos (seed {seed})\n");
        println!("| run | faults | checked | violations | figures |\n|---|---|---|---|---|");
        if b.crash_cycles > 0 {
            println!("{}", crash_cycles(root.path(), b.crash_cycles, seed)?);
        }
        if !b.duration.is_zero() {
            if b.voters < 3 {
                bail!("--voters: at least 3 (a cluster that survives a fault)");
            }
            mixed_faults(
                root.path(),
                b.voters,
                b.duration,
                Duration::from_secs(b.every.max(1)),
            )?;
        }
        Ok(())
    })
    .await?
}
