//! Pods reach the API as their ServiceAccount: the projected token, CA
//! bundle and namespace at `/var/run/secrets/kubernetes.io/serviceaccount`
//! in containers and Wasm pods, `KUBERNETES_SERVICE_HOST`/`_PORT` in their
//! environment, and `https://kubernetes.default.svc` through the node's API
//! relay; the official Python client's in-cluster configuration lists what
//! the account's role allows and gets 403 for the rest.

use crate::common;

use std::time::Duration;

use anyhow::Result;
use common::{eventually, in_netns};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: box
  namespace: crew
spec:
  serviceAccountName: lister
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: acc/busybox:v1
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: sealed
  namespace: crew
spec:
  serviceAccountName: lister
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: acc/busybox:v1
    command: ["sleep", "3600"]
"#;

#[test]
fn pods_reach_the_api_as_their_service_account() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    let s = &c.s;
    s.apply(&common::pod_reader("crew", "lister"));
    s.apply(PODS);
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/box",
        "pod/sealed",
        "-n",
        "crew",
        "--timeout=90s",
    ]);
    let exec = |pod: &str, cmd: &[&str]| {
        let mut a = vec!["exec", "-n", "crew", pod, "--"];
        a.extend_from_slice(cmd);
        s.kubectl(&a)
    };
    // The projected files: the token, the cluster CA, the namespace.
    let ca = std::fs::read_to_string(s.dir.join("ca.crt"))?;
    let read = |f: &str| exec("box", &["cat", &format!("{SA_DIR}/{f}")]);
    assert_eq!(read("namespace").stdout, "crew");
    assert_eq!(read("ca.crt").stdout, ca);
    let token = read("token").stdout;
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // The API knows it: the account's, bound to this pod.
    let review: serde_json::Value = s
        .http()
        .post(format!(
            "{}/apis/authentication.k8s.io/v1/tokenreviews",
            s.url()
        ))
        .bearer_auth(s.admin_token())
        .json(
            &serde_json::json!({"apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview", "spec": {"token": token}}),
        )
        .send()?
        .json()?;
    let user = &review["status"]["user"];
    assert_eq!(
        user["username"], "system:serviceaccount:crew:lister",
        "{review}"
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"][0],
        "box"
    );
    let sealed = exec("sealed", &["ls", SA_DIR]);
    assert!(
        !sealed.ok,
        "automountServiceAccountToken: false mounts nothing"
    );
    let pod = s.json(&["pod", "sealed", "-n", "crew"]);
    assert!(
        !pod.to_string().contains("kube-api-access-"),
        "no token volume: {pod}"
    );

    // The API's Service in the environment, as Kubernetes sets it.
    let env = exec("box", &["env"]).stdout;
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {env}"))
            .to_string()
    };
    let svc = s.json(&["service", "kubernetes", "-n", "default"]);
    let host = var("KUBERNETES_SERVICE_HOST");
    assert_eq!(svc["spec"]["clusterIP"], host.as_str());
    assert_eq!(var("KUBERNETES_SERVICE_PORT"), "443");
    assert_eq!(var("KUBERNETES_PORT"), format!("tcp://{host}:443"));

    // From inside the container the Service's name resolves to that
    // address and a connection reaches the API through the node's relay
    // (the TLS and the token are the Python client's part below: busybox
    // has no client for the server's TLS).
    let lookup = exec("box", &["nslookup", "kubernetes.default.svc.cluster.local"]);
    assert!(lookup.stdout.contains(&host), "{lookup:?}");
    let connected = eventually(Duration::from_secs(20), || {
        let r = exec(
            "box",
            &[
                "sh",
                "-c",
                "printf 'x' | nc -w 2 kubernetes.default.svc.cluster.local 443; echo rc=$?",
            ],
        );
        r.stdout.contains("rc=0").then_some(r)
    });
    assert!(connected.is_some(), "the relay answers inside the pod");

    // The official Python client's in-cluster config with the pod's files
    // and environment, in the pod's network namespace: the CA bundle
    // verifies the server at the Service's address.
    let ip = s.json(&["pod", "box", "-n", "crew"])["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("token"), &token)?;
    std::fs::write(dir.path().join("ca.crt"), read("ca.crt").stdout)?;
    let environ = serde_json::json!({
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": var("KUBERNETES_SERVICE_PORT"),
    });
    std::fs::write(dir.path().join("env.json"), environ.to_string())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/incluster.py");
    let p = |f: &str| dir.path().join(f).display().to_string();
    let out = in_netns(
        &c.net.netns_of(0, &ip),
        &[
            "python3",
            script,
            &p("token"),
            &p("ca.crt"),
            &p("env.json"),
            "crew",
        ],
    )?;
    assert!(out.contains("pods: box,sealed"), "{out}");
    assert!(out.contains("secrets: 403"), "{out}");
    assert!(out.contains("all-pods: 403"), "{out}");

    // A Wasm pod sees the same files and environment.
    s.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: wasm-reader
  namespace: crew
spec:
  serviceAccountName: lister
  restartPolicy: Never
  runtimeClassName: wasm
  containers:
  - name: job
    image: acc/job:v1
    args: ["--cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
           "--expect-file", "/var/run/secrets/kubernetes.io/serviceaccount/token",
           "--env", "KUBERNETES_SERVICE_HOST"]
"#,
    );
    let done = eventually(Duration::from_secs(60), || {
        let phase = s.json(&["pod", "wasm-reader", "-n", "crew"])["status"]["phase"]
            .as_str()
            .map(str::to_string);
        phase.filter(|p| p == "Succeeded" || p == "Failed")
    });
    let logs = s.k(&["logs", "wasm-reader", "-n", "crew"]);
    assert_eq!(done.as_deref(), Some("Succeeded"), "{logs}");
    assert!(
        logs.contains(&format!("{SA_DIR}/namespace: crew")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("KUBERNETES_SERVICE_HOST={host}")),
        "{logs}"
    );
    Ok(())
}
