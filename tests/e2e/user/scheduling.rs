//! The scheduler with the real kubectl: RuntimeClasses, runtime handlers offered by
//! nodes, selectors, resources, spread, and the condition and event an
//! unschedulable pod gets.

use crate::common;

use anyhow::Result;
use common::{Server, single_server};

fn node(s: &Server, dir: &std::path::Path, name: &str, runtime: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    runtime.skiff.dev/{runtime}: \"true\"\n"),
    )
    .unwrap();
    s.k(&["apply", "-f", path.to_str().unwrap()]);
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"ready"}],"allocatable":{"cpu":"2","memory":"4Gi","pods":"110"},"capacity":{"cpu":"2","memory":"4Gi","pods":"110"}}}"#;
    s.k(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
}

fn pod(s: &Server, dir: &std::path::Path, name: &str, extra: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra}  containers:\n  - name: c\n    image: acc/hello:v1\n"),
    )
    .unwrap();
    s.k(&["apply", "-f", path.to_str().unwrap()]);
}

fn wait(s: &Server, what: &str, cond: &str) {
    s.k(&["wait", &format!("--for={cond}"), what, "--timeout=20s"]);
}

#[test]
fn pods_land_on_nodes_that_fit_and_the_rest_say_why() -> Result<()> {
    let (root, s) = single_server()?;
    let dir = root.path();
    assert_eq!(
        s.k(&["get", "runtimeclass", "wasm", "-o", "jsonpath={.handler}"]),
        "wasmtime"
    );
    assert_eq!(
        s.k(&["get", "runtimeclass", "runc", "-o", "jsonpath={.handler}"]),
        "runc"
    );
    node(&s, dir, "wasm-node", "wasmtime");
    node(&s, dir, "oci-node", "runc");
    // The control plane gives every node its own /24 of the cluster CIDR.
    s.k(&[
        "wait",
        "--for=jsonpath={.spec.podCIDR}",
        "node/wasm-node",
        "node/oci-node",
        "--timeout=20s",
    ]);
    let a = s.k(&["get", "node", "wasm-node", "-o", "jsonpath={.spec.podCIDR}"]);
    let b = s.k(&["get", "node", "oci-node", "-o", "jsonpath={.spec.podCIDR}"]);
    assert!(
        a.starts_with("10.88.") && a.ends_with(".0/24") && b.starts_with("10.88."),
        "{a} {b}"
    );
    assert_ne!(a, b);

    pod(&s, dir, "w", "  runtimeClassName: wasm\n");
    pod(&s, dir, "o", "  runtimeClassName: runc\n");
    wait(&s, "pod/w", "jsonpath={.spec.nodeName}=wasm-node");
    wait(&s, "pod/o", "jsonpath={.spec.nodeName}=oci-node");
    wait(&s, "pod/w", "condition=PodScheduled");
    let wide = s.k(&["get", "pod", "w", "-o", "wide"]);
    assert!(wide.contains("wasm-node"), "{wide}");

    // Without a runtime class, pods spread over both nodes.
    for i in 0..4 {
        pod(&s, dir, &format!("spread-{i}"), "");
    }
    for i in 0..4 {
        wait(&s, &format!("pod/spread-{i}"), "condition=PodScheduled");
    }
    let placed = s.k(&[
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
    ]);
    let on_wasm = placed.lines().filter(|l| *l == "wasm-node").count();
    let on_oci = placed.lines().filter(|l| *l == "oci-node").count();
    assert_eq!(on_wasm + on_oci, 6, "{placed}");
    assert!(on_wasm >= 2 && on_oci >= 2, "{placed}");

    // Pods that fit nowhere: a condition and an event naming the cause.
    pod(&s, dir, "picky", "  nodeSelector:\n    disk: ssd\n");
    pod(&s, dir, "hungry", "");
    // No agent runs on these nodes to confirm a graceful stop: force it.
    s.k(&["delete", "pod", "hungry", "--grace-period=0", "--force"]);
    let hungry = dir.join("hungry2.yaml");
    std::fs::write(
        &hungry,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hungry\nspec:\n  containers:\n  - name: c\n    image: acc/hello:v1\n    resources:\n      requests:\n        cpu: \"3\"\n",
    )?;
    s.k(&["apply", "-f", hungry.to_str().unwrap()]);
    pod(&s, dir, "classless", "  runtimeClassName: nope\n");
    for (p, why) in [
        ("picky", "didn't match Pod's node affinity/selector"),
        ("hungry", "Insufficient cpu"),
        ("classless", "RuntimeClass \"nope\" not found"),
    ] {
        wait(&s, &format!("pod/{p}"), "condition=PodScheduled=False");
        let msg = s.k(&[
            "get",
            "pod",
            p,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]);
        assert!(msg.contains(why), "{p}: {msg}");
        let desc = s.k(&["describe", "pod", p]);
        assert!(
            desc.contains("FailedScheduling") && desc.contains(why),
            "{p}: {desc}"
        );
    }
    // A node whose Lease stopped being renewed turns Unknown and unreachable.
    node(&s, dir, "gone", "wasmtime");
    let lease = dir.join("lease.yaml");
    std::fs::write(
        &lease,
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: gone\n  namespace: kube-node-lease\nspec:\n  holderIdentity: gone\n  leaseDurationSeconds: 40\n  renewTime: \"2020-01-01T00:00:00.000000Z\"\n",
    )?;
    s.k(&["apply", "-f", lease.to_str().unwrap()]);
    wait(&s, "node/gone", "condition=Ready=Unknown");
    s.k(&[
        "wait",
        "--for=jsonpath={.spec.taints[0].key}=node.kubernetes.io/unreachable",
        "node/gone",
        "--timeout=20s",
    ]);
    assert!(s.k(&["get", "node", "gone"]).contains("NotReady"));

    // A label that makes the node fit lets the picky pod in.
    s.k(&["label", "node", "oci-node", "disk=ssd"]);
    wait(&s, "pod/picky", "jsonpath={.spec.nodeName}=oci-node");
    Ok(())
}
