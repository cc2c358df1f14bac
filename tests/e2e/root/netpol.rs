//! NetworkPolicy enforced on the node (issue 22): in a namespace of Wasm and
//! container pods, a default-deny policy stops pod-to-pod traffic both ways
//! between the two kinds, an allow rule by label re-opens exactly one port
//! for exactly the labelled client, and an egress policy keeps a pod from a
//! host outside the cluster (a host in a namespace of the test's own).

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::common::{self, TestNet, World, eventually};

const APPS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: np}
---
apiVersion: v1
kind: Pod
metadata: {name: wasm, namespace: np, labels: {app: wasm}}
spec:
  containers:
  - name: web
    image: acc/hello:v1
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: box, namespace: np, labels: {app: box}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: acc/busybox:v1
    command: ["sh", "-c", "mkdir -p /www && echo box > /www/index.html && httpd -p 8081 -h /www && exec httpd -f -p 8080 -h /www"]
    ports: [{name: http, containerPort: 8080}, {name: other, containerPort: 8081}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: np, labels: {role: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: acc/busybox:v1
    command: ["sleep", "3600"]
"#;

const DENY: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: np}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

const ALLOW: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: box-from-clients, namespace: np}
spec:
  podSelector: {matchLabels: {app: box}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: http}]
"#;

const NO_WORLD: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-stays-in, namespace: np}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
"#;

#[test]
fn network_policies_isolate_wasm_and_container_pods_and_allow_exactly_what_they_say() -> Result<()>
{
    let net = TestNet::claim();
    let dir = tempfile::tempdir()?;
    let mut world = World::new(&net)?;
    world.serve_http(dir.path(), &[("index.html", "world\n")])?;
    let c = common::one_node_with_containers_on(net, &[])?;
    c.s.apply(APPS);
    for p in ["wasm", "box", "client"] {
        c.s.k(&[
            "wait",
            "-n",
            "np",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=60s",
        ]);
    }
    let ip = |p: &str| {
        c.s.k(&[
            "get",
            "pod",
            "-n",
            "np",
            p,
            "-o",
            "jsonpath={.status.podIP}",
        ])
    };
    let (wasm, boxed) = (ip("wasm"), ip("box"));
    // From the client container (busybox wget, bounded by timeout).
    let get = |url: &str| {
        c.s.kubectl(&[
            "exec", "-n", "np", "client", "--", "timeout", "3", "wget", "-qO-", url,
        ])
        .ok
    };
    // From the Wasm pod (its outgoing wasi:http), driven from the host.
    let wasm_gets = |url: &str| {
        common::http_get(&format!("http://{wasm}:8080/fetch?url={url}"))
            .is_ok_and(|(code, _)| code == 200)
    };
    let box_http = format!("http://{boxed}:8080/");
    let box_other = format!("http://{boxed}:8081/");
    let wasm_http = format!("http://{wasm}:8080/");
    let outside = format!("http://{}:8080/", world.ip);
    assert!(get(&box_http) && get(&box_other) && get(&wasm_http) && get(&outside));
    assert!(
        wasm_gets(&box_http),
        "before any policy the Wasm pod reaches the container"
    );

    // Default deny: nothing reaches the pods of the namespace any more.
    let t = Instant::now();
    c.s.apply(DENY);
    eventually(Duration::from_secs(10), || (!get(&box_http)).then_some(()))
        .expect("the default-deny policy applies");
    let applied = t.elapsed();
    assert!(
        !get(&box_other) && !get(&wasm_http),
        "container to Wasm pod denied"
    );
    assert!(!wasm_gets(&box_http), "Wasm pod to container denied");

    // One port for the labelled client, nothing else.
    c.s.apply(ALLOW);
    eventually(Duration::from_secs(10), || get(&box_http).then_some(()))
        .expect("the allow rule re-opens the named port");
    assert!(!get(&box_other), "only the port the rule names");
    assert!(!wasm_gets(&box_http), "only for the pods the rule selects");
    assert!(!get(&wasm_http), "the Wasm pod stays closed");

    // Egress: the client stays inside the cluster.
    assert!(get(&outside));
    c.s.apply(NO_WORLD);
    eventually(Duration::from_secs(10), || (!get(&outside)).then_some(()))
        .expect("the egress policy blocks the host outside");
    assert!(
        get(&box_http),
        "in-cluster traffic the policies allow still flows"
    );

    // Deleting the policies opens everything again.
    c.s.k(&["delete", "networkpolicy", "-n", "np", "--all"]);
    eventually(Duration::from_secs(10), || {
        (get(&wasm_http) && get(&outside)).then_some(())
    })
    .expect("without policies the pods are open again");
    eprintln!("netpol: default deny in force {applied:?} after kubectl apply returned");
    Ok(())
}
