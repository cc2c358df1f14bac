//! The workload of a fault run: clients that create, read-modify-write
//! (update on the revision read), blindly update and delete ConfigMaps
//! through every API server, and a watch that follows them across
//! reconnects, all recorded; then the checks of [`crate::kv`] and
//! [`crate::watch`] over what they saw, with the figures a report needs.
//! The faults themselves are the caller's: the test tier and `skiff bench
//! chaos` inject different ones for different lengths.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Recorder;
use crate::kv::{Input, KeyOp, Output};
use crate::linear::Verdict;
use crate::watch::{Change, Event, Writes};

/// Where the clients go.
#[derive(Debug, Clone)]
pub struct Target {
    /// `HOST:PORT` of every API server.
    pub apis: Vec<String>,
    /// A bearer token allowed to write ConfigMaps in `namespace`.
    pub token: String,
    pub namespace: String,
}

/// How hard the clients push.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub clients: usize,
    pub keys: usize,
    /// The clients move to a fresh set of `keys` objects this often, so that
    /// each object's history stays short enough to check however long the
    /// run (contention on each object is unchanged).
    pub rotate: Duration,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            clients: 12,
            keys: 24,
            rotate: Duration::from_secs(60),
        }
    }
}

/// Fault windows, in the recorder's clock (nanoseconds since the run began).
#[derive(Default)]
pub struct Faults {
    began: Option<Instant>,
    windows: Mutex<Vec<Window>>,
}

/// One fault: what, when it began and when it was undone.
#[derive(Debug, Clone)]
pub struct Window {
    pub what: String,
    pub from: u64,
    pub to: u64,
}

impl Faults {
    fn now(&self) -> u64 {
        self.began.map_or(0, |b| b.elapsed().as_nanos() as u64)
    }

    /// Run `inject` (which injects a fault and undoes it) as fault `what`.
    pub fn inject<R>(&self, what: &str, inject: impl FnOnce() -> R) -> R {
        let from = self.now();
        let r = inject();
        let to = self.now();
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Window {
                what: what.to_string(),
                from,
                to,
            });
        r
    }
}

/// What a run recorded.
pub struct Run {
    pub history: Vec<KeyOp>,
    pub events: Vec<Event>,
    /// The revision the watch started from.
    pub start_rev: u64,
    pub faults: Vec<Window>,
    pub elapsed: Duration,
}

/// A blocking HTTPS client for test servers (their certificates are the
/// cluster's own, not checked here).
pub fn http(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .expect("an HTTP client")
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
    t: &Target,
    api: &str,
    key: &str,
    input: &Input,
) -> Option<Output> {
    let base = format!("https://{api}/api/v1/namespaces/{}/configmaps", t.namespace);
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
    let resp = req.bearer_auth(&t.token).send().ok()?;
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

/// Follow the ConfigMaps from revision `from` through any server, resuming
/// from the last event seen after every break, until `stop`.
fn follow(
    t: &Target,
    from: u64,
    recorder: &Recorder<(String, Input), Output>,
    stop: &AtomicBool,
) -> Vec<Event> {
    let http = http(Duration::from_secs(5));
    let mut events = Vec::new();
    let mut rv = from;
    let mut at = 0;
    while !stop.load(Ordering::Relaxed) {
        let url = format!(
            "https://{}/api/v1/namespaces/{}/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=4&allowWatchBookmarks=false",
            t.apis[at % t.apis.len()],
            t.namespace
        );
        at += 1;
        let Ok(resp) = http.get(url).bearer_auth(&t.token).send() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let mut resp = resp;
        let mut pending = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        // Read as it comes, so that each event's time is when it arrived.
        loop {
            let n = match std::io::Read::read(&mut resp, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            let at = recorder.now();
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Some(e) = event(&line, at) {
                    rv = rv.max(e.rev);
                    events.push(e);
                }
            }
        }
    }
    events
}

/// One line of a watch as an event of ours (`None`: a bookmark, an error,
/// something unreadable).
fn event(line: &[u8], at: u64) -> Option<Event> {
    let e: Value = serde_json::from_slice(line).ok()?;
    let change = match e["type"].as_str()? {
        "ADDED" | "MODIFIED" => Change::Put,
        "DELETED" => Change::Delete,
        _ => return None,
    };
    Some(Event {
        key: e.pointer("/object/metadata/name")?.as_str()?.to_string(),
        rev: rev_of(&e["object"])?,
        change,
        value: e
            .pointer("/object/data/v")
            .and_then(Value::as_str)
            .map(str::to_string),
        at,
    })
}

/// One client until `stop`: mostly read-modify-write (a read, then an
/// update on the revision read: a conflict when another client came
/// first), some blind creates, updates and deletes.
fn client(
    c: usize,
    t: &Target,
    load: Load,
    recorder: &Recorder<(String, Input), Output>,
    stop: &AtomicBool,
) {
    let http = http(Duration::from_secs(3));
    let mut n = 0u64;
    let mut last_rev: Vec<Option<u64>> = vec![None; load.keys];
    let mut epoch = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let now = recorder.now() / load.rotate.as_nanos().max(1) as u64;
        if now != epoch {
            epoch = now;
            last_rev.fill(None);
        }
        let k = (n as usize * 7 + c * 5) % load.keys;
        let key = format!("obj-{epoch}-{k:02}");
        let value = format!("c{c}-{n}");
        let api = &t.apis[(n as usize + c) % t.apis.len()];
        let run = |input: Input| {
            recorder.record(c, (key.clone(), input.clone()), Output::Unknown, || {
                perform(&http, t, api, &key, &input)
            })
        };
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
}

/// Run the clients and the watch while `faults` runs (it injects faults
/// through the [`Faults`] it is given and returns when done), then stop.
pub fn run<E>(
    t: &Target,
    load: Load,
    faults: impl FnOnce(&Faults) -> Result<(), E>,
) -> Result<Run, String>
where
    E: std::fmt::Display,
{
    let list: Value = http(Duration::from_secs(10))
        .get(format!(
            "https://{}/api/v1/namespaces/{}/configmaps",
            t.apis[0], t.namespace
        ))
        .bearer_auth(&t.token)
        .send()
        .and_then(|r| r.json())
        .map_err(|e| format!("listing ConfigMaps: {e}"))?;
    let start_rev: u64 = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or("the list has no revision")?;
    let recorder: Recorder<(String, Input), Output> = Recorder::default();
    let windows = Faults {
        began: Some(Instant::now()),
        windows: Mutex::default(),
    };
    let stop = AtomicBool::new(false);
    let watched = Mutex::new(Vec::new());
    let began = Instant::now();
    let injected = std::thread::scope(|sc| {
        sc.spawn(|| {
            let e = follow(t, start_rev, &recorder, &stop);
            *watched.lock().unwrap_or_else(|e| e.into_inner()) = e;
        });
        for c in 0..load.clients {
            let (recorder, stop) = (&recorder, &stop);
            sc.spawn(move || client(c, t, load, recorder, stop));
        }
        // The clients stop whatever happened, or the scope would wait for ever.
        let injected = faults(&windows).map_err(|e| e.to_string());
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        injected
    });
    injected?;
    Ok(Run {
        history: recorder.history(),
        events: watched.into_inner().unwrap_or_else(|e| e.into_inner()),
        start_rev,
        faults: windows
            .windows
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        elapsed: began.elapsed(),
    })
}

/// The checks' findings and the run's figures.
#[derive(Debug, Default)]
pub struct Report {
    pub operations: usize,
    pub answered: usize,
    pub write_requests: usize,
    pub acknowledged_writes: usize,
    pub watch_events: usize,
    /// Objects whose history is not linearizable, each with its shortest
    /// failing prefix's last operations.
    pub illegal: Vec<(String, String)>,
    /// Objects the checker gave up on (its step budget ran out).
    pub undecided: Vec<String>,
    pub watch_violations: Vec<String>,
    /// 99th percentile of acknowledged writes clear of any fault window
    /// (and the 2 s after it), in milliseconds.
    pub p99_write_ms: Option<f64>,
    /// After each fault, how long until a write invoked after it was
    /// acknowledged, longest first (fault, milliseconds).
    pub unavailable_ms: Vec<(String, f64)>,
    pub checked_in: Duration,
}

impl Report {
    /// No violation found (and nothing left undecided).
    pub fn passed(&self) -> bool {
        self.illegal.is_empty() && self.undecided.is_empty() && self.watch_violations.is_empty()
    }
}

/// The last operations of the shortest prefix (by invocation) of `ops`
/// that is not linearizable.
fn explain(mut ops: Vec<KeyOp>, budget: u64) -> String {
    ops.sort_by_key(|o| o.call);
    let (mut lo, mut hi) = (1, ops.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if crate::kv::check(&ops[..mid], budget).is_empty() {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut text = format!("the first {lo} operations are not linearizable; the last ones:\n");
    for o in &ops[lo.saturating_sub(25)..lo] {
        text.push_str(&format!(
            "  {:>12} {:>12} c{:<2} {:?} -> {:?}\n",
            o.call,
            o.ret.map_or("-".into(), |r| r.to_string()),
            o.client,
            o.input.1,
            o.output
        ));
    }
    text
}

fn is_write(i: &Input) -> bool {
    !matches!(i, Input::Get)
}

/// Narrow the writes whose outcome is unknown by what the watch saw, as
/// etcd's robustness tests do: a create or update whose (unique) value the
/// watch delivered happened, at the revision delivered and before it was
/// delivered; one whose value it never delivered never happened (the watch
/// is itself checked for gaps). A delete followed by no deletion of its key
/// never happened; an unanswered read is dropped. What is left stays open.
/// This only takes away orders that did not happen: it cannot hide a
/// violation, and keeps the search from trying every place for every
/// unanswered write.
pub fn resolve(history: &[KeyOp], events: &[Event]) -> Vec<KeyOp> {
    let mut put: HashMap<(&str, &str), &Event> = HashMap::new();
    let mut deleted: HashMap<&str, u64> = HashMap::new();
    for e in events {
        match (&e.change, &e.value) {
            (Change::Put, Some(v)) => {
                put.entry((e.key.as_str(), v.as_str())).or_insert(e);
            }
            (Change::Delete, _) => {
                let last = deleted.entry(e.key.as_str()).or_default();
                *last = (*last).max(e.at);
            }
            _ => {}
        }
    }
    history
        .iter()
        .filter_map(|o| {
            if o.output != Output::Unknown {
                return Some(o.clone());
            }
            let key = o.input.0.as_str();
            match &o.input.1 {
                Input::Create { value } | Input::Update { value, .. } => {
                    let e = put.get(&(key, value.as_str()))?;
                    Some(KeyOp {
                        ret: Some(e.at.max(o.call)),
                        output: Output::Written { rev: e.rev },
                        ..o.clone()
                    })
                }
                Input::Delete { .. } => deleted
                    .get(key)
                    .is_some_and(|last| *last >= o.call)
                    .then(|| o.clone()),
                Input::Get => None,
            }
        })
        .collect()
}

/// Check a run: every object's history, the watch, and the figures.
pub fn check(run: &Run, budget_per_key: u64) -> Report {
    let h = &run.history;
    let t = Instant::now();
    let resolved = resolve(h, &run.events);
    let verdicts = crate::kv::check(&resolved, budget_per_key);
    let mut r = Report {
        operations: h.len(),
        answered: h.iter().filter(|o| o.ret.is_some()).count(),
        write_requests: h.iter().filter(|o| is_write(&o.input.1)).count(),
        acknowledged_writes: h
            .iter()
            .filter(|o| matches!(o.output, Output::Written { .. } | Output::Deleted))
            .count(),
        watch_events: run.events.len(),
        ..Report::default()
    };
    for (key, v) in &verdicts {
        match v {
            Verdict::Illegal => {
                let ops: Vec<KeyOp> = resolved
                    .iter()
                    .filter(|o| &o.input.0 == key)
                    .cloned()
                    .collect();
                r.illegal.push((key.clone(), explain(ops, budget_per_key)));
            }
            _ => r.undecided.push(key.clone()),
        }
    }
    // The watch: every acknowledged create and update once, in order.
    let mut w = Writes::default();
    for o in h {
        match &o.output {
            Output::Written { rev } => {
                w.acknowledged
                    .insert((o.input.0.clone(), *rev), Change::Put);
            }
            // A delete's revision is not in its answer; an unknown write's
            // event may come at any revision.
            Output::Unknown | Output::Deleted => {
                w.unknown.insert(o.input.0.clone());
            }
            _ => {}
        }
    }
    r.watch_violations = crate::watch::check(&run.events, run.start_rev, &w);
    r.checked_in = t.elapsed();

    // Figures: write latency clear of faults, unavailability after each.
    const SETTLE: u64 = 2_000_000_000;
    let clear = |from: u64, to: u64| {
        run.faults
            .iter()
            .all(|f| to < f.from || from > f.to + SETTLE)
    };
    let mut lat: Vec<u64> = h
        .iter()
        .filter(|o| {
            is_write(&o.input.1) && matches!(o.output, Output::Written { .. } | Output::Deleted)
        })
        .filter_map(|o| Some((o.call, o.ret?)))
        .filter(|(c, e)| clear(*c, *e))
        .map(|(c, e)| e - c)
        .collect();
    lat.sort_unstable();
    if !lat.is_empty() {
        let i = ((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1;
        r.p99_write_ms = Some(lat[i] as f64 / 1e6);
    }
    for f in &run.faults {
        let back = h
            .iter()
            .filter(|o| {
                o.call >= f.from && matches!(o.output, Output::Written { .. } | Output::Deleted)
            })
            .filter_map(|o| o.ret)
            .min();
        if let Some(b) = back {
            r.unavailable_ms
                .push((f.what.clone(), (b - f.from) as f64 / 1e6));
        }
    }
    r.unavailable_ms
        .sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Operation;

    fn op(call: u64, input: Input, output: Output) -> KeyOp {
        Operation {
            client: 0,
            call,
            ret: (output != Output::Unknown).then_some(call + 1),
            input: ("k".into(), input),
            output,
        }
    }

    fn put(rev: u64, value: &str, at: u64) -> Event {
        Event {
            key: "k".into(),
            rev,
            change: Change::Put,
            value: Some(value.into()),
            at,
        }
    }

    #[test]
    fn unknown_writes_are_settled_by_what_the_watch_saw() {
        let update = |v: &str| Input::Update {
            value: v.into(),
            precondition: None,
        };
        let delete = Input::Delete { precondition: None };
        let h = vec![
            op(0, update("seen"), Output::Unknown),
            op(10, update("never"), Output::Unknown),
            op(20, Input::Get, Output::Unknown),
            op(30, delete.clone(), Output::Unknown),
            op(40, update("acked"), Output::Written { rev: 9 }),
            op(50, delete.clone(), Output::Unknown),
        ];
        let mut gone = put(8, "", 45);
        gone.change = Change::Delete;
        let events = vec![put(5, "seen", 7), put(9, "acked", 41), gone];
        let r = resolve(&h, &events);
        // The seen update happened at 5, before the watch had it at 7.
        assert_eq!(r[0].output, Output::Written { rev: 5 });
        assert_eq!(r[0].ret, Some(7));
        // The delete at 30 may be the deletion seen at 45, so stays open;
        // the one at 50 was followed by none, the unseen update and the
        // unanswered read are gone.
        let kept: Vec<u64> = r.iter().map(|o| o.call).collect();
        assert_eq!(kept, vec![0, 30, 40]);
        assert_eq!(r[1].ret, None);
    }
}
