//! Workload controllers end to end with the real kubectl: Deployments that
//! heal, scale, roll forward within their availability budget, roll back,
//! stall on a broken image, and cascade (or not) on delete.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use common::{Server, eventually};
use serde_json::Value;

/// Pods of `app` that are Ready and not being deleted.
fn ready_pods(s: &Server, app: &str) -> Vec<Value> {
    let list = s.kubectl(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]);
    if !list.ok {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&list.stdout).unwrap_or(Value::Null);
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| {
            p.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .collect()
}

fn names(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn rollout_status(s: &Server, d: &str) -> common::Kubectl {
    s.kubectl(&[
        "rollout",
        "status",
        &format!("deploy/{d}"),
        "--timeout=180s",
    ])
}

#[test]
fn deployment_heals_scales_rolls_and_rolls_back() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.k(&[
        "create",
        "deployment",
        "web",
        "--image=acc/hello:v1",
        "--replicas=3",
        "--port=8080",
    ]);
    let st = rollout_status(s, "web");
    assert!(st.ok, "{}\n{}", st.stdout, st.stderr);
    assert!(
        st.stdout.contains("successfully rolled out"),
        "{}",
        st.stdout
    );
    let pods = ready_pods(s, "web");
    assert_eq!(pods.len(), 3, "{:?}", names(&pods));
    let rs = s.json(&["rs", "-l", "app=web"]);
    let rs0 = &rs["items"][0];
    assert_eq!(
        rs0.pointer("/metadata/annotations/deployment.kubernetes.io~1revision"),
        Some(&Value::from("1"))
    );
    assert_eq!(rs0["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert!(
        rs0.pointer("/metadata/labels/pod-template-hash").is_some(),
        "{rs0}"
    );

    // A deleted pod is replaced.
    let victim = names(&pods)[0].clone();
    s.k(&["delete", "pod", &victim, "--wait=false"]);
    eventually(Duration::from_secs(90), || {
        let now = names(&ready_pods(s, "web"));
        (now.len() == 3 && !now.contains(&victim)).then_some(())
    })
    .expect("the deleted pod is replaced");

    // Scale up and down.
    s.k(&["scale", "deploy/web", "--replicas=10"]);
    assert!(rollout_status(s, "web").ok);
    assert_eq!(ready_pods(s, "web").len(), 10);
    s.k(&["scale", "deploy/web", "--replicas=2"]);
    eventually(Duration::from_secs(90), || {
        let d = s.json(&["deploy", "web"]);
        (d["status"]["replicas"] == 2 && ready_pods(s, "web").len() == 2).then_some(())
    })
    .expect("scaled down to 2");

    // A rolling update of 4 replicas, one surge, one unavailable at most.
    s.k(&["scale", "deploy/web", "--replicas=4"]);
    assert!(rollout_status(s, "web").ok);
    s.k(&[
        "patch",
        "deploy/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":1}}}}"#,
    ]);
    s.k(&[
        "annotate",
        "deploy/web",
        "kubernetes.io/change-cause=greeting v2",
    ]);
    let stop = AtomicBool::new(false);
    let (st, min_ready) = std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let mut min = usize::MAX;
            while !stop.load(Ordering::Relaxed) {
                min = min.min(ready_pods(s, "web").len());
                std::thread::sleep(Duration::from_millis(200));
            }
            min
        });
        s.k(&["set", "env", "deploy/web", "GREETING=v2"]);
        let st = rollout_status(s, "web");
        stop.store(true, Ordering::Relaxed);
        (st, sampler.join().unwrap())
    });
    assert!(st.ok, "{}\n{}", st.stdout, st.stderr);
    assert!(
        min_ready >= 3,
        "ready pods fell to {min_ready} during the rollout"
    );
    let pods = ready_pods(s, "web");
    assert_eq!(pods.len(), 4);
    for p in &pods {
        let env = p.pointer("/spec/containers/0/env").cloned();
        assert!(env.unwrap().to_string().contains("v2"), "{p}");
    }
    let hist = s.k(&["rollout", "history", "deploy/web"]);
    assert!(hist.contains("greeting v2"), "{hist}");
    let revisions: Vec<&str> = hist
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, vec!["1", "2"], "{hist}");

    // Undo returns to the first template.
    s.k(&["rollout", "undo", "deploy/web"]);
    assert!(rollout_status(s, "web").ok);
    let d = s.json(&["deploy", "web"]);
    let env = d.pointer("/spec/template/spec/containers/0/env");
    assert!(env.is_none_or(|e| !e.to_string().contains("v2")), "{env:?}");
    assert_eq!(
        d.pointer("/metadata/annotations/deployment.kubernetes.io~1revision"),
        Some(&Value::from("3"))
    );
    assert_eq!(
        s.json(&["rs", "-l", "app=web"])["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A broken image stalls at the surge limit; old pods keep serving.
    s.k(&[
        "patch",
        "deploy/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":10}}"#,
    ]);
    s.k(&["set", "image", "deploy/web", "*=acc/missing:v9"]);
    let st = rollout_status(s, "web");
    assert!(!st.ok, "a broken rollout must not succeed: {}", st.stdout);
    assert!(
        st.stderr.contains("exceeded its progress deadline"),
        "{}",
        st.stderr
    );
    let d = s.json(&["deploy", "web"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    // The old pods keep serving at their pod IPs.
    let serving = ready_pods(s, "web");
    assert!(serving.len() >= 3, "{:?}", names(&serving));
    for p in &serving {
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        let (code, _) = common::http_get(&format!("http://{ip}:8080/"))?;
        assert_eq!(code, 200, "pod {} at {ip}", p["metadata"]["name"]);
    }
    let all = s.json(&["pods", "-l", "app=web"]);
    assert!(all["items"].as_array().unwrap().len() <= 5, "{all}");
    Ok(())
}

#[test]
fn deleting_a_deployment_cascades_or_orphans() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    for d in ["bg", "fg", "orph"] {
        s.k(&[
            "create",
            "deployment",
            d,
            "--image=acc/hello:v1",
            "--replicas=2",
        ]);
    }
    for d in ["bg", "fg", "orph"] {
        assert!(rollout_status(s, d).ok);
    }
    let count = |kind: &str, app: &str| -> usize {
        s.json(&[kind, "-l", &format!("app={app}")])["items"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    };

    s.k(&["delete", "deploy", "bg"]);
    eventually(Duration::from_secs(60), || {
        (count("rs", "bg") == 0 && count("pods", "bg") == 0).then_some(())
    })
    .expect("background deletion removes ReplicaSets and pods");

    // Foreground: the deployment is gone only once its dependents are.
    s.k(&[
        "delete",
        "deploy",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let held = s.json(&["deploy", "fg"]);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert!(
        held["metadata"]["finalizers"]
            .to_string()
            .contains("foregroundDeletion")
    );
    eventually(Duration::from_secs(60), || {
        let gone = s.not_found(&["deploy", "fg"]);
        gone.then_some(())
    })
    .expect("foreground deletion completes");
    assert_eq!(count("rs", "fg"), 0);
    assert_eq!(count("pods", "fg"), 0);

    // Orphan: the ReplicaSet and pods stay, without an owner.
    s.k(&["delete", "deploy", "orph", "--cascade=orphan"]);
    assert!(s.not_found(&["deploy", "orph"]));
    // The garbage collector has handled the deletion once the ReplicaSet has
    // lost its owner reference (before the owner went, as in Kubernetes).
    let rs = eventually(Duration::from_secs(30), || {
        let rs = s.json(&["rs", "-l", "app=orph"]);
        rs["items"][0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty)
            .then_some(rs)
    })
    .expect("the ReplicaSet is orphaned");
    assert_eq!(rs["items"].as_array().unwrap().len(), 1, "{rs}");
    assert_eq!(ready_pods(s, "orph").len(), 2);
    Ok(())
}

#[test]
fn a_lost_node_goes_not_ready_and_its_pods_come_back_elsewhere() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    let (n0, n1) = (c.net.node(0).0, c.net.node(1).0);
    let dir = tempfile::tempdir()?;
    let mut agent = common::Agent::join(s, &c.net, 1, dir.path())?;
    agent.wait_ready(s, &n1);
    // Put the whole Deployment on the second node, then let the first take pods again.
    s.k(&["cordon", &n0]);
    s.k(&[
        "create",
        "deployment",
        "far",
        "--image=acc/hello:v1",
        "--replicas=3",
    ]);
    assert!(rollout_status(s, "far").ok);
    s.k(&["uncordon", &n0]);
    let on = |node: &str| -> usize {
        ready_pods(s, "far")
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .count()
    };
    assert_eq!(on(&n1), 3);

    agent.kill();
    let killed = std::time::Instant::now();
    eventually(Duration::from_secs(40), || {
        let n = s.json(&["node", &n1]);
        let ready = n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (ready["status"] != "True").then_some(())
    })
    .expect("the lost node stops being Ready");
    let not_ready = killed.elapsed();
    let taints = s.json(&["node", &n1])["spec"]["taints"].to_string();
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    assert!(taints.contains("NoExecute"), "{taints}");

    eventually(Duration::from_secs(120), || (on(&n0) == 3).then_some(()))
        .expect("the pods come back on the surviving node");
    let back = killed.elapsed();
    eprintln!("node NotReady after {not_ready:?}; pods back on {n0} after {back:?}");
    assert!(not_ready < Duration::from_secs(25), "{not_ready:?}");
    assert!(back < Duration::from_secs(75), "{back:?}");
    Ok(())
}

#[test]
fn rollout_pause_resume_and_restart() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.k(&[
        "create",
        "deployment",
        "pz",
        "--image=acc/hello:v1",
        "--replicas=2",
    ]);
    assert!(rollout_status(s, "pz").ok);
    let sets = |s: &Server| {
        s.json(&["rs", "-l", "app=pz"])["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(sets(s), 1);

    // Paused: a template change makes no new ReplicaSet.
    s.k(&["rollout", "pause", "deploy/pz"]);
    s.k(&["set", "env", "deploy/pz", "GREETING=paused"]);
    let paused = eventually(Duration::from_secs(30), || {
        let d = s.json(&["deploy", "pz"]);
        let c = d["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Progressing")?
            .clone();
        (c["reason"] == "DeploymentPaused"
            && d["status"]["observedGeneration"] == d["metadata"]["generation"])
            .then_some(d)
    })
    .expect("the deployment reports it is paused");
    assert_eq!(paused["spec"]["paused"], true);
    // observedGeneration covers the template change: the controller saw it.
    assert_eq!(sets(s), 1, "a paused deployment must not roll");

    // Resumed: the change rolls out.
    s.k(&["rollout", "resume", "deploy/pz"]);
    assert!(rollout_status(s, "pz").ok);
    assert_eq!(sets(s), 2);
    let pods = ready_pods(s, "pz");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| {
        p["spec"]["containers"][0]["env"]
            .to_string()
            .contains("paused")
    }));

    // Restart: new pods from the same template, through a third revision.
    let before = names(&pods);
    s.k(&["rollout", "restart", "deploy/pz"]);
    assert!(rollout_status(s, "pz").ok);
    let after = names(&ready_pods(s, "pz"));
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|n| !before.contains(n)),
        "{before:?} -> {after:?}"
    );
    let hist = s.k(&["rollout", "history", "deploy/pz"]);
    assert!(hist.contains("\n3 "), "{hist}");
    Ok(())
}
