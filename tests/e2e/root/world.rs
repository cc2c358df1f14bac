//! Pods and the world outside the cluster (issue 22): pods reach addresses
//! outside the cluster through the node (masqueraded), names outside the
//! cluster domain are forwarded to the node's upstream resolvers
//! (`--resolv-conf`), `dnsPolicy: Default` pods get the node's file, and a
//! Wasm guest's outgoing `wasi:http` uses names and `https` (trusting a CA
//! its pod names by `SSL_CERT_FILE` in a ConfigMap volume), as a container's
//! own TLS client does.
//! The "world" is a host in a namespace of the test's own (`common::World`):
//! its DNS server (dnsmasq) is the agent's only upstream, and nothing is
//! sent anywhere else.

use std::time::Duration;

use anyhow::Result;

use crate::common::{self, TestNet, World, eventually};

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: NAME
spec:
  dnsPolicy: POLICY
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: acc/busybox:v1
    command: ["sleep", "3600"]
"#;

fn pod(name: &str, policy: &str) -> String {
    POD.replace("NAME", name).replace("POLICY", policy)
}

#[test]
fn pods_reach_a_host_outside_the_cluster_by_name_through_the_node() -> Result<()> {
    let net = TestNet::claim();
    let dir = tempfile::tempdir()?;
    let mut world = World::new(&net)?;
    world.serve_dns("service.test.example", dir.path())?;
    let www = world.serve_http(dir.path(), &[("hello.txt", "hello from the world\n")])?;
    let ca = world.serve_https("service.test.example", &www)?;
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!(
            "nameserver {}\nsearch test.example\noptions ndots:1\n",
            world.ip
        ),
    )?;
    let c =
        common::one_node_with_containers_on(net, &["--resolv-conf", &resolv.to_string_lossy()])?;
    c.s.apply(&pod("first", "ClusterFirst"));
    c.s.apply(&pod("default", "Default"));
    for p in ["first", "default"] {
        c.s.k(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=60s",
        ]);
    }
    let exec = |p: &str, cmd: &[&str]| {
        let mut args = vec!["exec", p, "--"];
        args.extend_from_slice(cmd);
        c.s.kubectl(&args)
    };

    // By address: the pod's connection leaves through the node.
    let by_ip = exec(
        "first",
        &[
            "wget",
            "-qO-",
            &format!("http://{}:8080/hello.txt", world.ip),
        ],
    );
    assert!(
        by_ip.ok && by_ip.stdout == "hello from the world\n",
        "a pod reaches a host outside the cluster: {} {}",
        by_ip.stdout,
        by_ip.stderr
    );
    // By name: the cluster DNS forwards the name to the world's DNS server.
    let by_name = eventually(Duration::from_secs(20), || {
        let r = exec(
            "first",
            &["wget", "-qO-", "http://service.test.example:8080/hello.txt"],
        );
        r.ok.then_some(r.stdout)
    });
    assert_eq!(
        by_name.as_deref(),
        Some("hello from the world\n"),
        "a name outside the cluster resolves through the node DNS; dnsmasq log:\n{}",
        std::fs::read_to_string(dir.path().join("dnsmasq.log")).unwrap_or_default()
    );
    // Cluster names are still the cluster's, and unknown outside names fail.
    let cluster = exec(
        "first",
        &["nslookup", "kubernetes.default.svc.cluster.local"],
    );
    assert!(
        cluster.ok
            && cluster.stdout.contains(&c.s.k(&[
                "get",
                "svc",
                "kubernetes",
                "-o",
                "jsonpath={.spec.clusterIP}"
            ])),
        "{}",
        cluster.stdout
    );
    let missing = exec("first", &["nslookup", "nothing.invalid."]);
    assert!(
        !missing.ok || missing.stdout.contains("NXDOMAIN") || missing.stderr.contains("NXDOMAIN"),
        "{missing:?}"
    );

    // dnsPolicy Default: the node's file, whose server answers directly.
    let conf = exec("default", &["cat", "/etc/resolv.conf"]);
    assert!(
        conf.stdout.contains(&format!("nameserver {}", world.ip))
            && conf.stdout.contains("search test.example")
            && !conf.stdout.contains("cluster.local"),
        "{}",
        conf.stdout
    );
    let direct = exec(
        "default",
        &["wget", "-qO-", "http://service:8080/hello.txt"],
    );
    assert_eq!(direct.stdout, "hello from the world\n", "{}", direct.stderr);

    // A Wasm pod: by name, over https, trusting the test CA from a
    // ConfigMap mounted as a volume and named by SSL_CERT_FILE; without it
    // the certificate is refused with wasi:http's own error code.
    c.s.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: test-ca}}\ndata:\n  ca.crt: |\n{}",
        ca.lines().map(|l| format!("    {l}\n")).collect::<String>()
    ));
    c.s.apply(WASM_FETCHERS);
    c.s.k(&["rollout", "status", "deploy/trusting", "--timeout=60s"]);
    c.s.k(&["rollout", "status", "deploy/plain", "--timeout=60s"]);
    let fetch = |deploy: &str, url: &str| {
        let pod = c.s.k(&[
            "get",
            "pods",
            "-l",
            &format!("app={deploy}"),
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ]);
        common::http_get(&format!("http://{pod}:8080/fetch?url={url}"))
    };
    let trusted = fetch("trusting", "https://service.test.example/hello.txt")?;
    assert_eq!(trusted, (200, "hello from the world\n".to_string()));
    let by_name = fetch("plain", "http://service.test.example:8080/hello.txt")?;
    assert_eq!(by_name, (200, "hello from the world\n".to_string()));
    let untrusted = fetch("plain", "https://service.test.example/hello.txt")?;
    assert!(
        untrusted.0 == 502 && untrusted.1.contains("TlsCertificateError"),
        "{untrusted:?}"
    );
    let missing = fetch("plain", "http://nothing.test.invalid/")?;
    assert!(
        missing.0 == 502 && missing.1.contains("DnsError"),
        "{missing:?}"
    );

    // A container with a real TLS client (a static rustls one) trusting the
    // same ConfigMap, and the same client trusting nothing.
    c.s.import_tar(&common::busybox_image_with(
        &c.s,
        "acc/fetch:v1",
        &[],
        &[common::https_fetch()],
    )?)?;
    c.s.apply(CONTAINER_FETCHER);
    c.s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/fetcher",
        "--timeout=60s",
    ]);
    let trusted = exec(
        "fetcher",
        &["https-fetch", "https://service.test.example/hello.txt"],
    );
    assert_eq!(
        trusted.stdout, "hello from the world\n",
        "{}",
        trusted.stderr
    );
    let untrusted = exec(
        "fetcher",
        &[
            "env",
            "-u",
            "SSL_CERT_FILE",
            "https-fetch",
            "https://service.test.example/hello.txt",
        ],
    );
    assert!(
        !untrusted.ok && untrusted.stderr.contains("certificate"),
        "{}",
        untrusted.stderr
    );
    Ok(())
}

const CONTAINER_FETCHER: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: fetcher
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: acc/fetch:v1
    command: ["sleep", "3600"]
    env: [{name: SSL_CERT_FILE, value: /etc/test-ca/ca.crt}]
    volumeMounts: [{name: ca, mountPath: /etc/test-ca}]
  volumes:
  - name: ca
    configMap: {name: test-ca}
"#;

const WASM_FETCHERS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: trusting
spec:
  replicas: 1
  selector: {matchLabels: {app: trusting}}
  template:
    metadata: {labels: {app: trusting}}
    spec:
      containers:
      - name: app
        image: acc/hello:v1
        ports: [{containerPort: 8080}]
        env: [{name: SSL_CERT_FILE, value: /etc/test-ca/ca.crt}]
        volumeMounts: [{name: ca, mountPath: /etc/test-ca}]
      volumes:
      - name: ca
        configMap: {name: test-ca}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: plain
spec:
  replicas: 1
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers:
      - name: app
        image: acc/hello:v1
        ports: [{containerPort: 8080}]
"#;
