//! Node agents: the embedded one registers its Node (capacity, runtimes, a pod
//! CIDR, Ready once the pod network is up), heartbeats through a Lease and
//! installs the unreachable routes; a second `skiff agent --server --token`
//! joins as another node with its own bridge, and pods spread over both.

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use common::{Server, TestNet, eventually};

fn routes() -> String {
    let out = Command::new("ip").args(["route", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn agents_register_heartbeat_and_share_the_pods() -> Result<()> {
    let net = TestNet::claim();
    let root = tempfile::tempdir()?;
    let mut s = Server::with_node(&root.path().join("s"), &net, &[]);
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let (n0, _) = net.node(0);
    let n1 = net.node(1).0;
    eventually(Duration::from_secs(30), || {
        s.kubectl(&["get", "node", &n0]).ok.then_some(())
    })
    .expect("the embedded agent registers its node");
    s.k(&[
        "wait",
        "--for=condition=Ready",
        &format!("node/{n0}"),
        "--timeout=60s",
    ]);
    let node = s.json(&["node", &n0]);
    assert_eq!(
        node["metadata"]["labels"]["runtime.skiff.dev/wasmtime"],
        "true"
    );
    assert!(
        node["status"]["capacity"]["cpu"]
            .as_str()
            .unwrap()
            .parse::<u32>()?
            >= 1
    );
    assert!(
        node["status"]["capacity"]["memory"]
            .as_str()
            .unwrap()
            .ends_with("Ki")
    );
    let cidr = node["spec"]["podCIDR"].as_str().unwrap().to_string();
    assert_eq!(cidr, format!("10.88.{}.0/26", net.octet));
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["reason"], "KubeletReady");
    assert!(
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .unwrap()
            > 0
    );
    let holder = s.k(&[
        "get",
        "lease",
        &n0,
        "-n",
        "kube-node-lease",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, n0);
    let r = routes();
    assert!(
        r.contains(&format!("unreachable {}", net.cluster_cidr())),
        "{r}"
    );
    assert!(
        r.contains(&format!("unreachable {}", net.service_cidr())),
        "{r}"
    );
    assert!(r.contains(&format!("{cidr} dev {}", net.node(0).1)), "{r}");

    // A second node: a standalone agent that joins with the token.
    let agent = common::Agent::join(&s, &net, 1, &root.path().join("agent"))?;
    let bad = Command::new(common::skiff_bin())
        .args([
            "agent",
            "--server",
            &format!("https://{}", s.api),
            "--token",
            "wrong",
        ])
        .arg("--data-dir")
        .arg(root.path().join("bad"))
        .output()?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    agent.wait_ready(&s, &n1);

    s.import_wasm(
        &common::example_wasm("hello-wasm", "hello_wasm.wasm"),
        "acc/hello:v1",
    )?;
    for i in 0..4 {
        s.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\nspec:\n  containers:\n  - name: web\n    image: acc/hello:v1\n    ports:\n    - containerPort: 8080\n"
        ));
    }
    let mut nodes = std::collections::BTreeSet::new();
    for i in 0..4 {
        let p = format!("pod/p{i}");
        s.k(&["wait", "--for=condition=Ready", &p, "--timeout=60s"]);
        let pod = s.json(&[&p]);
        nodes.insert(pod["spec"]["nodeName"].as_str().unwrap().to_string());
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let body = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?
            .get(format!("http://{ip}:8080/"))
            .send()?
            .text()?;
        assert!(!body.is_empty());
        let logs = s.k(&["logs", &p]);
        assert!(
            logs.contains("request /"),
            "logs through either agent: {logs}"
        );
    }
    assert_eq!(nodes.len(), 2, "pods spread over both nodes: {nodes:?}");
    Ok(())
}
