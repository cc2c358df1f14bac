//! Container pods end to end with the real kubectl and the agent's own
//! containerd + runc: the same Deployment manifest as a container and as a
//! Wasm component behind one Service, logs, a mixed pod sharing localhost,
//! OOM kills, crash loops, clear reasons for bad input, and nothing left in
//! containerd, the cgroups or the pod network after many pods.

use crate::common;

use std::time::Duration;

use anyhow::Result;
use common::{Cluster, eventually, http_get};
use serde_json::Value;

fn deployment(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: mixed, flavour: {name}}}
  template:
    metadata:
      labels: {{app: mixed, flavour: {name}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {image}
        env:
        - name: GREETING
          value: hello-from-{name}
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
"#
    )
}

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: mixed
spec:
  selector: {app: mixed}
  ports:
  - port: 80
    targetPort: 8080
"#;

/// Wait (up to a minute) for `pod` to be Ready; its IP.
fn ready_ip(c: &Cluster, pod: &str) -> String {
    c.s.k(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{pod}"),
        "--timeout=60s",
    ]);
    c.s.json(&["pod", pod])["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Wait (up to two minutes each) for the Deployments' rollouts.
fn rolled_out(c: &Cluster, deployments: &[&str]) {
    for d in deployments {
        c.s.k(&[
            "rollout",
            "status",
            &format!("deployment/{d}"),
            "--timeout=120s",
        ]);
    }
}

/// `kubectl get events` about the object named `name`.
fn events_of(c: &Cluster, name: &str) -> String {
    c.s.k(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ])
}

fn pod_of(c: &Cluster, selector: &str) -> Value {
    let list = c.s.json(&["pods", "-l", selector]);
    list["items"][0].clone()
}

fn waiting_reason(c: &Cluster, pod: &str) -> Option<(String, String)> {
    let p = c.s.json(&["pod", pod]);
    let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    Some((
        w["reason"].as_str()?.to_string(),
        w["message"].as_str().unwrap_or("").to_string(),
    ))
}

/// Wait until the pod's container waits with one of `reasons`; its message.
fn wait_for_reason(c: &Cluster, pod: &str, reasons: &[&str]) -> String {
    eventually(Duration::from_secs(60), || {
        waiting_reason(c, pod).filter(|(r, _)| reasons.contains(&r.as_str()))
    })
    .map(|(_, m)| m)
    .unwrap_or_else(|| {
        panic!(
            "{pod} never waits with {reasons:?}: {}",
            c.s.json(&["pod", pod])["status"]
        )
    })
}

#[test]
fn one_manifest_runs_as_a_container_and_as_wasm_behind_one_service() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    let node = c.net.node(0).0;
    let n = c.s.json(&["node", &node]);
    assert_eq!(
        n["metadata"]["labels"]["runtime.skiff.dev/runc"], "true",
        "the node offers runc: {}",
        n["metadata"]["labels"]
    );
    c.s.apply(&deployment("box", "acc/busybox-httpd:v1"));
    c.s.apply(&deployment("wasm", "acc/hello:v1"));
    c.s.apply(SERVICE);
    rolled_out(&c, &["box", "wasm"]);
    let boxed = pod_of(&c, "flavour=box");
    let wasm = pod_of(&c, "flavour=wasm");
    let box_ip = boxed["status"]["podIP"].as_str().unwrap().to_string();
    let wasm_ip = wasm["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(boxed["status"]["phase"], "Running");
    assert!(
        boxed["status"]["containerStatuses"][0]["imageID"]
            .as_str()
            .unwrap()
            .contains("sha256:"),
        "{}",
        boxed["status"]
    );
    // Both answer on their own pod IPs.
    let (code, body) = http_get(&format!("http://{box_ip}:8080/"))?;
    assert_eq!((code, body.trim()), (200, "hello from busybox"));
    let (code, body) = http_get(&format!("http://{wasm_ip}:8080/"))?;
    assert_eq!(code, 200);
    assert!(body.contains("hello-from-wasm"), "{body}");
    // kubectl port-forward reaches either pod from loopback, for many
    // connections in turn and at once.
    for (pod, want) in [(&boxed, "hello from busybox"), (&wasm, "hello-from-wasm")] {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let pf = c.s.port_forward(&format!("pod/{name}"), 8080, &[])?;
        let url = format!("http://127.0.0.1:{}/", pf.local);
        for _ in 0..3 {
            let (code, body) =
                http_get(&url).map_err(|e| anyhow::anyhow!("{e}: {}", pf.errors()))?;
            assert_eq!(code, 200);
            assert!(body.contains(want), "{body}");
        }
        let parallel: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || http_get(&url).map(|(code, _)| code).ok())
            })
            .collect();
        for t in parallel {
            assert_eq!(t.join().unwrap(), Some(200), "{}", pf.errors());
        }
    }
    // A port nothing listens on: kubectl reports the reason and the
    // connection is closed, not left hanging.
    {
        let name = boxed["metadata"]["name"].as_str().unwrap();
        let pf = c.s.port_forward(&format!("pod/{name}"), 9, &[])?;
        assert!(http_get(&format!("http://127.0.0.1:{}/", pf.local)).is_err());
        let said = eventually(Duration::from_secs(10), || {
            let e = pf.errors();
            e.to_lowercase().contains("connection refused").then_some(e)
        });
        assert!(said.is_some(), "{}", pf.errors());
    }

    // One Service, both as endpoints, both answer through the ClusterIP.
    let ips = eventually(Duration::from_secs(30), || {
        let ep = c.s.json(&["endpoints", "mixed"]);
        let ips: Vec<String> = ep["subsets"][0]["addresses"]
            .as_array()?
            .iter()
            .filter_map(|a| a["ip"].as_str().map(str::to_string))
            .collect();
        (ips.len() == 2).then_some(ips)
    })
    .expect("the Service has both pods as endpoints");
    assert!(ips.contains(&box_ip) && ips.contains(&wasm_ip), "{ips:?}");
    let cluster_ip = c.s.json(&["svc", "mixed"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut saw_box, mut saw_wasm) = (false, false);
    for _ in 0..60 {
        let (code, body) = http_get(&format!("http://{cluster_ip}:80/"))?;
        assert_eq!(code, 200);
        saw_box |= body.contains("hello from busybox");
        saw_wasm |= body.contains("hello-from-wasm");
        if saw_box && saw_wasm {
            break;
        }
    }
    assert!(saw_box && saw_wasm, "box {saw_box} wasm {saw_wasm}");

    // Logs of a container, its hostname and /etc/hosts.
    c.s.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: acc/busybox:v1
    command: ["sh", "-c", "echo said-$GREETING; cat /etc/hostname; grep talker /etc/hosts; id -u; exec sleep 3600"]
    env:
    - {name: GREETING, value: hi}
    securityContext:
      runAsUser: 1234
"#,
    );
    let talker_ip = ready_ip(&c, "talker");
    let logs = eventually(Duration::from_secs(20), || {
        let l = c.s.k(&["logs", "talker"]);
        l.contains("1234").then_some(l)
    })
    .unwrap_or_else(|| c.s.k(&["logs", "talker"]));
    assert!(logs.contains("said-hi"), "{logs}");
    assert!(logs.lines().any(|l| l.trim() == "talker"), "{logs}");
    assert!(logs.contains(&talker_ip), "{logs}");
    assert!(logs.lines().any(|l| l.trim() == "1234"), "{logs}");

    // kubectl exec runs in the container (WebSocket, v5.channel.k8s.io).
    let host = c.s.k(&["exec", "talker", "--", "cat", "/etc/hostname"]);
    assert_eq!(host.trim(), "talker");
    let both = c.s.kubectl(&[
        "exec",
        "talker",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(both.code, Some(4), "{} / {}", both.stdout, both.stderr);
    assert_eq!(both.stdout.trim(), "out");
    assert!(both.stderr.contains("err"), "{}", both.stderr);

    // A mixed pod: a Wasm container and a container sidecar on one localhost.
    c.s.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: duo
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: shared, emptyDir: {}}
  containers:
  - name: web
    image: acc/hello:v1
    env:
    - {name: GREETING, value: hello-from-duo}
    volumeMounts:
    - {name: shared, mountPath: /shared}
  - name: side
    image: acc/busybox:v1
    command: ["sh", "-c", "echo written-by-side > /shared/note && mkdir -p /tmp/www && echo from-the-sidecar > /tmp/www/index.html && httpd -p 8081 -h /tmp/www && while true; do wget -q -O - http://127.0.0.1:8080/ && echo; sleep 1; done"]
    volumeMounts:
    - {name: shared, mountPath: /shared}
"#,
    );
    let duo_ip = ready_ip(&c, "duo");
    // The Wasm container calls its sidecar on localhost (outgoing wasi:http
    // leaves from the pod's namespace) ...
    let fetched = eventually(Duration::from_secs(30), || {
        let r = http_get(&format!(
            "http://{duo_ip}:8080/fetch?url=http://localhost:8081/"
        ))
        .ok()?;
        (r.0 == 200).then_some(r.1)
    });
    assert_eq!(fetched.as_deref().map(str::trim), Some("from-the-sidecar"));
    // An emptyDir volume is one directory for both: the container writes, the
    // Wasm component reads.
    let (code, note) = http_get(&format!("http://{duo_ip}:8080/file?path=/shared/note"))?;
    assert_eq!((code, note.trim()), (200, "written-by-side"));
    // ... and never from the host's: the API server's loopback port is not
    // reachable from there.
    let api_port = c.s.url().rsplit(':').next().unwrap().to_string();
    let (code, body) = http_get(&format!(
        "http://{duo_ip}:8080/fetch?url=http://127.0.0.1:{api_port}/"
    ))?;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("ConnectionRefused"), "{body}");
    let side = eventually(Duration::from_secs(30), || {
        let l = c.s.k(&["logs", "duo", "-c", "side"]);
        l.contains("hello-from-duo").then_some(l)
    });
    assert!(side.is_some(), "{}", c.s.k(&["logs", "duo", "-c", "side"]));
    let wasm_exec = c.s.kubectl(&["exec", "duo", "-c", "web", "--", "ls"]);
    assert!(
        !wasm_exec.ok && wasm_exec.stderr.contains("Wasm component has no processes"),
        "{}",
        wasm_exec.stderr
    );
    let side_exec = c.s.k(&[
        "exec",
        "duo",
        "-c",
        "side",
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:8080/",
    ]);
    assert!(side_exec.contains("hello-from-duo"), "{side_exec}");

    // Deleting a container pod stops it and frees its address.
    c.s.k(&["delete", "pod", "talker", "--timeout=60s"]);
    let ns = c.net.netns_of(0, &talker_ip);
    assert!(
        eventually(Duration::from_secs(20), || (!c
            .net
            .namespaces(0)
            .contains(&ns))
        .then_some(()))
        .is_some(),
        "the pod's namespace is gone"
    );
    Ok(())
}

fn bad_pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
{extra}"#
    )
}

#[test]
fn oom_kills_crash_loops_and_bad_input_get_clear_reasons() -> Result<()> {
    let c = common::one_node_with_containers(&["--restart-backoff-ms", "300"])?;
    // A container past its memory limit is OOM-killed and restarted.
    c.s.apply(&bad_pod(
        "hog",
        "acc/busybox:v1",
        r#"    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    resources:
      limits: {memory: 24Mi}
"#,
    ));
    let oom = eventually(Duration::from_secs(90), || {
        let p = c.s.json(&["pod", "hog"]);
        let s = p["status"]["containerStatuses"][0].clone();
        (s["restartCount"].as_u64()? >= 1 && s["lastState"]["terminated"]["reason"] == "OOMKilled")
            .then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "hog is never OOMKilled: {}",
            c.s.json(&["pod", "hog"])["status"]
        )
    });
    assert_eq!(oom["lastState"]["terminated"]["exitCode"], 137, "{oom}");

    // A crashing container goes into CrashLoopBackOff with its exit code.
    c.s.apply(&bad_pod(
        "crash",
        "acc/busybox:v1",
        "    command: [\"sh\", \"-c\", \"echo bye; exit 3\"]\n",
    ));
    let msg = wait_for_reason(&c, "crash", &["CrashLoopBackOff"]);
    assert!(msg.contains("back-off"), "{msg}");
    let s = c.s.json(&["pod", "crash"])["status"]["containerStatuses"][0].clone();
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 3, "{s}");
    assert!(s["restartCount"].as_u64().unwrap() >= 1, "{s}");
    // The current run may just have restarted (300 ms back-off here): its log
    // or the previous run's says goodbye.
    let said = eventually(Duration::from_secs(20), || {
        let now = c.s.kubectl(&["logs", "crash"]).stdout;
        let before = c.s.kubectl(&["logs", "crash", "--previous"]).stdout;
        (now.contains("bye") || before.contains("bye")).then_some(())
    });
    assert!(said.is_some(), "{}", c.s.kubectl(&["logs", "crash"]).stdout);

    // An image that is neither Wasm nor a container image.
    let tmp = tempfile::tempdir()?;
    let tar = common::oci_layout(
        tmp.path(),
        b"not a filesystem",
        "application/octet-stream",
        "acc/odd:v1",
    );
    c.s.import_tar(&tar)?;
    c.s.apply(&bad_pod("odd", "acc/odd:v1", ""));
    let msg = wait_for_reason(&c, "odd", &["CreateContainerError"]);
    assert!(
        msg.contains("neither a Wasm component image nor a container image"),
        "{msg}"
    );

    // A command that does not exist.
    c.s.apply(&bad_pod(
        "nocmd",
        "acc/busybox:v1",
        "    command: [\"/no/such/binary\"]\n",
    ));
    let msg = wait_for_reason(&c, "nocmd", &["RunContainerError"]);
    assert!(
        msg.contains("no such file") || msg.contains("not found"),
        "{msg}"
    );

    // A privileged container on a node that does not allow them (in a
    // namespace whose Pod Security level does).
    c.s.k(&[
        "label",
        "namespace",
        "default",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    c.s.apply(&bad_pod(
        "priv",
        "acc/busybox:v1",
        "    command: [\"sleep\", \"60\"]\n    securityContext: {privileged: true}\n",
    ));
    let msg = wait_for_reason(&c, "priv", &["CreateContainerConfigError"]);
    assert!(msg.contains("privileged"), "{msg}");
    let events = events_of(&c, "priv");
    assert!(events.contains("privileged"), "{events}");

    // The agent keeps running pods.
    c.s.apply(&bad_pod(
        "fine",
        "acc/busybox:v1",
        "    command: [\"sleep\", \"3600\"]\n",
    ));
    c.s.k(&["wait", "--for=condition=Ready", "pod/fine", "--timeout=60s"]);
    Ok(())
}

/// `ctr` against the agent's own containerd, in the node's namespace.
fn ctr(c: &Cluster, args: &[&str]) -> String {
    let socket = c.s.dir.join("agent/containerd/containerd.sock");
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["-n", &format!("skiff-{}", c.net.node(0).0)])
        .args(args)
        .output()
        .expect("run ctr");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The pod cgroups of node 0 in every hierarchy.
fn pod_cgroups(c: &Cluster) -> Vec<String> {
    let node = c.net.node(0).0;
    common::cgroup_roots()
        .into_iter()
        .flat_map(|r| {
            std::fs::read_dir(r.join(format!("skiff/{node}")))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path().display().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_hundred_container_pods_leave_nothing_behind() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    // The warm pool (8 namespaces) fills first, so namespaces can be compared
    // with it.
    let baseline_ns = eventually(Duration::from_secs(60), || {
        let n = c.net.namespaces(0).len();
        (n >= 8).then_some(n)
    })
    .expect("the warm pool fills");
    for round in 0..5 {
        let mut yaml = String::new();
        for i in 0..20 {
            yaml.push_str(&format!(
                "---\n{}",
                bad_pod(
                    &format!("p{round}-{i}"),
                    "acc/busybox:v1",
                    "    command: [\"sleep\", \"3600\"]\n    resources:\n      limits: {memory: 32Mi, cpu: 50m}\n",
                )
            ));
        }
        c.s.apply(&yaml);
        c.s.k(&[
            "wait",
            "--for=condition=Ready",
            "pods",
            "--all",
            "--timeout=180s",
        ]);
        let running = ctr(&c, &["containers", "ls", "-q"]);
        assert_eq!(running.lines().count(), 20, "{running}");
        c.s.k(&["delete", "pods", "--all", "--timeout=180s"]);
    }
    let gone = eventually(Duration::from_secs(30), || {
        let left = ctr(&c, &["containers", "ls", "-q"]);
        let active: Vec<String> = ctr(&c, &["snapshots", "ls"])
            .lines()
            .filter(|l| l.contains("Active"))
            .map(str::to_string)
            .collect();
        let cgroups = pod_cgroups(&c);
        (left.trim().is_empty() && active.is_empty() && cgroups.is_empty()).then_some(())
    });
    assert!(
        gone.is_some(),
        "containers: {:?} snapshots: {:?} cgroups: {:?}",
        ctr(&c, &["containers", "ls", "-q"]),
        ctr(&c, &["snapshots", "ls"]),
        pod_cgroups(&c)
    );
    assert!(ctr(&c, &["tasks", "ls", "-q"]).trim().is_empty());
    let ns_now = eventually(Duration::from_secs(20), || {
        let n = c.net.namespaces(0).len();
        (n <= baseline_ns).then_some(n)
    });
    assert!(
        ns_now.is_some(),
        "namespaces {} vs {baseline_ns}",
        c.net.namespaces(0).len()
    );
    Ok(())
}

#[test]
fn a_node_without_containerd_is_not_given_container_pods() -> Result<()> {
    let c = common::one_node(&[])?;
    c.s.import_tar(&common::busybox_image(&c.s, "acc/busybox:v1", &[])?)?;
    let node = c.s.json(&["node", &c.net.node(0).0]);
    assert!(
        node["metadata"]["labels"]
            .get("runtime.skiff.dev/runc")
            .is_none(),
        "{}",
        node["metadata"]["labels"]
    );
    c.s.apply(&bad_pod(
        "box",
        "acc/busybox:v1",
        "    command: [\"sleep\", \"60\"]\n",
    ));
    let why =
        common::unschedulable_message(&c.s, "box").expect("the container pod is unschedulable");
    assert!(why.contains("runtime handler \"runc\""), "{why}");
    // Wasm pods still land there.
    c.s.apply(&bad_pod("wasm", "acc/hello:v1", ""));
    c.s.k(&["wait", "--for=condition=Ready", "pod/wasm", "--timeout=60s"]);
    Ok(())
}

#[test]
fn exec_probes_and_pre_stop_hooks_run_in_the_container() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    // A Wasm pod logs every request it gets: the hooks below call it.
    c.s.apply(&bad_pod("watcher", "acc/hello:v1", ""));
    let w = ready_ip(&c, "watcher");
    c.s.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: leaver
spec:
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: prep
    image: acc/busybox:v1
    command: ["sh", "-c", "echo prepared"]
  - name: helper
    image: acc/busybox:v1
    restartPolicy: Always
    command: ["sleep", "3600"]
  containers:
  - name: main
    image: acc/busybox:v1
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {{command: ["test", "-f", "/tmp/ready"]}}
      periodSeconds: 1
    lifecycle:
      preStop:
        exec: {{command: ["wget", "-q", "-O", "-", "http://{w}:8080/prestop-exec"]}}
  - name: side
    image: acc/busybox:v1
    command: ["sleep", "3600"]
    lifecycle:
      preStop:
        httpGet: {{host: "{w}", port: 8080, path: /prestop-http}}
"#
    ));
    c.s.k(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod/leaver",
        "--timeout=60s",
    ]);
    // The exec readiness probe fails until the file exists, then passes.
    let events = eventually(Duration::from_secs(30), || {
        let e = events_of(&c, "leaver");
        e.contains("Readiness probe failed").then_some(e)
    });
    assert!(events.is_some(), "{}", events_of(&c, "leaver"));
    let p = c.s.json(&["pod", "leaver"]);
    let statuses = p["status"]["containerStatuses"].as_array().cloned();
    let main_ready = statuses
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["name"] == "main")
        .map(|s| s["ready"].clone())
        .next();
    assert_eq!(main_ready, Some(Value::Bool(false)), "{}", p["status"]);
    c.s.k(&["exec", "leaver", "-c", "main", "--", "touch", "/tmp/ready"]);
    c.s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/leaver",
        "--timeout=30s",
    ]);
    // The init container ran to completion, the sidecar (restartPolicy
    // Always) runs beside the app.
    let p = c.s.json(&["pod", "leaver"]);
    let init = &p["status"]["initContainerStatuses"];
    let state = |name: &str| {
        init.as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].clone())
            .unwrap_or_default()
    };
    assert_eq!(state("prep")["terminated"]["reason"], "Completed", "{init}");
    assert!(state("helper")["running"].is_object(), "{init}");
    assert!(
        c.s.k(&["logs", "leaver", "-c", "prep"])
            .contains("prepared")
    );
    // Deleting runs both preStop hooks before the containers are stopped.
    c.s.k(&["delete", "pod", "leaver", "--timeout=60s"]);
    let logs = c.s.k(&["logs", "watcher"]);
    assert!(logs.contains("request /prestop-exec"), "{logs}");
    assert!(logs.contains("request /prestop-http"), "{logs}");
    Ok(())
}

#[test]
fn the_container_and_mixed_examples_run() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    c.s.import_tar(&common::busybox_image(&c.s, "example/busybox:v1", &[])?)?;
    let httpd = [
        "--cmd", "httpd", "--cmd", "-f", "--cmd", "-p", "--cmd", "8080", "--cmd", "-h", "--cmd",
        "/var/www",
    ];
    c.s.import_tar(&common::busybox_image(
        &c.s,
        "example/busybox-httpd:v1",
        &httpd,
    )?)?;
    c.s.import_wasm(
        &common::example_wasm("hello-wasm", "hello_wasm.wasm"),
        "example/hello-wasm:v1",
    )?;
    let example = |name: &str| -> Result<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/manifests")
            .join(name);
        Ok(std::fs::read_to_string(path)?)
    };

    // The container Deployment, reached through kubectl port-forward, once
    // over WebSocket (kubectl's default) and once over plain SPDY.
    c.s.apply(&example("container-deployment.yaml")?);
    rolled_out(&c, &["web-container"]);
    for env in [&[][..], &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..]] {
        let pf = c.s.port_forward("deploy/web-container", 8080, env)?;
        let (code, body) = http_get(&format!("http://127.0.0.1:{}/", pf.local))
            .map_err(|e| anyhow::anyhow!("{e} ({env:?}): {}", pf.errors()))?;
        assert_eq!((code, body.trim()), (200, "hello from busybox"), "{env:?}");
    }

    // The mixed app: the Wasm front end calls the container back end through
    // its Service (the back end's fixed ClusterIP moved into this test's range).
    let backend_ip = format!("10.96.{}.200", c.net.octet);
    c.s.apply(&example("mixed-app.yaml")?.replace("10.96.200.10", &backend_ip));
    rolled_out(&c, &["backend", "frontend"]);
    let frontend = c.s.json(&["svc", "frontend"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = eventually(Duration::from_secs(30), || {
        let (code, body) =
            http_get(&format!("http://{frontend}/fetch?url=http://{backend_ip}/")).ok()?;
        (code == 200).then_some(body)
    });
    assert_eq!(
        answer.as_deref().map(str::trim),
        Some("hello from the container back end")
    );
    Ok(())
}
