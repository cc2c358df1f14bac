//! Edge autonomy: a node whose servers are all away keeps serving its pods
//! from its last view, an agent restarted meanwhile starts its pods again
//! from its on-disk cache, and when the servers return the status catches
//! up and new work converges. A node cut off without a word (packets
//! dropped) notices, and still wakes a scaled-to-zero Service from a pod it
//! starts itself, handed over to the cluster's once the link heals.

use crate::common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{Server, TestNet, eventually};

/// How long the servers stay away (`SKIFF_EDGE_AWAY_SECS`, default five
/// minutes as the acceptance check says).
fn away() -> Duration {
    let secs = std::env::var("SKIFF_EDGE_AWAY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

const CONTAINER_APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: box
spec:
  replicas: 1
  selector: {matchLabels: {app: box}}
  template:
    metadata: {labels: {app: box}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: acc/busybox-httpd:v1
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
        command: ["/bin/sh", "-c", "mkdir -p /var/www && echo box > /var/www/index.html && exec httpd -f -p 8080 -h /var/www"]
---
apiVersion: v1
kind: Service
metadata:
  name: box
spec:
  selector: {app: box}
  ports: [{port: 80, targetPort: 8080}]
"#;

fn url(s: &Server, svc: &str) -> String {
    let ip = s.k(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"]);
    format!("http://{ip}/")
}

fn answers(url: &str) -> bool {
    matches!(common::http_get(url), Ok((200, _)))
}

fn agent_log(a: &common::Agent) -> String {
    std::fs::read_to_string(&a.log).unwrap_or_default()
}

#[test]
fn a_node_cut_off_from_its_servers_keeps_serving_and_restarts_from_its_cache() -> Result<()> {
    let net = TestNet::claim();
    let root = tempfile::tempdir()?;
    let mut s = common::server_for_agents(root.path(), &net)?;
    let node = net.node(1).0;
    let agent_dir = root.path().join("agent");
    let join = |s: &Server| common::Agent::join_in(s, &net, 1, &agent_dir, None, &[]);
    let mut agent = join(&s)?;
    agent.wait_ready(&s, &node);
    s.import_wasm(
        &common::example_wasm("hello-wasm", "hello_wasm.wasm"),
        "acc/hello:v1",
    )?;
    s.import_tar(&common::busybox_image(
        &s,
        "acc/busybox-httpd:v1",
        &["--cmd", "httpd"],
    )?)?;
    s.apply(&common::web_app(1));
    s.apply(CONTAINER_APP);
    s.k(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    s.k(&["rollout", "status", "deploy/box", "--timeout=120s"]);
    let (web, boxed) = (url(&s, "web"), url(&s, "box"));
    for u in [&web, &boxed] {
        eventually(Duration::from_secs(30), || answers(u).then_some(()))
            .unwrap_or_else(|| panic!("{u} answers"));
    }

    // Every server away: both Services keep answering from the node's last view.
    s.kill();
    let away = away();
    let gone = Instant::now();
    let restart_at = away.saturating_sub(Duration::from_secs(45));
    let mut requests = 0u64;
    while gone.elapsed() < restart_at {
        for u in [&web, &boxed] {
            let answer = common::http_get(u);
            assert!(
                matches!(answer, Ok((200, _))),
                "{u} answers while the servers are away ({:?} in): {answer:?}; agent log:\n{}",
                gone.elapsed(),
                agent_log(&agent)
            );
            requests += 1;
        }
        assert!(agent.child.try_wait()?.is_none(), "the agent runs");
        std::thread::sleep(Duration::from_millis(250));
    }

    // The agent restarted while they are still away: its pods come back from
    // its cache.
    agent.kill();
    let started = Instant::now();
    agent = join(&s)?;
    eventually(Duration::from_secs(30), || answers(&web).then_some(())).unwrap_or_else(|| {
        panic!(
            "the Wasm pod answers again after the agent's restart; log:\n{}",
            agent_log(&agent)
        )
    });
    let wasm_back = started.elapsed();
    eventually(Duration::from_secs(60), || answers(&boxed).then_some(())).unwrap_or_else(|| {
        panic!(
            "the container pod answers again after the agent's restart; log:\n{}",
            agent_log(&agent)
        )
    });
    let container_back = started.elapsed();
    assert!(
        agent_log(&agent).contains("resuming from the cache"),
        "the agent resumed from its cache"
    );
    eventually(Duration::from_secs(30), || {
        agent_log(&agent)
            .contains("adopted a container still running from before")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the container that kept running was adopted, not started again; log:\n{}",
            agent_log(&agent)
        )
    });
    while gone.elapsed() < away {
        for u in [&web, &boxed] {
            assert!(answers(u), "{u} answers after the agent's restart");
            requests += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // The servers return: status catches up, held events arrive, and a
    // Deployment scaled now converges.
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let back = Instant::now();
    let ready = |s: &Server| {
        let node_ready = s.k(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        let pods = s.k(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\" \"}{end}",
        ]);
        node_ready == "True" && pods.split_whitespace().count() == 2 && !pods.contains("False")
    };
    eventually(Duration::from_secs(60), || ready(&s).then_some(()))
        .expect("the node and its pods are Ready on the servers again");
    let caught_up = back.elapsed();
    let started_events = s.k(&[
        "get",
        "events",
        "--field-selector",
        "reason=Started",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name}{\"\\n\"}{end}",
    ]);
    let web_pod = s.k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    eventually(Duration::from_secs(20), || {
        let events = s.k(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={web_pod}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}:{.count}{\"\\n\"}{end}",
        ]);
        // Started before the outage and again by the restarted agent (one
        // folded event counts both, or two events).
        let started: u32 = events
            .lines()
            .filter_map(|l| l.strip_prefix("Started:"))
            .filter_map(|c| c.parse::<u32>().ok())
            .sum();
        (started >= 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!("the events recorded while the servers were away arrive: {started_events}")
    });
    let box_restarts = s.k(&[
        "get",
        "pods",
        "-l",
        "app=box",
        "-o",
        "jsonpath={.items[0].status.containerStatuses[0].restartCount}",
    ]);
    assert_eq!(box_restarts, "0", "the adopted container never restarted");
    s.k(&["scale", "deploy/web", "--replicas=2"]);
    s.k(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(answers(&web) && answers(&boxed));
    eprintln!(
        "edge: servers away {away:?}, {requests} requests answered, none failed; after the agent's restart the Wasm Service answered in {wasm_back:?}, the container one in {container_back:?}; status caught up {caught_up:?} after the servers returned"
    );
    agent.kill();
    Ok(())
}

const SLEEPY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: sleepy
  annotations: {skiff.dev/scale-to-zero-after: 3s}
spec:
  replicas: 1
  selector: {matchLabels: {app: sleepy}}
  template:
    metadata: {labels: {app: sleepy}}
    spec:
      containers:
      - name: app
        image: acc/hello:v1
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: sleepy
spec:
  selector: {app: sleepy}
  ports: [{port: 80, targetPort: http}]
"#;

fn at_zero(s: &Server, name: &str) -> bool {
    let replicas = s.k(&["get", "deploy", name, "-o", "jsonpath={.spec.replicas}"]);
    let pods = s.k(&["get", "pods", "-l", &format!("app={name}"), "-o", "name"]);
    replicas == "0" && pods.trim().is_empty()
}

#[test]
fn a_scaled_to_zero_service_on_a_node_cut_off_without_a_word_wakes_from_its_cache() -> Result<()> {
    let net = TestNet::claim();
    let root = tempfile::tempdir()?;
    let s = common::server_for_agents(root.path(), &net)?;
    let node = net.node(1).0;
    let agent = common::Agent::join_in(&s, &net, 1, &root.path().join("agent"), None, &[])?;
    agent.wait_ready(&s, &node);
    s.import_wasm(
        &common::example_wasm("hello-wasm", "hello_wasm.wasm"),
        "acc/hello:v1",
    )?;
    s.apply(SLEEPY);
    s.k(&["rollout", "status", "deploy/sleepy", "--timeout=90s"]);
    eventually(Duration::from_secs(60), || {
        at_zero(&s, "sleepy").then_some(())
    })
    .expect("the Deployment scales to zero");
    let sleepy = url(&s, "sleepy");

    // The node cut off from its server without a word (every packet to and
    // from the server's port dropped): once the agent notices, a request
    // still wakes the Service, from a pod the node starts from its last
    // view of the Deployment.
    let port: u16 = s.api.rsplit_once(':').context("api port")?.1.parse()?;
    let cut = common::Silenced::port(port)?;
    let cut_at = Instant::now();
    eventually(Duration::from_secs(90), || {
        agent_log(&agent)
            .contains("no api server answers: the node runs from its cache")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the agent notices the cut; log:\n{}", agent_log(&agent)));
    let noticed = cut_at.elapsed();
    let t = Instant::now();
    let first = common::http_get(&sleepy);
    let woke = t.elapsed();
    assert!(
        matches!(&first, Ok((200, body)) if body == "hello from wasm\n"),
        "the scaled-to-zero Service wakes with its servers away: {first:?}; agent log:\n{}",
        agent_log(&agent)
    );
    assert!(
        agent_log(&agent).contains("starting a pod of the Deployment from this node's last view")
    );
    for _ in 0..20 {
        assert!(answers(&sleepy), "the node-started pod keeps answering");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The link heals: the node makes the wake-up it owed, and hands the
    // Service over to the Deployment's own pod without a failed request.
    drop(cut);
    let back = Instant::now();
    let mut requests = 0;
    let handed = eventually(Duration::from_secs(60), || {
        assert!(answers(&sleepy), "the Service answers during the hand-over");
        requests += 1;
        std::thread::sleep(Duration::from_millis(100));
        agent_log(&agent)
            .contains("stopping the pod this node started while cut off: a pod of the Deployment is Ready")
            .then_some(back.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "the node's own pod is handed over; log:\n{}",
            agent_log(&agent)
        )
    });
    let api_pods = s.k(&["get", "pods", "-l", "app=sleepy", "-o", "name"]);
    assert_eq!(
        api_pods.lines().count(),
        1,
        "one pod of the Deployment: {api_pods}"
    );
    assert!(
        !api_pods.contains("offline"),
        "the node's own pod never reaches the API"
    );
    for _ in 0..10 {
        assert!(answers(&sleepy), "the Service answers after the hand-over");
    }
    let events = s.k(&[
        "get",
        "events",
        "--field-selector",
        "reason=ScaledFromZeroOffline",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("sleepy-offline-"),
        "the held event arrives: {events}"
    );
    eprintln!(
        "edge scale-to-zero: the agent noticed the cut in {noticed:?}; woke in {woke:?} while cut off; handed over {handed:?} after the link healed, {requests} requests meanwhile, none failed"
    );
    Ok(())
}
