//! Faults with a checker (issue 21's CI tier): clients create, update with a
//! resourceVersion precondition, read and delete ConfigMaps through every
//! server of three voters, each in its own network namespace, while the
//! leader is killed (`kill -9`, then restarted), paused (SIGSTOP past the
//! election timeout), cut off from the others, or unheard (its sends
//! dropped, every link lossy) every 5 s for 60 s, and a watch follows the
//! same objects across reconnects. Every
//! client operation is recorded with its invocation and completion time;
//! `skiff-history` then checks that each object's history is linearizable
//! and that the watch saw every acknowledged write once, in order.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use skiff_history::kv::{Input, KeyOp, Output};
use skiff_history::watch::{Change, Event, Writes};
use skiff_history::{Recorder, linear::Verdict};

use crate::common;

use super::store_cluster::{leader_index, start_cluster_on};

const KEYS: usize = 24;
const NS: &str = "default";

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .expect("client")
}

fn rev_of(v: &Value) -> Option<u64> {
    v.pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

/// One client's operation against `api`: the answer as the model reads it
/// (`None`: no answer, or one that does not say whether the write happened).
fn perform(
    http: &reqwest::blocking::Client,
    api: &str,
    token: &str,
    key: &str,
    input: &Input,
) -> Option<Output> {
    let base = format!("https://{api}/api/v1/namespaces/{NS}/configmaps");
    let body = |value: &str, rv: Option<u64>| {
        let mut meta = json!({"name": key});
        if let Some(rv) = rv {
            meta["resourceVersion"] = json!(rv.to_string());
        }
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"v": value}})
    };
    let req = match input {
        Input::Create { value } => http.post(&base).json(&body(value, None)),
        Input::Update {
            value,
            precondition,
        } => http
            .put(format!("{base}/{key}"))
            .json(&body(value, *precondition)),
        Input::Get => http.get(format!("{base}/{key}")),
        Input::Delete { .. } => http.delete(format!("{base}/{key}")),
    };
    let resp = req.bearer_auth(token).send().ok()?;
    let code = resp.status().as_u16();
    let v: Value = resp.json().unwrap_or(Value::Null);
    Some(match (input, code) {
        (Input::Get, 200) => Output::Got {
            value: v.pointer("/data/v")?.as_str()?.to_string(),
            rev: rev_of(&v)?,
        },
        (Input::Delete { .. }, 200 | 202) => Output::Deleted,
        (_, 200 | 201) => Output::Written { rev: rev_of(&v)? },
        (_, 404) => Output::NotFound,
        (Input::Create { .. }, 409) => Output::AlreadyExists,
        (_, 409) => Output::Conflict,
        // 5xx, 429, a timeout inside the server: the write may have happened.
        _ => return None,
    })
}

/// Follow the ConfigMaps of `NS` from revision `from` through any server,
/// resuming from the last event seen after every break, until `stop`.
fn follow(apis: &[String], token: &str, from: u64, stop: &AtomicBool) -> Vec<Event> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .expect("client");
    let mut events = Vec::new();
    let mut rv = from;
    let mut at = 0;
    while !stop.load(Ordering::Relaxed) {
        let url = format!(
            "https://{}/api/v1/namespaces/{NS}/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=4&allowWatchBookmarks=false",
            apis[at % apis.len()]
        );
        at += 1;
        let Ok(resp) = http.get(url).bearer_auth(token).send() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let text = resp.text().unwrap_or_default();
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let change = match e["type"].as_str() {
                Some("ADDED" | "MODIFIED") => Change::Put,
                Some("DELETED") => Change::Delete,
                _ => continue,
            };
            let (Some(name), Some(r)) = (
                e.pointer("/object/metadata/name").and_then(Value::as_str),
                rev_of(&e["object"]),
            ) else {
                continue;
            };
            events.push(Event {
                key: name.to_string(),
                rev: r,
                change,
            });
            rv = rv.max(r);
        }
    }
    events
}

/// Run clients and a watch against three voters for 60 s while `fault` is
/// injected every 5 s, then check every object's history and the watch.
fn under_faults(
    what: &str,
    mut fault: impl FnMut(&mut [common::Server], &common::ServerNet) -> Result<()>,
) -> Result<()> {
    let root = tempfile::tempdir()?;
    let net = common::ServerNet::new(3)?;
    let mut servers = start_cluster_on(root.path(), &[], Some(&net))?;
    let apis: Vec<String> = servers.iter().map(|s| s.api.clone()).collect();
    let token = servers[0].admin_token();
    let start_rev: u64 = {
        let list: Value = client()
            .get(format!(
                "https://{}/api/v1/namespaces/{NS}/configmaps",
                apis[0]
            ))
            .bearer_auth(&token)
            .send()?
            .json()?;
        list.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .context("list revision")?
    };
    let recorder: Recorder<(String, Input), Output> = Recorder::default();
    let stop = AtomicBool::new(false);
    let watched = Mutex::new(Vec::new());
    let kills = Mutex::new(0usize);
    let began = Instant::now();
    std::thread::scope(|sc| -> Result<()> {
        sc.spawn(|| {
            let e = follow(&apis, &token, start_rev, &stop);
            *watched.lock().unwrap() = e;
        });
        for c in 0..12usize {
            let (apis, token, recorder, stop) = (&apis, &token, &recorder, &stop);
            sc.spawn(move || {
                let http = client();
                let mut n = 0u64;
                let mut last_rev: Vec<Option<u64>> = vec![None; KEYS];
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let k = (n as usize * 7 + c * 5) % KEYS;
                    let key = format!("obj-{k:02}");
                    let value = format!("c{c}-{n}");
                    let api = &apis[(n as usize + c) % apis.len()];
                    let run = |input: Input| {
                        recorder.record(c, (key.clone(), input.clone()), Output::Unknown, || {
                            perform(&http, api, token, &key, &input)
                        })
                    };
                    // Mostly read-modify-write (a read, then an update on
                    // the revision read: a conflict when another client came
                    // first), some blind creates, updates and deletes.
                    let out = match (n + c as u64) % 6 {
                        0 => run(Input::Create { value }),
                        1..=3 => match run(Input::Get) {
                            Output::Got { rev, .. } => run(Input::Update {
                                value,
                                precondition: Some(rev),
                            }),
                            Output::NotFound => run(Input::Create { value }),
                            other => other,
                        },
                        4 => run(Input::Update {
                            value,
                            precondition: last_rev[k],
                        }),
                        _ => run(Input::Delete { precondition: None }),
                    };
                    last_rev[k] = match out {
                        Output::Written { rev } | Output::Got { rev, .. } => Some(rev),
                        _ => last_rev[k],
                    };
                    if out == Output::Unknown {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
        let t0 = Instant::now();
        let mut faults = || -> Result<()> {
            while t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_secs(5));
                fault(&mut servers, &net)?;
                *kills.lock().unwrap() += 1;
            }
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        };
        // The clients stop whatever happened, or the scope would wait for ever.
        let injected = faults();
        net.heal();
        stop.store(true, Ordering::Relaxed);
        injected
    })?;
    let ran = began.elapsed();
    let history: Vec<KeyOp> = recorder.history();
    let answered = history.iter().filter(|o| o.ret.is_some()).count();
    let writes = history
        .iter()
        .filter(|o| matches!(o.output, Output::Written { .. } | Output::Deleted))
        .count();
    let attempted = history
        .iter()
        .filter(|o| !matches!(o.input.1, Input::Get))
        .count();
    let t = Instant::now();
    let verdicts = skiff_history::kv::check(&history, 5_000_000);
    println!(
        "chaos ({what}): {} faults, {} operations ({answered} answered; {attempted} write requests, {:.0}/s; {writes} acknowledged writes) on {KEYS} objects; checked in {:?}",
        kills.into_inner().unwrap(),
        history.len(),
        attempted as f64 / ran.as_secs_f64(),
        t.elapsed()
    );
    assert!(answered > 500, "too few operations answered: {answered}");
    let failed: Vec<_> = verdicts
        .iter()
        .filter(|(_, v)| **v == Verdict::Illegal)
        .collect();
    for (key, _) in &failed {
        let mut ops: Vec<&KeyOp> = history.iter().filter(|o| &o.input.0 == *key).collect();
        ops.sort_by_key(|o| o.call);
        // The shortest prefix (by invocation) that fails, and what led to it.
        let owned: Vec<KeyOp> = ops.iter().map(|o| (*o).clone()).collect();
        let (mut lo, mut hi) = (1, owned.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if skiff_history::kv::check(&owned[..mid], 5_000_000).is_empty() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        eprintln!("{key}: the first {lo} operations are not linearizable; the last ones:");
        for o in &owned[lo.saturating_sub(25)..lo] {
            eprintln!(
                "  {:>12} {:>12} c{:<2} {:?} -> {:?}",
                o.call,
                o.ret.map_or("-".into(), |r| r.to_string()),
                o.client,
                o.input.1,
                o.output
            );
        }
        let text: String = ops
            .iter()
            .map(|o| {
                format!(
                    "{:>12} {:>12} c{:<2} {:?} -> {:?}\n",
                    o.call,
                    o.ret.map_or("-".into(), |r| r.to_string()),
                    o.client,
                    o.input.1,
                    o.output
                )
            })
            .collect();
        let path = std::env::temp_dir().join(format!("skiff-chaos-{key}.txt"));
        let _ = std::fs::write(&path, text);
        eprintln!("history of {key}: {}", path.display());
    }
    assert!(failed.is_empty(), "not linearizable: {failed:?}");
    assert!(verdicts.is_empty(), "the checker gave up on: {verdicts:?}");

    // The watch: every acknowledged create and update once, in order.
    let mut w = Writes::default();
    for o in &history {
        match &o.output {
            Output::Written { rev } => {
                w.acknowledged
                    .insert((o.input.0.clone(), *rev), Change::Put);
            }
            Output::Unknown | Output::Deleted => {
                // A delete's revision is not in its answer; an unknown
                // write's event may come at any revision.
                w.unknown.insert(o.input.0.clone());
            }
            _ => {}
        }
    }
    let events = watched.into_inner().unwrap();
    let violations = skiff_history::watch::check(&events, start_rev, &w);
    println!("chaos ({what}): the watch saw {} events", events.len());
    assert!(
        violations.is_empty(),
        "watch: {:?}",
        &violations[..violations.len().min(10)]
    );
    Ok(())
}

#[test]
fn leader_kills_keep_every_object_linearizable_and_the_watch_whole() -> Result<()> {
    // kill -9 of the leader, restarted 1.5 s later.
    under_faults("leader kill -9", |servers, _| {
        let l = leader_index(servers)?;
        servers[l].kill();
        std::thread::sleep(Duration::from_millis(1500));
        servers[l].start()?;
        servers[l].wait_ready(Duration::from_secs(20))
    })
}

#[test]
fn a_paused_leader_keeps_every_object_linearizable_and_the_watch_whole() -> Result<()> {
    // SIGSTOP of the leader for 3 s (the election timeout is 0.8–1.6 s):
    // the others elect a new leader; the old one wakes up deposed, with
    // requests it took before the pause still in hand.
    under_faults("leader paused 3 s", |servers, _| {
        let l = leader_index(servers)?;
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(servers[l].pid().context("leader pid")? as i32);
        kill(pid, Signal::SIGSTOP)?;
        std::thread::sleep(Duration::from_secs(3));
        kill(pid, Signal::SIGCONT)?;
        Ok(())
    })
}

#[test]
fn a_partitioned_leader_keeps_every_object_linearizable_and_the_watch_whole() -> Result<()> {
    // The leader cut off from both followers (both ways) for 3 s: they elect
    // another; the old one cannot commit what its clients still send it
    // (their writes time out or fail, never succeed unseen), and rejoins
    // as a follower.
    under_faults("leader partitioned 3 s", |servers, net| {
        let l = leader_index(servers)?;
        net.isolate(l)?;
        std::thread::sleep(Duration::from_secs(3));
        net.heal();
        Ok(())
    })
}

#[test]
fn one_way_drops_and_lossy_links_keep_every_object_linearizable() -> Result<()> {
    // Every 5 s, for 3 s: the leader's messages to the followers dropped (it
    // still hears them), and every server losing 10 % of what it sends to
    // the others.
    under_faults("leader's sends dropped 3 s, 10 % loss", |servers, net| {
        for i in 0..servers.len() {
            net.lose(i, 10)?;
        }
        let l = leader_index(servers)?;
        for j in (0..servers.len()).filter(|j| *j != l) {
            net.cut(l, j)?;
        }
        std::thread::sleep(Duration::from_secs(3));
        net.heal();
        Ok(())
    })
}
