//! Wasm pods end to end with the real kubectl: HTTP components served on their
//! own pod IP (from the host and from another network namespace), command
//! components ending by exit code and restartPolicy, limits that stop runaway
//! guests, clear reasons for bad input, and clean-up of namespaces and veths.

use crate::common;

use common::http_get as get;

use std::time::Duration;

use anyhow::Result;
use common::{ClientNs, eventually, in_netns};
use serde_json::Value;

fn http_pod(name: &str, extra_spec: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec:
  runtimeClassName: wasm
  containers:
  - name: web
    image: acc/hello:v1
    env:
    - name: GREETING
      value: hello-from-{name}
    ports:
    - containerPort: 8080
{extra_spec}"#
    )
}

/// Wait for `pods` to be Ready; their pod IPs, in order.
fn ready_ips(s: &common::Server, pods: &[&str]) -> Vec<String> {
    for p in pods {
        s.k(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=60s",
        ]);
    }
    pods.iter()
        .map(|p| {
            s.json(&["pod", p])["status"]["podIP"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// Whether an `OOMKilling` event about `pod` shows up within 20 s.
fn oom_event(s: &common::Server, pod: &str) -> bool {
    eventually(Duration::from_secs(20), || {
        let field = format!("involvedObject.name={pod}");
        let e = s.k(&["get", "events", "--field-selector", &field]);
        e.contains("OOMKilling").then_some(())
    })
    .is_some()
}

fn job_pod(name: &str, policy: &str, args: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {policy}
  containers:
  - name: main
    image: acc/job:v1
    args: [{args}]
{resources}"#
    )
}

fn container_state(pod: &Value) -> Value {
    pod["status"]["containerStatuses"][0].clone()
}

#[test]
fn http_pod_serves_on_its_pod_ip_and_is_removed_cleanly() -> Result<()> {
    let mut c = common::one_node(&[])?;
    c.s.apply(&http_pod("web", "", ""));
    c.s.k(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let pod = c.s.json(&["pod", "web"]);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let (node, bridge) = c.net.node(0);
    assert!(ip.starts_with(&format!("10.88.{}.", c.net.octet)), "{ip}");
    assert_eq!(pod["spec"]["nodeName"], node.as_str());
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    for cond in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        let found = pod["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == cond && c["status"] == "True");
        assert!(found, "{cond} in {}", pod["status"]);
    }
    assert!(container_state(&pod)["state"]["running"]["startedAt"].is_string());
    let wide = c.s.k(&["get", "pod", "web", "-o", "wide"]);
    assert!(wide.contains(&ip) && wide.contains(&node), "{wide}");

    // From the host, through the bridge.
    let (code, body) = get(&format!("http://{ip}:8080/"))?;
    assert_eq!(code, 200);
    assert!(body.contains("hello-from-web"), "{body}");
    // From another network namespace on the pod network.
    let client_ip = format!("10.88.{}.60", c.net.octet);
    let gw = format!("10.88.{}.1", c.net.octet);
    let client = ClientNs::new(&format!("skc{}", c.net.octet), &bridge, &client_ip, 26, &gw)?;
    let out = in_netns(
        &client.name,
        &["curl", "-s", "-m", "5", &format!("http://{ip}:8080/")],
    )?;
    assert!(out.contains("hello-from-web"), "{out}");
    // The pod's own namespace holds the pod IP.
    let pod_ns = c.net.netns_of(0, &ip);
    let addrs = in_netns(&pod_ns, &["ip", "-4", "addr", "show", "eth0"])?;
    assert!(addrs.contains(&ip), "{addrs}");

    let logs = c.s.k(&["logs", "web"]);
    assert!(logs.contains("request /"), "{logs}");
    let tail = c.s.k(&["logs", "web", "--tail", "1", "-c", "web"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let wrong = c.s.kubectl(&["logs", "web", "-c", "nope"]);
    assert!(
        !wrong.ok && wrong.stderr.contains("not valid"),
        "{}",
        wrong.stderr
    );

    // `kubectl logs -f` streams what comes later.
    let mut follow = std::process::Command::new(common::kubectl_path())
        .arg("--kubeconfig")
        .arg(c.s.kubeconfig())
        .args(["logs", "-f", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    get(&format!("http://{ip}:8080/later"))?;
    let streamed = {
        use std::io::{BufRead, BufReader};
        let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
        let mut got = String::new();
        while let Some(Ok(l)) = lines.next() {
            got.push_str(&l);
            got.push('\n');
            if l.contains("/later") {
                break;
            }
        }
        got
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(streamed.contains("request /later"), "{streamed}");

    // The agent restarts (with its server) and adopts the pod: same IP, serving.
    c.s.kill();
    c.s.start()?;
    c.s.wait_ready(Duration::from_secs(30))?;
    let answered = eventually(Duration::from_secs(30), || {
        get(&format!("http://{ip}:8080/"))
            .ok()
            .filter(|(code, _)| *code == 200)
    });
    assert!(
        answered.is_some(),
        "the pod serves again after an agent restart"
    );
    assert_eq!(c.s.json(&["pod", "web"])["status"]["podIP"], ip.as_str());
    assert!(
        c.net.namespaces(0).contains(&pod_ns),
        "the namespace was adopted"
    );

    let veths_before = host_veths();
    c.s.k(&["delete", "pod", "web", "--timeout=30s"]);
    assert!(
        c.s.kubectl(&["get", "pod", "web"])
            .stderr
            .contains("NotFound")
    );
    assert!(!c.net.namespaces(0).contains(&pod_ns), "namespace removed");
    let veths_after = host_veths();
    assert!(
        veths_before.iter().any(|v| !veths_after.contains(v)),
        "the pod's veth is gone: {veths_before:?} -> {veths_after:?}"
    );
    assert!(
        get(&format!("http://{ip}:8080/")).is_err(),
        "nothing answers on the old IP"
    );
    Ok(())
}

/// Host-side pod veths (`sk<hash>`) on this machine.
fn host_veths() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or("").to_string())
        .filter(|n| n.starts_with("sk") && n.len() == 14)
        .collect()
}

#[test]
fn command_pods_end_by_exit_code_and_restart_by_policy() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.apply(&job_pod("ok", "Never", r#""--exit", "0""#, ""));
    s.apply(&job_pod("fails", "Never", r#""--exit", "3""#, ""));
    s.apply(&job_pod("again", "OnFailure", r#""--exit", "1""#, ""));
    s.k(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/ok",
        "--timeout=60s",
    ]);
    s.k(&[
        "wait",
        "--for=jsonpath={.status.phase}=Failed",
        "pod/fails",
        "--timeout=60s",
    ]);
    let ok = container_state(&s.json(&["pod", "ok"]));
    assert_eq!(ok["state"]["terminated"]["exitCode"], 0);
    assert_eq!(ok["state"]["terminated"]["reason"], "Completed");
    let fails = container_state(&s.json(&["pod", "fails"]));
    // Rust's std on wasip2 reports any failing exit as 1.
    assert_ne!(fails["state"]["terminated"]["exitCode"], 0);
    assert_eq!(fails["state"]["terminated"]["reason"], "Error");
    assert_eq!(fails["restartCount"], 0);
    let out = s.k(&["logs", "ok"]);
    assert!(
        out.contains("hello from wasm-job") && out.contains("--exit 0"),
        "{out}"
    );

    let restarts = eventually(Duration::from_secs(60), || {
        let st = container_state(&s.json(&["pod", "again"]));
        (st["restartCount"].as_u64().unwrap_or(0) >= 3).then_some(st)
    })
    .expect("OnFailure restarts the failing container");
    assert_eq!(restarts["lastState"]["terminated"]["reason"], "Error");
    let pod = s.json(&["pod", "again"]);
    assert_eq!(
        pod["status"]["phase"], "Running",
        "a restarting pod stays Running"
    );
    let waiting = eventually(Duration::from_secs(30), || {
        let st = container_state(&s.json(&["pod", "again"]));
        st["state"]["waiting"]["reason"]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(waiting.as_deref(), Some("CrashLoopBackOff"));
    let prev = s.k(&["logs", "again", "--previous"]);
    assert!(prev.contains("--exit 1"), "{prev}");
    let events = s.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=again",
    ]);
    assert!(events.contains("BackOff"), "{events}");
    // A finished pod gives its address back but keeps its status and logs.
    for done in ["ok", "fails"] {
        let ip = s.json(&["pod", done])["status"]["podIP"]
            .as_str()
            .unwrap()
            .to_string();
        let ns = c.net.netns_of(0, &ip);
        let gone = eventually(Duration::from_secs(10), || {
            (!c.net.namespaces(0).contains(&ns)).then_some(())
        });
        assert!(gone.is_some(), "{done} gave its namespace back");
    }
    Ok(())
}

#[test]
fn a_wasm_pods_memory_limit_is_one_budget_for_all_its_requests() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    // 64 MiB for the container: one 24 MiB request fits, and two, but not
    // three at once (without a shared budget each would fit on its own).
    s.apply(&http_pod(
        "budget",
        "    resources:\n      limits:\n        memory: 64Mi\n",
        "",
    ));
    s.apply(&http_pod(
        "capped",
        "",
        r#""skiff.dev/max-concurrent-requests": "1""#,
    ));
    // The neighbour asked for CPU, as a latency-sensitive pod does in
    // Kubernetes; the pod flooded below asked for none, so it weighs least.
    s.apply(&http_pod(
        "quiet",
        "    resources:\n      requests:\n        cpu: 500m\n",
        "",
    ));
    let ips = ready_ips(s, &["budget", "capped", "quiet"]);
    let (budget, capped, quiet) = (&ips[0], &ips[1], &ips[2]);

    let url = format!("http://{budget}:8080/alloc?mb=24&hold_ms=2500");
    let answers: Vec<(u16, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4).map(|_| sc.spawn(|| get(&url))).collect();
        hs.into_iter().filter_map(|h| h.join().ok()?.ok()).collect()
    });
    let ok = answers.iter().filter(|(c, _)| *c == 200).count();
    let oom = answers
        .iter()
        .filter(|(c, b)| *c == 500 && b.contains("memory"))
        .count();
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert!(
        (1..=2).contains(&ok) && oom >= 2,
        "the budget did not hold: {answers:?}"
    );
    // The budget is free again once the requests are done.
    assert_eq!(get(&format!("http://{budget}:8080/alloc?mb=24"))?.0, 200);
    assert!(oom_event(s, "budget"), "no event records the memory limit");

    // One request at a time: a second one waits for the slot until the
    // first (holding it 2 s) is done; without the cap it answers at once.
    let slow = format!("http://{capped}:8080/alloc?mb=1&hold_ms=2000");
    let started = std::time::Instant::now();
    let codes: Vec<(u16, Duration)> = std::thread::scope(|sc| {
        let first = sc.spawn(|| get(&slow).map(|r| (r.0, started.elapsed())));
        std::thread::sleep(Duration::from_millis(300));
        let second = get(&format!("http://{capped}:8080/")).map(|r| (r.0, started.elapsed()));
        [first.join().ok().and_then(|r| r.ok()), second.ok()]
            .into_iter()
            .flatten()
            .collect()
    });
    assert_eq!(codes.len(), 2, "{codes:?}");
    assert_eq!((codes[0].0, codes[1].0), (200, 200));
    assert!(
        codes[1].1 >= Duration::from_millis(1500),
        "the second request did not wait for the slot: {codes:?}"
    );

    // A flood of allocating requests at one pod: the other keeps answering.
    // The flood's client threads run at the least CPU weight, standing in
    // for clients on another host (on two cores they would otherwise take
    // the CPU the pods share); a second flood at normal weight is printed
    // for the record.
    let flood = format!("http://{budget}:8080/alloc?mb=40");
    let timed = |n: usize| -> Vec<Duration> {
        (0..n)
            .filter_map(|_| {
                let t = std::time::Instant::now();
                let (code, _) = get(&format!("http://{quiet}:8080/")).ok()?;
                (code == 200).then(|| t.elapsed())
            })
            .collect()
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let flooded = |load: Option<&common::LoadCgroup>| {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|sc| {
            for _ in 0..8 {
                sc.spawn(|| {
                    if let Some(cg) = load {
                        cg.join();
                    }
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = get(&flood);
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(500));
            let busy = timed(30);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            busy
        })
    };
    let idle = timed(30);
    let load = common::LoadCgroup::new();
    let busy = flooded(load.as_ref());
    let same_host = flooded(None);
    drop(load);
    assert_eq!(
        (idle.len(), busy.len(), same_host.len()),
        (30, 30, 30),
        "the neighbour failed requests"
    );
    let i = median(idle);
    for (clients, flooded) in [("least", busy), ("normal", same_host)] {
        let b = median(flooded);
        println!(
            "neighbour latency, flood clients at {clients} weight: idle p50 {i:?}, flooded p50 {b:?} ({:.2}x)",
            b.as_secs_f64() / i.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

#[test]
fn limits_stop_runaway_guests_and_neighbours_keep_serving() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    let limited = "    resources:\n      limits:\n        memory: 64Mi\n        cpu: 500m\n";
    s.apply(&http_pod(
        "hog",
        limited,
        r#""skiff.dev/request-timeout": "2s""#,
    ));
    s.apply(&http_pod("neighbour", "", ""));
    s.apply(&job_pod(
        "oom",
        "Never",
        r#""--alloc-mb", "256""#,
        "    resources:\n      limits:\n        memory: 64Mi\n",
    ));
    let ips = ready_ips(s, &["hog", "neighbour"]);
    let (hog, neighbour) = (&ips[0], &ips[1]);

    let (code, body) = get(&format!("http://{hog}:8080/alloc?mb=200"))?;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("memory"), "{body}");
    assert_eq!(
        get(&format!("http://{hog}:8080/"))?.0,
        200,
        "the pod keeps serving"
    );
    assert_eq!(get(&format!("http://{neighbour}:8080/"))?.0, 200);
    assert!(oom_event(s, "hog"), "an event records the memory limit");

    let t = std::time::Instant::now();
    let (code, _) = get(&format!("http://{hog}:8080/spin"))?;
    assert_eq!(code, 500);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "cut off after {:?}",
        t.elapsed()
    );
    assert_eq!(
        get(&format!("http://{neighbour}:8080/"))?.0,
        200,
        "the node stays responsive"
    );

    // The pod's guest threads are accounted to its own cgroup.
    let uid = s.json(&["pod", "hog"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let node = c.net.node(0).0;
    let usage = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/cpuacct/skiff/{node}/pod{uid}/cpuacct.usage"
    ))
    .or_else(|_| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/skiff/{node}/pod{uid}/cpu.stat"))
    })?;
    let used: u64 = usage
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(
        used > 100_000_000,
        "the spin shows in the pod's cgroup: {usage}"
    );

    s.k(&[
        "wait",
        "--for=jsonpath={.status.phase}=Failed",
        "pod/oom",
        "--timeout=60s",
    ]);
    let oom = container_state(&s.json(&["pod", "oom"]));
    assert_eq!(oom["state"]["terminated"]["reason"], "OOMKilled", "{oom}");
    Ok(())
}

#[test]
fn bad_input_gets_a_waiting_reason_a_message_and_an_event() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    let dir = tempfile::tempdir()?;
    let not_wasm = common::oci_layout(
        dir.path(),
        b"plain text",
        "application/vnd.oci.image.layer.v1.tar",
        "acc/text:v1",
    );
    s.import_tar(&not_wasm)?;
    let weird = wat::parse_str(
        r#"(component (import "wasi:teleport/beam@0.1.0" (instance (export "go" (func)))))"#,
    )?;
    let weird_path = dir.path().join("weird.wasm");
    std::fs::write(&weird_path, weird)?;
    s.import_wasm(&weird_path, "acc/weird:v1")?;
    let pod = |name: &str, image: &str, rc: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{rc}  containers:\n  - name: main\n    image: {image}\n"
        )
    };
    s.apply(&pod("text", "acc/text:v1", ""));
    s.apply(&pod("weird", "acc/weird:v1", ""));
    s.apply(&pod("missing", "acc/nothing:v9", ""));
    s.apply(&pod(
        "noclass",
        "acc/hello:v1",
        "  runtimeClassName: gvisor\n",
    ));
    let waiting = |name: &str, reasons: &[&str], needle: &str| {
        let got = eventually(Duration::from_secs(30), || {
            let st = container_state(&s.json(&["pod", name]));
            let w = &st["state"]["waiting"];
            let r = w["reason"].as_str().unwrap_or("");
            let m = w["message"].as_str().unwrap_or("");
            (reasons.contains(&r) && m.contains(needle)).then(|| format!("{r}: {m}"))
        });
        assert!(
            got.is_some(),
            "{name}: {}",
            s.json(&["pod", name])["status"]
        );
        let events = s.k(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ]);
        assert!(events.contains(needle), "{name} event: {events}");
    };
    waiting(
        "text",
        &["CreateContainerError"],
        "neither a Wasm component image nor a container image",
    );
    waiting("weird", &["CreateContainerError"], "wasi:teleport/beam");
    waiting(
        "missing",
        &["ErrImagePull", "ImagePullBackOff"],
        "not found",
    );
    let unsched = common::unschedulable_message(s, "noclass")
        .expect("an unknown RuntimeClass keeps the pod unscheduled");
    assert!(unsched.contains("gvisor"), "{unsched}");
    let events = s.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=noclass",
    ]);
    assert!(
        events.contains("FailedScheduling") && events.contains("gvisor"),
        "{events}"
    );
    // The agent and the API keep working.
    s.apply(&http_pod("fine", "", ""));
    s.k(&["wait", "--for=condition=Ready", "pod/fine", "--timeout=60s"]);
    assert!(!s.log().contains("panicked"), "no panic in the server log");
    Ok(())
}

#[test]
fn a_deleted_wasm_pod_finishes_its_requests_and_takes_no_new_ones() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.apply(&http_pod(
        "graceful",
        "  terminationGracePeriodSeconds: 60\n",
        "",
    ));
    s.apply(&http_pod(
        "brief",
        "  terminationGracePeriodSeconds: 1\n",
        "",
    ));
    let ips = ready_ips(s, &["graceful", "brief"]);
    let (graceful, brief) = (ips[0].clone(), ips[1].clone());
    let refused = |ip: &str| {
        let addr: std::net::SocketAddr = format!("{ip}:8080").parse().unwrap();
        matches!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    };

    // A request holding 4 s is in flight when the pod is deleted: it is
    // answered, the pod takes no new connection meanwhile, and it goes once
    // the request is done (not after its 60 s grace period).
    let t0 = std::time::Instant::now();
    let (answer, refused_at, answered_at, deleted_at) = std::thread::scope(|sc| {
        let slow = sc.spawn(|| {
            let r = get(&format!("http://{graceful}:8080/alloc?mb=1&hold_ms=4000"));
            (r, t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        let deleting = sc.spawn(|| {
            let r = s.kubectl(&["delete", "pod", "graceful", "--wait=true", "--timeout=90s"]);
            (r.ok, t0.elapsed())
        });
        let refused_at = eventually(Duration::from_secs(10), || {
            refused(&graceful).then(|| t0.elapsed())
        });
        let (answer, answered_at) = slow.join().expect("request thread");
        let (deleted, deleted_at) = deleting.join().expect("delete thread");
        assert!(deleted, "kubectl delete failed");
        (answer, refused_at, answered_at, deleted_at)
    });
    let (code, body) = answer?;
    assert_eq!(code, 200, "the request in flight was cut off: {body}");
    let refused_at = refused_at.expect("new connections were still accepted");
    assert!(
        refused_at < answered_at,
        "new connections refused at {refused_at:?}, the request answered at {answered_at:?}"
    );
    assert!(answered_at <= deleted_at);
    // Generous: the grace period is 60 s; the drain takes the request's 4 s.
    assert!(
        deleted_at < Duration::from_secs(40),
        "the pod waited out its grace period: gone after {deleted_at:?}"
    );

    // With 1 s of grace a request holding 10 s is cut off, and the pod goes.
    std::thread::scope(|sc| {
        let slow = sc.spawn(|| get(&format!("http://{brief}:8080/alloc?mb=1&hold_ms=10000")));
        std::thread::sleep(Duration::from_millis(500));
        s.k(&["delete", "pod", "brief", "--wait=true", "--timeout=60s"]);
        let cut = slow.join().expect("request thread");
        assert!(
            !matches!(cut, Ok((200, _))),
            "a request outlived the grace period: {cut:?}"
        );
    });
    Ok(())
}
