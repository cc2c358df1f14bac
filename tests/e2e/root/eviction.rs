//! Node-pressure eviction: pressure conditions and their taints, pods turned
//! away at admission, pods evicted in the kubelet's order, and `emptyDir`
//! size limits.

use crate::common;

use std::time::Duration;

use anyhow::Result;
use common::{Server, TestNet, eventually};
use serde_json::Value;

fn condition<'a>(obj: &'a Value, ty: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .unwrap_or(&Value::Null)
}

fn has_taint(node: &Value, key: &str) -> bool {
    node["spec"]["taints"].as_array().is_some_and(|ts| {
        ts.iter()
            .any(|t| t["key"] == key && t["effect"] == "NoSchedule")
    })
}

/// Wait for `pod` to be Failed; its status.
fn failed(s: &Server, pod: &str, within: Duration) -> Value {
    eventually(within, || {
        let p = s.json(&["pod", pod]);
        (p["status"]["phase"] == "Failed").then_some(p)
    })
    .unwrap_or_else(|| {
        panic!(
            "pod {pod} never failed: {}",
            s.k(&["get", "pod", pod, "-o", "yaml"])
        )
    })
}

fn evicted_event(s: &Server, pod: &str) -> String {
    s.k(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason=Evicted"),
        "-o",
        "jsonpath={.items[*].message}",
    ])
}

fn wasm_pod(name: &str, node: &str, resources: &str) -> String {
    let bound = if node.is_empty() {
        String::new()
    } else {
        format!("  nodeName: {node}\n")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{bound}  runtimeClassName: wasm\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: web\n    image: acc/hello:v1\n    ports:\n    - containerPort: 8080\n{resources}"
    )
}

#[test]
fn memory_pressure_taints_the_node_turns_best_effort_away_and_evicts() -> Result<()> {
    // A threshold no host meets: the node is under memory pressure at once.
    let c = common::one_node(&["--eviction-hard", "memory.available<1Pi"])?;
    let node = c.net.node(0).0;
    let seen = eventually(Duration::from_secs(30), || {
        let n = c.s.json(&["node", &node]);
        (condition(&n, "MemoryPressure")["status"] == "True"
            && has_taint(&n, "node.kubernetes.io/memory-pressure"))
        .then_some(n)
    })
    .expect("MemoryPressure and its taint");
    assert_eq!(
        condition(&seen, "MemoryPressure")["reason"],
        "KubeletHasInsufficientMemory"
    );
    assert_eq!(condition(&seen, "DiskPressure")["status"], "False");
    assert_eq!(condition(&seen, "Ready")["status"], "True");

    // The scheduler keeps new pods off the node...
    c.s.apply(&wasm_pod("unbound", "", ""));
    let why = eventually(Duration::from_secs(20), || {
        let p = c.s.json(&["pod", "unbound"]);
        let m = condition(&p, "PodScheduled")["message"]
            .as_str()?
            .to_string();
        m.contains("node.kubernetes.io/memory-pressure")
            .then_some(m)
    });
    assert!(why.is_some(), "the pod was not kept off the tainted node");

    // ...the node turns away a BestEffort pod bound to it...
    c.s.apply(&wasm_pod("besteffort", &node, ""));
    let p = failed(&c.s, "besteffort", Duration::from_secs(30));
    assert_eq!(p["status"]["reason"], "Evicted");
    assert_eq!(
        p["status"]["message"],
        "The node had condition: [MemoryPressure]. "
    );
    assert!(evicted_event(&c.s, "besteffort").contains("MemoryPressure"));

    // ...admits a Guaranteed one, then evicts it while the pressure lasts,
    // well within its 30 s grace period.
    let resources = "    resources:\n      limits: {cpu: 100m, memory: 64Mi}\n      requests: {cpu: 100m, memory: 64Mi}\n";
    c.s.apply(&wasm_pod("guaranteed", &node, resources));
    let p = failed(&c.s, "guaranteed", Duration::from_secs(40));
    assert_eq!(p["status"]["reason"], "Evicted", "{p}");
    let message = p["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 1Pi, available: "
        ),
        "{message}"
    );
    let disruption = condition(&p, "DisruptionTarget");
    assert_eq!(disruption["status"], "True");
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    assert!(evicted_event(&c.s, "guaranteed").contains("low on resource: memory"));
    Ok(())
}

/// A one-node cluster with containers whose pod volumes live on a tmpfs of
/// `size` (the node's "nodefs"), with `extra` server flags. Bound in this
/// order, they drop server first, then the network, then the directory.
fn small_disk_node(size: &str, extra: &[&str]) -> Result<(tempfile::TempDir, TestNet, Server)> {
    let net = TestNet::claim();
    let root = tempfile::tempdir()?;
    let dir = root.path().join("s");
    let pods = dir.join("agent/pods");
    std::fs::create_dir_all(&pods)?;
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&pods)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = vec![common::WITH_CONTAINERD];
    args.extend_from_slice(extra);
    let mut s = Server::with_node(&dir, &net, &args);
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    s.import_tar(&common::busybox_image(&s, "acc/busybox:v1", &[])?)?;
    Ok((root, net, s))
}

fn busybox(name: &str, script: &str, volume: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 30\n  volumes:\n  - name: scratch\n    emptyDir: {volume}\n  containers:\n  - name: main\n    image: acc/busybox:v1\n    command: [\"sh\", \"-c\", \"{script}\"]\n    volumeMounts:\n    - {{name: scratch, mountPath: /scratch}}\n{resources}"
    )
}

#[test]
fn disk_pressure_evicts_the_pod_filling_the_disk_and_size_limits_hold() -> Result<()> {
    let (_root, net, s) = small_disk_node(
        "64m",
        &[
            "--eviction-hard",
            "nodefs.available<24Mi",
            "--eviction-pressure-transition-period",
            "15s",
        ],
    )?;
    let node = net.node(0).0;
    let guaranteed = "    resources:\n      limits: {cpu: 100m, memory: 32Mi, ephemeral-storage: 8Mi}\n      requests: {cpu: 100m, memory: 32Mi, ephemeral-storage: 8Mi}\n";
    s.apply(&busybox(
        "keeper",
        "echo kept > /scratch/f; sleep 3600",
        "{}",
        guaranteed,
    ));
    // An emptyDir beyond its sizeLimit: evicted whatever the node's state.
    s.apply(&busybox(
        "overflow",
        "dd if=/dev/zero of=/scratch/f bs=1M count=3; sleep 3600",
        "{sizeLimit: 1Mi}",
        "",
    ));
    let p = failed(&s, "overflow", Duration::from_secs(90));
    assert_eq!(p["status"]["reason"], "Evicted");
    assert_eq!(
        p["status"]["message"],
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/keeper",
        "--timeout=60s",
    ]);

    // A BestEffort pod fills the node's disk: the node reports DiskPressure
    // (and is tainted), turns a new pod away, and evicts the hog, not the
    // Guaranteed pod within its request.
    s.apply(&busybox(
        "hog",
        "dd if=/dev/zero of=/scratch/f bs=1M count=48; sleep 3600",
        "{}",
        "",
    ));
    let n = eventually(Duration::from_secs(60), || {
        let n = s.json(&["node", &node]);
        (condition(&n, "DiskPressure")["status"] == "True").then_some(n)
    })
    .expect("DiskPressure");
    assert_eq!(
        condition(&n, "DiskPressure")["reason"],
        "KubeletHasDiskPressure"
    );
    let tainted = eventually(Duration::from_secs(10), || {
        has_taint(
            &s.json(&["node", &node]),
            "node.kubernetes.io/disk-pressure",
        )
        .then_some(())
    });
    assert!(tainted.is_some(), "no disk-pressure taint");
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: late\nspec:\n  nodeName: {node}\n  containers:\n  - name: main\n    image: acc/busybox:v1\n    command: [\"sleep\", \"3600\"]\n    resources:\n      limits: {{cpu: 100m, memory: 32Mi}}\n"
    ));
    let late = failed(&s, "late", Duration::from_secs(30));
    assert_eq!(
        late["status"]["message"],
        "The node had condition: [DiskPressure]. "
    );
    let hog = failed(&s, "hog", Duration::from_secs(60));
    assert_eq!(hog["status"]["reason"], "Evicted");
    let message = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 24Mi, available: "
        ),
        "{message}"
    );
    assert_eq!(condition(&hog, "DisruptionTarget")["status"], "True");
    // The evicted pod's volume is given back, the pressure ends (after the
    // transition period) and the taint goes; the Guaranteed pod runs on.
    let relieved = eventually(Duration::from_secs(60), || {
        let n = s.json(&["node", &node]);
        (condition(&n, "DiskPressure")["status"] == "False"
            && !has_taint(&n, "node.kubernetes.io/disk-pressure"))
        .then_some(())
    });
    assert!(relieved.is_some(), "the disk pressure did not end");
    let keeper = s.json(&["pod", "keeper"]);
    assert_eq!(keeper["status"]["phase"], "Running");
    assert_eq!(
        s.k(&["exec", "keeper", "--", "cat", "/scratch/f"]).trim(),
        "kept"
    );
    Ok(())
}
