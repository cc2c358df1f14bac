//! The embedded node agent registers its Node (capacity, runtimes, an honest
//! Ready condition), gets a pod CIDR, and heartbeats through a Lease.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::Server;

#[test]
fn embedded_agent_registers_and_heartbeats() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut s = Server::new(&root.path().join("s"), &["--node-name", "edge-a"]);
    s.start()?;
    s.wait_ready(Duration::from_secs(20))?;
    common::eventually(Duration::from_secs(30), || {
        s.kubectl(&["get", "node", "edge-a"]).ok.then_some(())
    })
    .expect("the agent registers its node");
    s.k(&[
        "wait",
        "--for=jsonpath={.spec.podCIDR}",
        "node/edge-a",
        "--timeout=30s",
    ]);
    s.k(&[
        "wait",
        "--for=condition=Ready=False",
        "node/edge-a",
        "--timeout=30s",
    ]);
    let node: serde_json::Value =
        serde_json::from_str(&s.k(&["get", "node", "edge-a", "-o", "json"]))?;
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
    assert!(
        node["spec"]["podCIDR"]
            .as_str()
            .unwrap()
            .starts_with("10.88.")
    );
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "PodWorkersUnavailable");
    let holder = s.k(&[
        "get",
        "lease",
        "edge-a",
        "-n",
        "kube-node-lease",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "edge-a");
    Ok(())
}
