//! The Ingress router every node runs (issue 22): the IngressClass `skiff`
//! is the default (an Ingress without a class gets it); an Ingress with two
//! hosts and a TLS Secret routes `curl --resolve` requests (HTTPS by SNI,
//! HTTP/2 and HTTP/1.1, and plain HTTP) to a Wasm Service and a container
//! Service, straight to their ready endpoints with `X-Forwarded-*` set; a
//! WebSocket echoes through it; a scaled-to-zero backend answers the first
//! request; the Ingress's status names the node. The router listens on
//! ports of the test's own.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::common::{self, TestNet, eventually};

fn curl(args: &[&str]) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--noproxy", "*"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "curl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

const APPS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - {name: web, image: acc/hello:v1, ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: box}
spec:
  replicas: 1
  selector: {matchLabels: {app: box}}
  template:
    metadata: {labels: {app: box}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: web, image: acc/busybox-httpd:v1, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: box}
spec:
  selector: {app: box}
  ports: [{name: http, port: 8000, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ws}
spec:
  replicas: 1
  selector: {matchLabels: {app: ws}}
  template:
    metadata: {labels: {app: ws}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: echo, image: acc/ws-echo:v1, ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ws}
spec:
  selector: {app: ws}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sleepy
  annotations: {skiff.dev/scale-to-zero-after: 30s}
spec:
  replicas: 0
  selector: {matchLabels: {app: sleepy}}
  template:
    metadata: {labels: {app: sleepy}}
    spec:
      containers:
      - {name: web, image: acc/hello:v1, ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: sleepy}
spec:
  selector: {app: sleepy}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site}
spec:
  tls:
  - hosts: [wasm.test.example, box.test.example]
    secretName: site-tls
  rules:
  - host: wasm.test.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: hello, port: {number: 80}}}}
  - host: box.test.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: box, port: {name: http}}}}
      - {path: /ws, pathType: Exact, backend: {service: {name: ws, port: {number: 80}}}}
      - {path: /sleepy, pathType: Prefix, backend: {service: {name: sleepy, port: {number: 80}}}}
"#;

#[test]
fn an_ingress_routes_hosts_tls_websockets_and_wakes_a_scaled_to_zero_backend() -> Result<()> {
    let (http, https) = (common::free_port(), common::free_port());
    let (http_s, https_s) = (http.to_string(), https.to_string());
    let c = common::one_node_with_containers_on(
        TestNet::claim(),
        &[
            "--ingress-http-port",
            &http_s,
            "--ingress-https-port",
            &https_s,
        ],
    )?;
    let dir = tempfile::tempdir()?;
    let ws = common::busybox_image_with(
        &c.s,
        "acc/ws-echo:v1",
        &["--cmd", "/bin/ws-echo"],
        &[common::ws_echo()],
    )?;
    c.s.import_tar(&ws)?;

    // The default class.
    let class = c.s.k(&[
        "get",
        "ingressclass",
        "skiff",
        "-o",
        "jsonpath={.spec.controller} {.metadata.annotations.ingressclass\\.kubernetes\\.io/is-default-class}",
    ]);
    assert_eq!(class, "skiff.dev/ingress-router true");

    let tls = dir.path().join("tls");
    let (chain, key, _) = common::test_cert(&["wasm.test.example", "box.test.example"], &tls)?;
    c.s.k(&[
        "create",
        "secret",
        "tls",
        "site-tls",
        &format!("--cert={}", chain.display()),
        &format!("--key={}", key.display()),
    ]);
    c.s.apply(APPS);
    assert_eq!(
        c.s.k(&[
            "get",
            "ingress",
            "site",
            "-o",
            "jsonpath={.spec.ingressClassName}"
        ]),
        "skiff",
        "an Ingress without a class gets the default"
    );
    for d in ["hello", "box", "ws"] {
        c.s.k(&[
            "rollout",
            "status",
            &format!("deployment/{d}"),
            "--timeout=120s",
        ]);
    }
    let ca = tls.join("ca.crt").display().to_string();
    let resolve = |host: &str, port: u16| format!("{host}:{port}:127.0.0.1");

    // HTTPS by SNI, HTTP/2 (ALPN) and HTTP/1.1, to the Wasm Service.
    let answer = eventually(Duration::from_secs(30), || {
        curl(&[
            "--resolve",
            &resolve("wasm.test.example", https),
            "--cacert",
            &ca,
            "-w",
            " %{http_version}",
            &format!("https://wasm.test.example:{https}/"),
        ])
        .ok()
    });
    assert_eq!(
        answer.as_deref(),
        Some("hello from wasm\n 2"),
        "HTTP/2 over TLS"
    );
    let h1 = curl(&[
        "--http1.1",
        "--resolve",
        &resolve("wasm.test.example", https),
        "--cacert",
        &ca,
        "-w",
        " %{http_version}",
        &format!("https://wasm.test.example:{https}/x"),
    ])?;
    assert_eq!(h1, "hello from wasm\n 1.1");

    // Plain HTTP, by host, to the container Service (by port name).
    let boxed = curl(&[
        "--resolve",
        &resolve("box.test.example", http),
        &format!("http://box.test.example:{http}/index.html"),
    ])?;
    assert_eq!(boxed, "hello from busybox\n");
    let missing = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        &resolve("nobody.test.example", http),
        &format!("http://nobody.test.example:{http}/"),
    ])?;
    assert_eq!(missing, "404", "no rule, no default backend");

    // A WebSocket echoes through the router, which says who asked.
    let script = format!(
        "import websocket\n\
         ws = websocket.create_connection('ws://127.0.0.1:{http}/ws', host='box.test.example', timeout=20)\n\
         print(ws.recv())\n\
         ws.send('ping over the ingress')\n\
         print(ws.recv())\n\
         ws.close()\n"
    );
    let out = Command::new("python3").args(["-c", &script]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("path=/ws")
            && lines[0].contains("x-forwarded-for=127.0.0.1")
            && lines[0].contains("x-forwarded-proto=http")
            && lines[0].contains("x-forwarded-host=box.test.example"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "ping over the ingress");

    // The scaled-to-zero backend answers the first request.
    let woke = curl(&[
        "--resolve",
        &resolve("box.test.example", https),
        "--cacert",
        &ca,
        &format!("https://box.test.example:{https}/sleepy"),
    ])?;
    assert_eq!(woke, "hello from wasm\n");
    assert_eq!(
        c.s.k(&[
            "get",
            "deployment",
            "sleepy",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "1",
        "woken"
    );

    // The status names the node.
    let status = eventually(Duration::from_secs(30), || {
        let ip = c.s.k(&[
            "get",
            "ingress",
            "site",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ]);
        (ip == "127.0.0.1").then_some(ip)
    });
    assert!(
        status.is_some(),
        "{}",
        c.s.k(&["get", "ingress", "site", "-o", "yaml"])
    );
    Ok(())
}
