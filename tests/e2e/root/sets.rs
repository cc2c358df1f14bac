//! DaemonSets and StatefulSets end to end with the real kubectl: a DaemonSet
//! puts one pod on each of two agents (none on a node whose taint it does not
//! tolerate), rolls and rolls back; a StatefulSet creates web-0, web-1, web-2
//! in order, each after the one before is Ready, recreates a deleted pod under
//! its name, rolls, and scales down from the highest ordinal.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use common::{Server, TestNet, eventually};
use serde_json::Value;

/// A standalone agent process; killed on drop.
fn pods(s: &Server, sel: &str) -> Vec<Value> {
    let list = s.kubectl(&["get", "pods", "-l", sel, "-o", "json"]);
    if !list.ok {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&list.stdout).unwrap_or(Value::Null);
    v["items"].as_array().cloned().unwrap_or_default()
}

fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn terminating(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_some()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn rollout(s: &Server, what: &str) -> String {
    let r = s.kubectl(&["rollout", "status", what, "--timeout=180s"]);
    assert!(r.ok, "rollout status {what}:\n{}\n{}", r.stdout, r.stderr);
    r.stdout
}

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: web
        image: acc/hello:v1
        ports:
        - containerPort: 8080
";

#[test]
fn daemonset_runs_one_pod_per_node_and_rolls() -> Result<()> {
    let net = TestNet::claim();
    let root = tempfile::tempdir()?;
    let mut s = Server::with_node(&root.path().join("s"), &net, &[]);
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let (n0, _) = net.node(0);
    let n1 = net.node(1).0;
    let agent = common::Agent::join(&s, &net, 1, &root.path().join("agent"))?;
    agent.wait_ready(&s, &n1);
    assert!(common::node_ready(&s, &n0));
    // A third node, without an agent, tainted: no daemon pod goes there.
    s.apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: tainted\nspec:\n  taints:\n  - key: dedicated\n    value: infra\n    effect: NoSchedule\n");
    s.import_wasm(
        &common::example_wasm("hello-wasm", "hello_wasm.wasm"),
        "acc/hello:v1",
    )?;

    s.apply(DAEMONSET);
    let out = rollout(&s, "ds/agent");
    assert!(out.contains("successfully rolled out"), "{out}");
    let ps = pods(&s, "app=agent");
    let on: BTreeMap<String, String> = ps
        .iter()
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                name(p),
            )
        })
        .collect();
    assert_eq!(ps.len(), 2, "{on:?}");
    assert!(on.contains_key(&n0) && on.contains_key(&n1), "{on:?}");
    for p in &ps {
        assert!(is_ready(p), "{p}");
        assert!(
            p.pointer("/metadata/labels/controller-revision-hash")
                .is_some(),
            "{p}"
        );
        let tols = p["spec"]["tolerations"].to_string();
        assert!(tols.contains("node.kubernetes.io/unschedulable"), "{tols}");
        let aff = p
            .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0")
            .cloned();
        assert_eq!(aff, Some(p["spec"]["nodeName"].clone()), "{p}");
    }
    let ds = s.json(&["ds", "agent"]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2, "{ds}");
    assert_eq!(ds["status"]["numberReady"], 2, "{ds}");
    assert_eq!(ds["status"]["numberMisscheduled"], 0, "{ds}");
    let revs = s.json(&["controllerrevisions", "-l", "app=agent"]);
    assert_eq!(revs["items"].as_array().map(Vec::len), Some(1), "{revs}");
    assert_eq!(revs["items"][0]["revision"], 1);

    // A deleted daemon pod is replaced on its node.
    let victim = on[&n1].clone();
    s.k(&["delete", "pod", &victim, "--wait=false"]);
    eventually(Duration::from_secs(90), || {
        let now = pods(&s, "app=agent");
        now.iter()
            .any(|p| {
                p["spec"]["nodeName"] == n1.as_str()
                    && name(p) != victim
                    && is_ready(p)
                    && !terminating(p)
            })
            .then_some(())
    })
    .expect("the deleted daemon pod is replaced");

    // A rolling update, then history and undo through ControllerRevisions.
    s.k(&["set", "env", "ds/agent", "GREETING=v2"]);
    let out = rollout(&s, "ds/agent");
    assert!(out.contains("successfully rolled out"), "{out}");
    let ps: Vec<Value> = pods(&s, "app=agent")
        .into_iter()
        .filter(|p| !terminating(p))
        .collect();
    assert_eq!(ps.len(), 2);
    for p in &ps {
        assert!(
            p["spec"]["containers"][0]["env"].to_string().contains("v2"),
            "{p}"
        );
    }
    let hist = s.k(&["rollout", "history", "ds/agent"]);
    assert!(hist.contains('1') && hist.contains('2'), "{hist}");
    // Undo with a surge: the new pod starts before the old one goes, so both
    // nodes keep a Ready pod throughout.
    s.k(&[
        "patch",
        "ds/agent",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#,
    ]);
    rollout(&s, "ds/agent");
    let stop = AtomicBool::new(false);
    let min_ready = std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let mut min = usize::MAX;
            loop {
                let last = stop.load(Ordering::Relaxed);
                let nodes: std::collections::BTreeSet<String> = pods(&s, "app=agent")
                    .iter()
                    .filter(|p| is_ready(p) && !terminating(p))
                    .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
                    .collect();
                min = min.min(nodes.len());
                if last {
                    return min;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        s.k(&["rollout", "undo", "ds/agent"]);
        rollout(&s, "ds/agent");
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap()
    });
    assert_eq!(min_ready, 2, "a node was left without a Ready daemon pod");
    eventually(Duration::from_secs(90), || {
        let ps: Vec<Value> = pods(&s, "app=agent")
            .into_iter()
            .filter(|p| !terminating(p))
            .collect();
        (ps.len() == 2
            && ps
                .iter()
                .all(|p| is_ready(p) && p["spec"]["containers"][0]["env"].is_null()))
        .then_some(())
    })
    .expect("undo brings the first template back");
    let revs = s.json(&["controllerrevisions", "-l", "app=agent"]);
    let mut numbers: Vec<i64> = revs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["revision"].as_i64())
        .collect();
    numbers.sort();
    assert_eq!(numbers, vec![2, 3], "the first template is revision 3 now");

    // Untainting the third node makes it eligible.
    s.k(&["taint", "node", "tainted", "dedicated-"]);
    eventually(Duration::from_secs(30), || {
        pods(&s, "app=agent")
            .iter()
            .any(|p| p["spec"]["nodeName"] == "tainted")
            .then_some(())
    })
    .expect("a daemon pod goes to the untainted node");
    let ds = s.json(&["ds", "agent"]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], 3, "{ds}");

    // A deleted node loses its daemon pod at once (well before the resync):
    // no agent is left to stop it gracefully.
    s.k(&["delete", "node", "tainted"]);
    eventually(Duration::from_secs(10), || {
        let ds = s.json(&["ds", "agent"]);
        (ds["status"]["desiredNumberScheduled"] == 2
            && !pods(&s, "app=agent")
                .iter()
                .any(|p| p["spec"]["nodeName"] == "tainted"))
        .then_some(())
    })
    .expect("the pod of a deleted node goes");
    Ok(())
}

const STATEFULSET: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: acc/hello:v1
        ports:
        - containerPort: 8080
";

/// Check, while `work` runs, that every sample of the set's pods holds `ok`.
fn sampled(
    s: &Server,
    ok: impl Fn(&BTreeMap<String, Value>) -> Result<(), String> + Sync,
    work: impl FnOnce(),
) -> Vec<String> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let mut bad = Vec::new();
            // At least one sample, and one after the work is done.
            loop {
                let last = stop.load(Ordering::Relaxed);
                let now: BTreeMap<String, Value> = pods(s, "app=web")
                    .into_iter()
                    .map(|p| (name(&p), p))
                    .collect();
                if let Err(e) = ok(&now) {
                    bad.push(e);
                }
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            bad
        });
        work();
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap()
    })
}

#[test]
fn statefulset_is_ordered_and_stable() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    // web-i exists only once web-(i-1) is Ready.
    let bad = sampled(
        s,
        |now| {
            for i in 1..3 {
                if now.contains_key(&format!("web-{i}")) {
                    match now.get(&format!("web-{}", i - 1)) {
                        Some(p) if is_ready(p) => {}
                        _ => return Err(format!("web-{i} before web-{} was Ready", i - 1)),
                    }
                }
            }
            Ok(())
        },
        || {
            s.apply(STATEFULSET);
            rollout(s, "sts/web");
        },
    );
    assert!(bad.is_empty(), "{bad:?}");
    let ps: BTreeMap<String, Value> = pods(s, "app=web")
        .into_iter()
        .map(|p| (name(&p), p))
        .collect();
    assert_eq!(
        ps.keys().cloned().collect::<Vec<_>>(),
        vec!["web-0", "web-1", "web-2"]
    );
    let created = |n: &str| {
        ps[n]["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(created("web-0") <= created("web-1") && created("web-1") <= created("web-2"));
    // Each pod was created no earlier than its predecessor became Ready.
    let ready_at = |n: &str| {
        ps[n]["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap()
            .to_string()
    };
    assert!(ready_at("web-0") <= created("web-1"), "{ps:?}");
    assert!(ready_at("web-1") <= created("web-2"), "{ps:?}");
    for (i, (n, p)) in ps.iter().enumerate() {
        assert!(is_ready(p), "{p}");
        assert_eq!(p["spec"]["hostname"], n.as_str());
        assert_eq!(p["spec"]["subdomain"], "web");
        assert_eq!(
            p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            n.as_str()
        );
        assert_eq!(
            p["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            i.to_string()
        );
    }
    let sts = s.json(&["sts", "web"]);
    assert_eq!(sts["status"]["readyReplicas"], 3, "{sts}");
    let rev1 = sts["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sts["status"]["currentRevision"], rev1.as_str());
    assert_eq!(
        ps["web-0"]["metadata"]["labels"]["controller-revision-hash"],
        rev1.as_str()
    );

    // A deleted pod comes back under the same name.
    let uid = ps["web-1"]["metadata"]["uid"].clone();
    s.k(&["delete", "pod", "web-1", "--wait=false"]);
    eventually(Duration::from_secs(90), || {
        let p = s.kubectl(&["get", "pod", "web-1", "-o", "json"]);
        let p: Value = serde_json::from_str(&p.stdout).ok()?;
        (p["metadata"]["uid"] != uid && is_ready(&p) && !terminating(&p)).then_some(())
    })
    .expect("web-1 is recreated");

    // An identity label edited away comes back.
    s.k(&["label", "pod", "web-2", "apps.kubernetes.io/pod-index-"]);
    eventually(Duration::from_secs(30), || {
        let p = s.json(&["pod", "web-2"]);
        (p["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "2").then_some(())
    })
    .expect("the pod-index label is restored");

    // A rolling update: every pod ends at the new revision.
    s.k(&["set", "env", "sts/web", "GREETING=v2"]);
    let out = rollout(s, "sts/web");
    assert!(out.contains("roll"), "{out}");
    let sts = s.json(&["sts", "web"]);
    let rev2 = sts["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rev1, rev2);
    eventually(Duration::from_secs(60), || {
        let sts = s.json(&["sts", "web"]);
        (sts["status"]["currentRevision"] == rev2.as_str() && sts["status"]["updatedReplicas"] == 3)
            .then_some(())
    })
    .expect("the update revision becomes current");
    for p in pods(s, "app=web") {
        assert_eq!(
            p["metadata"]["labels"]["controller-revision-hash"],
            rev2.as_str(),
            "{p}"
        );
    }

    // Scale down: web-2 goes before web-1 is touched.
    let bad = sampled(
        s,
        |now| {
            let gone_or_going = |n: &str| now.get(n).is_none_or(terminating);
            if gone_or_going("web-1") && now.contains_key("web-2") {
                return Err("web-1 went before web-2".into());
            }
            Ok(())
        },
        || {
            s.k(&["scale", "sts/web", "--replicas=1"]);
            eventually(Duration::from_secs(120), || {
                (pods(s, "app=web").len() == 1).then_some(())
            })
            .expect("scaled down to 1");
        },
    );
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(name(&pods(s, "app=web")[0]), "web-0");
    rollout(s, "sts/web");

    // History and undo read and apply the ControllerRevisions.
    let hist = s.k(&["rollout", "history", "sts/web"]);
    assert!(hist.contains('1') && hist.contains('2'), "{hist}");
    s.k(&["rollout", "undo", "sts/web"]);
    rollout(s, "sts/web");
    eventually(Duration::from_secs(60), || {
        let ps = pods(s, "app=web");
        (ps.len() == 1
            && is_ready(&ps[0])
            && !terminating(&ps[0])
            && ps[0]["spec"]["containers"][0]["env"].is_null())
        .then_some(())
    })
    .expect("undo brings the first template back");
    let sts = s.json(&["sts", "web"]);
    assert_eq!(sts["status"]["updateRevision"], rev1.as_str(), "{sts}");

    // Deleting the set takes its pods and revisions with it (ownerReferences).
    s.k(&["delete", "sts", "web", "--wait=false"]);
    eventually(Duration::from_secs(90), || {
        let revs = s.json(&["controllerrevisions", "-l", "app=web"]);
        (pods(s, "app=web").is_empty() && revs["items"].as_array().is_some_and(Vec::is_empty))
            .then_some(())
    })
    .expect("pods and revisions are collected");
    Ok(())
}
