//! Host namespaces where Pod Security allows them: `hostNetwork`,
//! `hostPID`, `hostIPC` and `hostPort`, for containers and Wasm pods.

use crate::common;

use std::time::Duration;

use anyhow::Result;
use common::{eventually, free_port, http_get};

#[test]
fn host_namespaces_and_host_ports_where_pod_security_allows_them() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    let s = &c.s;
    s.privileged_namespace("node-agents");
    // Below `privileged` they are refused at admission.
    let refused = s.try_apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sneaky\nspec:\n  hostNetwork: true\n  containers:\n  - name: main\n    image: acc/busybox:v1\n",
    );
    assert!(
        !refused.ok && refused.stderr.contains("hostNetwork"),
        "{}",
        refused.stderr
    );

    // A container on the node's network, PID and IPC namespaces.
    let port = free_port();
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hostnet\n  namespace: node-agents\nspec:\n  hostNetwork: true\n  hostPID: true\n  hostIPC: true\n  dnsPolicy: ClusterFirstWithHostNet\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: acc/busybox-httpd:v1\n    command: [\"httpd\", \"-f\", \"-p\", \"127.0.0.1:{port}\", \"-h\", \"/var/www\"]\n    ports:\n    - containerPort: {port}\n"
    ));
    s.pod_ready("node-agents", "hostnet");
    let pod = s.json(&["pod", "-n", "node-agents", "hostnet"]);
    assert_eq!(pod["status"]["podIP"], pod["status"]["hostIP"]);
    assert_eq!(
        pod["spec"]["containers"][0]["ports"][0]["hostPort"], port,
        "hostPort defaults to containerPort on the node's network"
    );
    let exec = |cmd: &[&str]| {
        let mut args = vec!["exec", "-n", "node-agents", "hostnet", "--"];
        args.extend_from_slice(cmd);
        s.k(&args).trim().to_string()
    };
    let host_ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    for kind in ["net", "ipc", "pid"] {
        assert_eq!(
            exec(&["readlink", &format!("/proc/self/ns/{kind}")]),
            host_ns(kind),
            "the {kind} namespace is the node's"
        );
    }
    let server_pid = s.pid().expect("server runs").to_string();
    assert_eq!(
        exec(&["cat", &format!("/proc/{server_pid}/comm")]),
        "skiff",
        "the node's processes are visible"
    );
    assert!(exec(&["cat", "/etc/resolv.conf"]).contains("svc.cluster.local"));
    // It listens on the node itself.
    let served = eventually(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(served.is_some(), "nothing listens on 127.0.0.1:{port}");

    // A hostPort: the node's address forwards to the pod.
    let host_port = free_port();
    let node_ip = c.net.node_ip(0);
    let mapped = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: node-agents\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: acc/busybox-httpd:v1\n    ports:\n    - containerPort: 8080\n      hostPort: {host_port}\n"
        )
    };
    s.apply(&mapped("mapped"));
    s.pod_ready("node-agents", "mapped");
    let answer = eventually(Duration::from_secs(20), || {
        http_get(&format!("http://{node_ip}:{host_port}/")).ok()
    });
    let (code, _) = answer.expect("no answer on the hostPort");
    assert!((200..500).contains(&code), "{code}");
    // A second pod asking for the same hostPort is not scheduled here.
    s.apply(&mapped("clash"));
    let why = eventually(Duration::from_secs(20), || {
        let p = s.json(&["pod", "-n", "node-agents", "clash"]);
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")?["message"]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_default();
    assert!(why.contains("didn't have free ports"), "{why}");
    // The port is free again once the pod is gone.
    s.k(&[
        "delete",
        "pod",
        "-n",
        "node-agents",
        "mapped",
        "--wait=true",
    ]);
    s.pod_ready("node-agents", "clash");

    // A Wasm pod on the node's network serves on the node.
    let wasm_port = free_port();
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: wasmhost\n  namespace: node-agents\nspec:\n  hostNetwork: true\n  runtimeClassName: wasm\n  containers:\n  - name: web\n    image: acc/hello:v1\n    ports:\n    - containerPort: {wasm_port}\n"
    ));
    s.pod_ready("node-agents", "wasmhost");
    let (code, body) = http_get(&format!("http://127.0.0.1:{wasm_port}/"))?;
    assert_eq!(code, 200, "{body}");
    Ok(())
}
