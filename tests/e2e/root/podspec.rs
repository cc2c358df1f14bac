//! Pod spec coverage for Wasm pods, end to end with the real kubectl:
//! ConfigMaps and Secrets as env and as files, the downward API, emptyDir
//! shared with init containers, a missing ConfigMap that blocks a container
//! until it is created, init containers that fail, probes that take a pod out
//! of Ready and restart it, and the QoS class.

use crate::common;

use common::http_get as get;

use std::time::Duration;

use anyhow::Result;
use common::{Server, eventually};
use serde_json::Value;

fn pod_ip(s: &Server, name: &str) -> String {
    s.json(&["pod", name])["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `GET http://<pod>:8080<path>`, expecting 200; the body.
fn fetch(ip: &str, path: &str) -> String {
    let (code, body) = get(&format!("http://{ip}:8080{path}")).unwrap();
    assert_eq!(code, 200, "{path}: {body}");
    body
}

fn condition(pod: &Value, ty: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Messages of the events about a pod with this reason.
fn events(s: &Server, pod: &str, reason: &str) -> Vec<String> {
    let list = s.json(&[
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason={reason}"),
    ]);
    list["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn configmaps_secrets_downward_api_and_init_containers_reach_a_wasm_pod() -> Result<()> {
    let mut c = common::one_node(&[])?;
    let s = &c.s;
    s.apply(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: ps-config
data:
  color: blue
  greeting: hi there
  app.properties: "mode=fast\n"
---
apiVersion: v1
kind: Secret
metadata:
  name: ps-secret
type: Opaque
data:
  password: aHVudGVyMg==
---
apiVersion: v1
kind: Pod
metadata:
  name: ps-web
  labels:
    app: ps-web
spec:
  runtimeClassName: wasm
  volumes:
  - name: config
    configMap:
      name: ps-config
      items:
      - key: app.properties
        path: conf/app.properties
  - name: secret
    secret:
      secretName: ps-secret
  - name: info
    downwardAPI:
      items:
      - path: labels
        fieldRef:
          fieldPath: metadata.labels
      - path: mem-mi
        resourceFieldRef:
          containerName: web
          resource: limits.memory
          divisor: 1Mi
  - name: work
    emptyDir: {}
  initContainers:
  - name: prepare
    image: acc/job:v1
    args: ["--write", "/work/from-init", "init ran first"]
    volumeMounts:
    - name: work
      mountPath: /work
  - name: check
    image: acc/job:v1
    args: ["--expect-file", "/work/from-init"]
    volumeMounts:
    - name: work
      mountPath: /work
  containers:
  - name: web
    image: acc/hello:v1
    ports:
    - containerPort: 8080
    resources:
      limits:
        memory: 64Mi
        cpu: 500m
    envFrom:
    - configMapRef:
        name: ps-config
      prefix: CM_
    env:
    - name: COLOR
      valueFrom:
        configMapKeyRef:
          name: ps-config
          key: color
    - name: PASSWORD
      valueFrom:
        secretKeyRef:
          name: ps-secret
          key: password
    - name: MAYBE
      valueFrom:
        configMapKeyRef:
          name: ps-absent
          key: x
          optional: true
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    - name: NODE
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    - name: APP
      valueFrom:
        fieldRef:
          fieldPath: metadata.labels['app']
    - name: CPU_MILLIS
      valueFrom:
        resourceFieldRef:
          resource: limits.cpu
          divisor: 1m
    - name: SENTENCE
      value: "$(POD_NAME) is $(COLOR), not $(UNDEFINED), costs $$(COLOR)"
    volumeMounts:
    - name: config
      mountPath: /etc/config
    - name: secret
      mountPath: /etc/secret
    - name: info
      mountPath: /etc/podinfo
    - name: work
      mountPath: /work
"#,
    );
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/ps-web",
        "--timeout=90s",
    ]);
    let pod = s.json(&["pod", "ps-web"]);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(pod["status"]["qosClass"], "Burstable");
    assert_eq!(condition(&pod, "Initialized"), "True");
    let inits = pod["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for i in inits {
        assert_eq!(i["state"]["terminated"]["exitCode"], 0, "{i}");
        assert_eq!(i["ready"], true);
    }

    let env = |name: &str| fetch(&ip, &format!("/env?name={name}"));
    assert_eq!(env("COLOR"), "blue");
    assert_eq!(env("CM_color"), "blue");
    assert_eq!(env("CM_greeting"), "hi there");
    assert_eq!(env("PASSWORD"), "hunter2");
    assert_eq!(env("POD_NAME"), "ps-web");
    assert_eq!(env("POD_IP"), ip);
    assert_eq!(env("NODE"), pod["spec"]["nodeName"].as_str().unwrap());
    assert_eq!(env("APP"), "ps-web");
    assert_eq!(env("CPU_MILLIS"), "500");
    assert_eq!(
        env("SENTENCE"),
        "ps-web is blue, not $(UNDEFINED), costs $(COLOR)"
    );
    let (code, _) = get(&format!("http://{ip}:8080/env?name=MAYBE"))?;
    assert_eq!(
        code, 404,
        "an optional missing key leaves the variable unset"
    );

    assert_eq!(
        fetch(&ip, "/file?path=/etc/config/conf/app.properties"),
        "mode=fast\n"
    );
    // The kubelet's layout: the key as a link into `..data`, which points at
    // the timestamped directory of the current payload.
    let listed = fetch(&ip, "/ls?path=/etc/config");
    let names: Vec<&str> = listed.lines().filter(|n| !n.starts_with("..")).collect();
    assert_eq!(names, vec!["conf"], "{listed}");
    assert!(listed.lines().any(|n| n == "..data"), "{listed}");
    assert_eq!(fetch(&ip, "/file?path=/etc/secret/password"), "hunter2");
    // The Secret volume is a tmpfs: its files never reach the node's disk.
    let uid = s.k(&["get", "pod", "ps-web", "-o", "jsonpath={.metadata.uid}"]);
    let vol = s
        .dir
        .join("agent/pods")
        .join(uid.trim())
        .join("volumes/secret");
    let is_tmpfs = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == vol.to_str() && l.contains(" - tmpfs "))
    };
    assert!(is_tmpfs(), "{} is not a tmpfs mount", vol.display());
    assert_eq!(
        fetch(&ip, "/file?path=/etc/podinfo/labels"),
        "app=\"ps-web\""
    );
    assert_eq!(fetch(&ip, "/file?path=/etc/podinfo/mem-mi"), "64");
    assert_eq!(fetch(&ip, "/file?path=/work/from-init"), "init ran first");
    // ConfigMap volumes are read-only; emptyDir is writable and shared.
    let (code, _) = get(&format!("http://{ip}:8080/write?path=/etc/config/x&data=1"))?;
    assert_eq!(code, 500);
    fetch(&ip, "/write?path=/work/note&data=kept");
    assert_eq!(fetch(&ip, "/file?path=/work/note"), "kept");

    // An agent restart adopts the pod without running its init containers
    // again; the emptyDir keeps its files.
    let init_started = inits[0]["state"]["terminated"]["startedAt"].clone();
    c.s.kill();
    c.s.start()?;
    c.s.wait_ready(Duration::from_secs(30))?;
    let s = &c.s;
    let back = eventually(Duration::from_secs(30), || {
        get(&format!("http://{ip}:8080/file?path=/work/note"))
            .ok()
            .filter(|(code, _)| *code == 200)
    });
    assert_eq!(back.map(|(_, b)| b).as_deref(), Some("kept"));
    let again = s.json(&["pod", "ps-web"]);
    let first_init = &again["status"]["initContainerStatuses"][0];
    assert_eq!(first_init["state"]["terminated"]["startedAt"], init_started);
    assert_eq!(first_init["restartCount"], 0);
    assert_eq!(condition(&again, "Initialized"), "True");

    // An edited ConfigMap reaches the mounted file while the pod runs.
    s.k(&[
        "patch",
        "configmap",
        "ps-config",
        "--type=merge",
        "-p",
        r#"{"data":{"app.properties":"mode=slow\n"}}"#,
    ]);
    let updated = eventually(Duration::from_secs(30), || {
        let (_, body) = get(&format!(
            "http://{ip}:8080/file?path=/etc/config/conf/app.properties"
        ))
        .ok()?;
        (body == "mode=slow\n").then_some(())
    });
    assert!(updated.is_some(), "the ConfigMap volume follows the edit");

    // So do label edits, to the downward API file.
    s.k(&["label", "pod", "ps-web", "tier=gold"]);
    let relabelled = eventually(Duration::from_secs(30), || {
        let (_, body) = get(&format!("http://{ip}:8080/file?path=/etc/podinfo/labels")).ok()?;
        (body == "app=\"ps-web\"\ntier=\"gold\"").then_some(())
    });
    assert!(
        relabelled.is_some(),
        "the downward API volume follows labels"
    );

    // Deleting the pod removes its volumes from the node.
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let dir = s.dir.join("agent/pods").join(&uid);
    assert!(dir.join("volumes/work/note").exists(), "{}", dir.display());
    s.k(&["delete", "pod", "ps-web", "--wait=true", "--timeout=60s"]);
    assert!(
        common::eventually(Duration::from_secs(10), || (!is_tmpfs() && !vol.exists())
            .then_some(()))
        .is_some(),
        "the tmpfs of {} is gone with the pod",
        vol.display()
    );
    assert!(
        eventually(Duration::from_secs(10), || (!dir.exists()).then_some(())).is_some(),
        "{} was left behind",
        dir.display()
    );
    Ok(())
}

#[test]
fn missing_configmap_blocks_the_container_until_it_exists() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ps-late
spec:
  containers:
  - name: web
    image: acc/hello:v1
    env:
    - name: LATE
      valueFrom:
        configMapKeyRef:
          name: ps-late-config
          key: value
    resources:
      requests: {cpu: 100m, memory: 16Mi}
      limits: {cpu: 100m, memory: 16Mi}
"#,
    );
    let waiting = eventually(Duration::from_secs(60), || {
        let pod = s.json(&["pod", "ps-late"]);
        let w = pod["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    })
    .expect("CreateContainerConfigError");
    assert_eq!(
        waiting["message"], "configmap \"ps-late-config\" not found",
        "{waiting}"
    );
    let table = s.k(&["get", "pod", "ps-late"]);
    assert!(table.contains("CreateContainerConfigError"), "{table}");
    assert!(
        events(s, "ps-late", "Failed")
            .iter()
            .any(|m| m.contains("ps-late-config")),
        "an event names the missing ConfigMap"
    );
    assert_eq!(
        s.json(&["pod", "ps-late"])["status"]["qosClass"],
        "Guaranteed"
    );

    s.k(&[
        "create",
        "configmap",
        "ps-late-config",
        "--from-literal=value=arrived",
    ]);
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/ps-late",
        "--timeout=60s",
    ]);
    let ip = pod_ip(s, "ps-late");
    assert_eq!(fetch(&ip, "/env?name=LATE"), "arrived");

    // A volume of a missing ConfigMap keeps the pod in ContainerCreating.
    s.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ps-late-vol
spec:
  volumes:
  - name: cfg
    configMap:
      name: ps-never
  containers:
  - name: web
    image: acc/hello:v1
    volumeMounts:
    - name: cfg
      mountPath: /cfg
"#,
    );
    let mount = eventually(Duration::from_secs(60), || {
        events(s, "ps-late-vol", "FailedMount").into_iter().next()
    })
    .expect("a FailedMount event");
    assert!(
        mount.contains("configmap \"ps-never\" not found"),
        "{mount}"
    );
    let pod = s.json(&["pod", "ps-late-vol"]);
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    Ok(())
}

#[test]
fn failing_init_containers_show_in_kubectl_and_fail_the_pod() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    let pod = |name: &str, policy: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {policy}
  initContainers:
  - name: ok
    image: acc/job:v1
  - name: bad
    image: acc/job:v1
    args: ["--exit", "3"]
  containers:
  - name: web
    image: acc/hello:v1
"#
        )
    };
    s.apply(&pod("ps-init-never", "Never"));
    s.apply(&pod("ps-init-always", "Always"));
    let failed = eventually(Duration::from_secs(60), || {
        let p = s.json(&["pod", "ps-init-never"]);
        (p["status"]["phase"] == "Failed").then_some(p)
    })
    .expect("the pod fails when an init container fails under Never");
    let bad = &failed["status"]["initContainerStatuses"][1];
    // Rust's std on wasip2 carries any non-zero exit as code 1 (WASI 0.2).
    assert_eq!(bad["state"]["terminated"]["exitCode"], 1, "{bad}");
    assert_eq!(bad["state"]["terminated"]["reason"], "Error", "{bad}");
    assert_eq!(
        failed["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(condition(&failed, "Initialized"), "False");
    let table = s.k(&["get", "pod", "ps-init-never"]);
    assert!(table.contains("Init:Error"), "{table}");

    let backoff = eventually(Duration::from_secs(60), || {
        let table = s.k(&["get", "pod", "ps-init-always"]);
        table.contains("Init:CrashLoopBackOff").then_some(table)
    });
    assert!(
        backoff.is_some(),
        "{}",
        s.k(&["get", "pod", "ps-init-always", "-o", "yaml"])
    );
    let p = s.json(&["pod", "ps-init-always"]);
    assert_eq!(p["status"]["phase"], "Pending");
    assert!(p["status"]["initContainerStatuses"][1]["restartCount"].as_u64() >= Some(1));
    assert_eq!(p["status"]["initContainerStatuses"][0]["restartCount"], 0);
    Ok(())
}

#[test]
fn probes_drive_readiness_and_restart_unhealthy_containers() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ps-probed
spec:
  volumes:
  - name: state
    emptyDir: {}
  containers:
  - name: web
    image: acc/hello:v1
    ports:
    - name: http
      containerPort: 8080
    volumeMounts:
    - name: state
      mountPath: /state
    startupProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 1
    readinessProbe:
      httpGet:
        path: /healthz?unless=/state/unready
        port: 8080
        httpHeaders:
        - name: X-Probe
          value: readiness
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      httpGet: {path: "/healthz?unless=/state/dead", port: http}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: ps-never-starts
spec:
  containers:
  - name: web
    image: acc/hello:v1
    startupProbe:
      tcpSocket: {port: 9999}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: ps-probe-kinds
spec:
  containers:
  - name: web
    image: acc/hello:v1
    readinessProbe:
      exec:
        command: ["cat", "/tmp/healthy"]
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
      failureThreshold: 1
"#,
    );
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/ps-probed",
        "--timeout=60s",
    ]);
    let ip = pod_ip(s, "ps-probed");
    let st = s.json(&["pod", "ps-probed"])["status"]["containerStatuses"][0].clone();
    assert_eq!(
        (st["started"].clone(), st["ready"].clone()),
        (true.into(), true.into())
    );

    // Readiness fails: out of Ready, still running and serving.
    fetch(&ip, "/write?path=/state/unready&data=1");
    s.k(&[
        "wait",
        "--for=condition=Ready=false",
        "pod/ps-probed",
        "--timeout=30s",
    ]);
    let pod = s.json(&["pod", "ps-probed"]);
    assert_eq!(condition(&pod, "ContainersReady"), "False");
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    assert!(
        events(s, "ps-probed", "Unhealthy")
            .iter()
            .any(|m| m == "Readiness probe failed: HTTP probe failed with statuscode: 503"),
        "{:?}",
        events(s, "ps-probed", "Unhealthy")
    );
    // And back.
    fetch(&ip, "/rm?path=/state/unready");
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/ps-probed",
        "--timeout=30s",
    ]);

    // Liveness fails: the container is killed and restarted.
    fetch(&ip, "/write?path=/state/dead&data=1");
    let restarted = eventually(Duration::from_secs(40), || {
        let p = s.json(&["pod", "ps-probed"]);
        (p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)).then_some(p)
    })
    .expect("a liveness failure restarts the container");
    let last = &restarted["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{last}");
    assert!(
        events(s, "ps-probed", "Killing")
            .iter()
            .any(|m| m == "Container web failed liveness probe, will be restarted"),
        "{:?}",
        events(s, "ps-probed", "Killing")
    );
    // The file is still in the emptyDir, so it keeps failing: CrashLoopBackOff.
    let looping = eventually(Duration::from_secs(60), || {
        let p = s.json(&["pod", "ps-probed"]);
        let st = &p["status"]["containerStatuses"][0];
        (st["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && st["restartCount"].as_u64() >= Some(2))
        .then_some(())
    });
    assert!(
        looping.is_some(),
        "{}",
        s.k(&["get", "pod", "ps-probed", "-o", "yaml"])
    );

    // A startup probe that never passes: never started nor ready, restarted.
    let killed = eventually(Duration::from_secs(40), || {
        events(s, "ps-never-starts", "Killing")
            .into_iter()
            .find(|m| m == "Container web failed startup probe, will be restarted")
    });
    assert!(
        killed.is_some(),
        "{:?}",
        events(s, "ps-never-starts", "Killing")
    );
    let p = s.json(&["pod", "ps-never-starts"]);
    let st = &p["status"]["containerStatuses"][0];
    assert!(st["restartCount"].as_u64() >= Some(1), "{st}");
    assert_eq!(st["ready"], false);
    assert_eq!(st["started"], false);
    assert!(
        events(s, "ps-never-starts", "Unhealthy")
            .iter()
            .any(|m| m.starts_with("Startup probe failed: dial tcp ")),
        "{:?}",
        events(s, "ps-never-starts", "Unhealthy")
    );

    // exec cannot run in a Wasm container: never ready, with a warning that
    // says why; the tcpSocket liveness probe keeps it running.
    let why = eventually(Duration::from_secs(30), || {
        events(s, "ps-probe-kinds", "Unhealthy")
            .into_iter()
            .find(|m| m.contains("exec probes cannot run in a Wasm container"))
    });
    assert!(
        why.is_some(),
        "{:?}",
        events(s, "ps-probe-kinds", "Unhealthy")
    );
    // Repeats of one event are folded into it (count), not new objects.
    let folded = eventually(Duration::from_secs(30), || {
        let list = s.json(&[
            "events",
            "--field-selector",
            "involvedObject.name=ps-probe-kinds,reason=Unhealthy",
        ]);
        let same: Vec<Value> = list["items"]
            .as_array()?
            .iter()
            .filter(|e| e["message"] == why.as_deref().unwrap_or_default())
            .cloned()
            .collect();
        (same.len() == 1 && same[0]["count"].as_u64() >= Some(3)).then_some(())
    });
    assert!(folded.is_some(), "repeated Unhealthy events are counted");
    let p = s.json(&["pod", "ps-probe-kinds"]);
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(condition(&p, "Ready"), "False");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], false);
    Ok(())
}

#[test]
fn the_podspec_example_manifest_runs() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    let mut root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    root.push("examples/manifests/wasm-podspec.yaml");
    s.k(&["apply", "-f", root.to_str().unwrap()]);
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/hello-podspec",
        "--timeout=60s",
    ]);
    let ip = pod_ip(s, "hello-podspec");
    assert_eq!(fetch(&ip, "/env?name=COLOR"), "blue");
    assert_eq!(fetch(&ip, "/env?name=PASSWORD"), "hunter2");
    assert_eq!(fetch(&ip, "/env?name=POD_IP"), ip);
    assert_eq!(fetch(&ip, "/file?path=/etc/secret/password"), "hunter2");
    assert_eq!(
        fetch(&ip, "/file?path=/state/prepared"),
        "by the init container"
    );
    assert_eq!(
        s.json(&["pod", "hello-podspec"])["status"]["qosClass"],
        "Burstable"
    );
    Ok(())
}

#[test]
fn sidecar_init_containers_run_beside_the_app() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ps-sidecar
spec:
  restartPolicy: Never
  initContainers:
  - name: helper
    image: acc/hello:v1
    restartPolicy: Always
    env:
    - name: ROLE
      value: sidecar
    ports:
    - containerPort: 8081
    readinessProbe:
      tcpSocket: {port: 8081}
      periodSeconds: 1
  - name: after
    image: acc/job:v1
  containers:
  - name: web
    image: acc/hello:v1
    env:
    - name: ROLE
      value: app
    ports:
    - containerPort: 8080
"#,
    );
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/ps-sidecar",
        "--timeout=60s",
    ]);
    let pod = s.json(&["pod", "ps-sidecar"]);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let helper = &pod["status"]["initContainerStatuses"][0];
    assert!(helper["state"]["running"].is_object(), "{helper}");
    assert_eq!(helper["started"], true);
    assert_eq!(helper["ready"], true);
    assert_eq!(
        pod["status"]["initContainerStatuses"][1]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(condition(&pod, "Initialized"), "True");
    assert_eq!(fetch(&ip, "/env?name=ROLE"), "app");
    let (code, body) = get(&format!("http://{ip}:8081/env?name=ROLE"))?;
    assert_eq!((code, body.as_str()), (200, "sidecar"));
    let table = s.k(&["get", "pod", "ps-sidecar"]);
    assert!(
        table.contains("2/2") && table.contains("Running"),
        "{table}"
    );
    Ok(())
}
