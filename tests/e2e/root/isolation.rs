//! Workload isolation on a node, with real containers: the default seccomp
//! profile, sub-paths that cannot leave their volume, bounded logs, and
//! which node listeners a pod can reach.

use crate::common;

use std::time::Duration;

use anyhow::Result;
use common::{Cluster, eventually};

fn sleeper(name: &str, ns: &str, extra_spec: &str, extra_container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  terminationGracePeriodSeconds: 1\n{extra_spec}  containers:\n  - name: main\n    image: acc/busybox:v1\n    command: [\"sleep\", \"3600\"]\n{extra_container}"
    )
}

fn seccomp_mode(c: &Cluster, ns: &str, pod: &str) -> String {
    let status =
        c.s.k(&["exec", "-n", ns, pod, "--", "cat", "/proc/self/status"]);
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn containers_run_under_the_default_seccomp_profile_unless_allowed_out() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    c.s.apply(&sleeper(
        "confined",
        "default",
        "  volumes:\n  - name: scratch\n    emptyDir: {medium: Memory, sizeLimit: 8Mi}\n",
        "    volumeMounts:\n    - {name: scratch, mountPath: /scratch}\n",
    ));
    c.s.pod_ready("default", "confined");
    // A memory emptyDir is a tmpfs of its sizeLimit.
    let df = c.s.k(&["exec", "confined", "--", "df", "-k", "/scratch"]);
    let line = df.lines().last().unwrap_or("");
    assert!(line.starts_with("tmpfs") && line.contains(" 8192 "), "{df}");
    assert_eq!(
        seccomp_mode(&c, "default", "confined"),
        "2",
        "no seccomp filter"
    );
    // A new user namespace needs no capability: the profile is what refuses it.
    let r =
        c.s.kubectl(&["exec", "confined", "--", "unshare", "-U", "true"]);
    assert!(!r.ok, "unshare -U succeeded under RuntimeDefault");
    assert!(
        r.stderr.contains("Operation not permitted")
            || r.stdout.contains("Operation not permitted"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    // Ordinary work is untouched.
    assert_eq!(
        c.s.k(&["exec", "confined", "--", "echo", "fine"]).trim(),
        "fine"
    );

    // Unconfined is a privileged-level choice.
    let unconfined = "  securityContext:\n    seccompProfile: {type: Unconfined}\n";
    let r = c.s.try_apply(&sleeper("free", "default", unconfined, ""));
    assert!(!r.ok && r.stderr.contains("seccompProfile"), "{}", r.stderr);
    c.s.privileged_namespace("loose");
    c.s.apply(&sleeper("free", "loose", unconfined, ""));
    c.s.pod_ready("loose", "free");
    assert_eq!(seccomp_mode(&c, "loose", "free"), "0");

    // (Host namespaces in a privileged namespace: `root::hostns`.)

    // A Localhost profile the node does not have is a clear error.
    c.s.apply(&sleeper(
        "missing",
        "default",
        "  securityContext:\n    seccompProfile: {type: Localhost, localhostProfile: nothere.json}\n",
        "",
    ));
    let why = eventually(Duration::from_secs(60), || {
        let p = c.s.json(&["pod", "missing"]);
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "CreateContainerConfigError").then(|| w["message"].to_string())
    });
    let why = why.expect("no CreateContainerConfigError for a missing seccomp profile");
    assert!(why.contains("nothere.json"), "{why}");
    Ok(())
}

#[test]
fn a_sub_path_through_a_planted_symlink_is_refused() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    c.s.k(&[
        "create",
        "configmap",
        "app",
        "--from-literal=app.conf=setting=on",
    ]);
    // The init container plants `escape -> /` in the shared emptyDir; the app
    // container mounts the volume with `subPath: escape`. The honest one
    // mounts a ConfigMap key by sub-path (a link into `..data`, inside its
    // volume: followed).
    c.s.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: planter\nspec:\n  terminationGracePeriodSeconds: 1\n  volumes:\n  - name: cfg\n    configMap: {name: app}\n  - name: shared\n    emptyDir: {}\n  initContainers:\n  - name: plant\n    image: acc/busybox:v1\n    command: [\"sh\", \"-c\", \"ln -s / /shared/escape && mkdir -p /shared/real && echo inside > /shared/real/f\"]\n    volumeMounts:\n    - {name: shared, mountPath: /shared}\n  containers:\n  - name: reader\n    image: acc/busybox:v1\n    command: [\"sleep\", \"3600\"]\n    volumeMounts:\n    - {name: shared, mountPath: /host, subPath: escape}\n  - name: honest\n    image: acc/busybox:v1\n    command: [\"sleep\", \"3600\"]\n    volumeMounts:\n    - {name: shared, mountPath: /data, subPath: real}\n    - {name: cfg, mountPath: /etc/app.conf, subPath: app.conf}\n",
    );
    let why = eventually(Duration::from_secs(90), || {
        let p = c.s.json(&["pod", "planter"]);
        p["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "reader")
            .map(|s| s["state"]["waiting"].clone())
            .filter(|w| w["reason"] == "CreateContainerConfigError")
            .map(|w| w["message"].to_string())
    });
    let why = why.expect("the reader container was not refused");
    assert!(
        why.contains("symlink") && why.contains("escape"),
        "the refusal does not name the cause: {why}"
    );
    // The honest sub-path next to it works, and shows only the volume.
    let read = eventually(Duration::from_secs(60), || {
        let r =
            c.s.kubectl(&["exec", "planter", "-c", "honest", "--", "cat", "/data/f"]);
        r.ok.then_some(r.stdout)
    });
    assert_eq!(read.as_deref().map(str::trim), Some("inside"));
    let conf = c.s.k(&[
        "exec",
        "planter",
        "-c",
        "honest",
        "--",
        "cat",
        "/etc/app.conf",
    ]);
    assert_eq!(conf.trim(), "setting=on");
    let events = c.s.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=planter",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("symlink"),
        "no event names the cause:\n{events}"
    );
    Ok(())
}

#[test]
fn pods_reach_the_node_only_for_dns_and_services() -> Result<()> {
    let c = common::one_node_with_containers(&[])?;
    // The gateway of the node's pod range is the node's bridge address: a
    // listener there stands for every node listener (agent API, an API
    // server bound off loopback, whatever the host runs).
    let cidr =
        c.s.k(&["get", "nodes", "-o", "jsonpath={.items[0].spec.podCIDR}"]);
    let base: std::net::Ipv4Addr = cidr.split('/').next().unwrap_or("").parse()?;
    let gateway = std::net::Ipv4Addr::from(u32::from(base) + 1);
    let listener = std::net::TcpListener::bind((gateway, 0))?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nnode listener\n");
        }
    });
    c.s.apply(&sleeper("probe", "default", "", ""));
    c.s.pod_ready("default", "probe");
    let try_get = |url: &str| {
        c.s.kubectl(&[
            // Not wget's own `-T`: this busybox's wget crashes with it
            // (SIGSEGV), which would pass for a refusal.
            "exec", "probe", "--", "timeout", "3", "wget", "-q", "-O", "-", url,
        ])
    };
    let direct = try_get(&format!("http://{gateway}:{port}/"));
    assert!(
        !direct.ok && !direct.stdout.contains("node listener"),
        "a pod reached a node listener: {}",
        direct.stdout
    );
    assert!(
        direct.stderr.contains("refused") || direct.stderr.contains("reset"),
        "refused, not failed some other way: {}",
        direct.stderr
    );
    // The agent's API relay on the same address is closed to a direct
    // connection too; it is reached through the `kubernetes` Service only.
    let relay = try_get(&format!("http://{gateway}:6444/"));
    assert!(!relay.ok, "the relay answered a direct connection");
    // The node's DNS answers.
    let dns = c.s.kubectl(&[
        "exec",
        "probe",
        "--",
        "nslookup",
        "kubernetes.default.svc.cluster.local",
    ]);
    assert!(
        dns.ok && dns.stdout.contains("Address"),
        "{}{}",
        dns.stdout,
        dns.stderr
    );
    // The host, not being a pod, still reaches its own listener.
    let host = std::net::TcpStream::connect((gateway, port));
    assert!(host.is_ok(), "the host lost its own listener");
    Ok(())
}

#[test]
fn a_container_logging_in_a_loop_has_its_log_rotated() -> Result<()> {
    let c = common::one_node_with_containers(&[
        "--container-log-max-size",
        "64Ki",
        "--container-log-max-files",
        "3",
    ])?;
    c.s.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: chatty\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: acc/busybox:v1\n    command: [\"sh\", \"-c\", \"i=0; while true; do echo \\\"line $i $(printf %0100d 0)\\\"; i=$((i+1)); usleep 1000; done\"]\n",
    );
    c.s.pod_ready("default", "chatty");
    let uid =
        c.s.k(&["get", "pod", "chatty", "-o", "jsonpath={.metadata.uid}"]);
    let dir =
        c.s.dir
            .join("agent/logs")
            .join(format!("default_chatty_{uid}"))
            .join("main");
    let rotated = eventually(Duration::from_secs(60), || {
        (dir.join("0.log.1").exists() && dir.join("0.log.2").exists()).then_some(())
    });
    assert!(rotated.is_some(), "no rotated logs in {}", dir.display());
    // Bounded: the current file stays near the limit, no third old file.
    std::thread::sleep(Duration::from_secs(3));
    let current = std::fs::metadata(dir.join("0.log"))?.len();
    assert!(current < 1024 * 1024, "the current log is {current} bytes");
    assert!(!dir.join("0.log.3").exists());
    // The writer appends: after a truncation it starts at the beginning
    // again (no hole of zeros where the old content was).
    let head = std::fs::read(dir.join("0.log"))?;
    assert!(
        head.first() != Some(&0),
        "the log has a hole: the runtime does not append"
    );
    // kubectl still reads the log, and the node stays Ready.
    let tail = c.s.k(&["logs", "chatty", "--tail", "2"]);
    assert!(tail.contains("line "), "{tail}");
    let ready = c.s.k(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready, "True");
    Ok(())
}
