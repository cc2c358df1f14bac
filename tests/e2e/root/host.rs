//! A node owns its host state, on the README's own path: a server run with the
//! relative `./skiff-data` runs container pods; killed with SIGKILL and its
//! data dir deleted, it starts over on the same host (the start-up sweep
//! removes what the earlier run left: namespaces, the processes inside them,
//! shims, mounts) and new pods get the same addresses and ports; `skiff
//! uninstall` then leaves no namespace, link, nft table, route, cgroup, mount
//! or process behind. A volume name that is a path never gets past admission.

use crate::common;

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{
    Server, TestNet, WITH_CONTAINERD, busybox_image, cgroup_roots, eventually, example_wasm,
    http_get, node_ready, single_server,
};

/// A busybox pod that prints a line and serves `ok` on 8080, and a Wasm pod.
fn pods(suffix: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: box{suffix}
spec:
  containers:
  - name: box
    image: acc/busybox:v1
    command: ["sh", "-c", "echo hello from box{suffix}; mkdir -p /tmp/www; echo ok > /tmp/www/index.html; exec httpd -f -p 8080 -h /tmp/www"]
    ports:
    - containerPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: hello{suffix}
spec:
  containers:
  - name: hello
    image: acc/hello:v1
    ports:
    - containerPort: 8080
"#
    )
}

fn start_with_pods(s: &mut Server, node: &str, suffix: &str) -> Result<(String, String)> {
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    ensure!(node_ready(s, node), "node Ready; log:\n{}", s.log());
    s.import_tar(&busybox_image(s, "acc/busybox:v1", &[])?)?;
    s.import_wasm(
        &example_wasm("hello-wasm", "hello_wasm.wasm"),
        "acc/hello:v1",
    )?;
    s.apply(&pods(suffix));
    let mut ips = Vec::new();
    for p in [format!("box{suffix}"), format!("hello{suffix}")] {
        let w = s.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=90s",
        ]);
        ensure!(
            w.ok,
            "{p} Ready: {}\n{}\nlog:\n{}",
            w.stderr,
            s.k(&["describe", "pod", &p]),
            s.log()
        );
        ips.push(s.k(&["get", "pod", &p, "-o", "jsonpath={.status.podIP}"]));
    }
    for ip in &ips {
        let answer = eventually(Duration::from_secs(20), || {
            http_get(&format!("http://{ip}:8080/"))
                .ok()
                .filter(|(c, _)| *c == 200)
        });
        ensure!(answer.is_some(), "{ip}:8080 answers; log:\n{}", s.log());
    }
    Ok((ips[0].clone(), ips[1].clone()))
}

/// Processes whose command line names `what`.
fn processes_naming(what: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(what)
                .then(|| format!("{}: {cmd}", e.path().display()))
        })
        .collect()
}

fn ip_out(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn relative_data_dir_start_over_and_uninstall() -> Result<()> {
    let net = TestNet::claim();
    let root = tempfile::tempdir()?;
    let dir = root.path().join("skiff-data");
    let (node, bridge) = net.node(0);
    let mut s = Server::with_node(&dir, &net, &[WITH_CONTAINERD]);
    s.relative = true;

    // The README's relative data dir: container pods run, and log.
    start_with_pods(&mut s, &node, "")?;
    let logs = eventually(Duration::from_secs(20), || {
        let l = s.kubectl(&["logs", "box"]);
        l.stdout.contains("hello from box").then_some(l.stdout)
    });
    assert!(logs.is_some(), "kubectl logs shows the container's output");

    // Killed with its pods running, its data dir deleted (as `rm -rf` does:
    // mount points it cannot remove stay), then started again on this host.
    s.kill();
    let _ = Command::new("rm").arg("-rf").arg(&dir).output();
    let (box_ip, hello_ip) = start_with_pods(&mut s, &node, "2")?;
    assert_eq!(
        http_get(&format!("http://{box_ip}:8080/"))?.1.trim(),
        "ok",
        "the new container pod answers on its port"
    );
    assert_eq!(http_get(&format!("http://{hello_ip}:8080/"))?.0, 200);
    let log = s.log();
    for l in log.lines().filter(|l| l.contains("start-up sweep")) {
        eprintln!("{l}");
    }
    assert!(
        log.contains("start-up sweep removed") && log.contains(&format!("skiff-{node}-")),
        "the log names what the sweep removed:\n{log}"
    );

    // Uninstall: stops the server, removes everything it made.
    let out = Command::new(common::skiff_bin())
        .current_dir(root.path())
        .args(["uninstall", "--data-dir", "./skiff-data"])
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "uninstall: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{said}");
    let exited = eventually(Duration::from_secs(15), || {
        s.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    });
    assert!(exited.is_some(), "the server was stopped:\n{said}");
    assert!(net.namespaces(0).is_empty(), "no namespace left:\n{said}");
    assert!(!ip_out(&["link", "show", &bridge]).0, "no bridge left");
    let veths = ip_out(&["-o", "link", "show"]).1;
    assert!(!veths.contains(&format!("master {bridge}")), "no veth left");
    let nft = Command::new("nft")
        .args(["list", "table", "ip", &net.nft_table(0)])
        .output()?;
    assert!(!nft.status.success(), "no nft table left");
    let routes = ip_out(&["route", "show", "table", "all"]).1;
    for cidr in [net.cluster_cidr(), net.service_cidr()] {
        assert!(
            !routes.contains(&cidr),
            "no route for {cidr} left:\n{routes}"
        );
    }
    for c in cgroup_roots() {
        assert!(
            !c.join(format!("skiff/{node}")).exists(),
            "no cgroup left in {}",
            c.display()
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let d = dir.display().to_string();
    assert!(!mounts.contains(&d), "no mount left below {d}");
    assert_eq!(processes_naming(&d), Vec::<String>::new());
    assert_eq!(
        processes_naming(&format!("-namespace skiff-{node} ")),
        Vec::<String>::new()
    );
    assert!(!dir.exists(), "the data dir is gone");
    let etc = std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("skiff-{node}-"))
        })
        .count();
    assert_eq!(etc, 0, "no /etc/netns directory left");
    Ok(())
}

#[test]
fn volume_names_that_are_paths_are_refused() -> Result<()> {
    let (_root, s) = single_server()?;
    for name in ["/tmp/x", "../x", "a/b"] {
        let pod = format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  volumes:
  - name: "{name}"
    emptyDir: {{}}
  containers:
  - name: c
    image: acc/busybox:v1
    volumeMounts:
    - name: "{name}"
      mountPath: /data
"#
        );
        let out = s.try_apply(&pod);
        assert!(!out.ok, "{name} is refused");
        assert!(
            out.stderr.contains("is invalid")
                && out
                    .stderr
                    .contains(&format!("spec.volumes[0].name: Invalid value: \"{name}\"")),
            "422 naming the field: {}",
            out.stderr
        );
        let deploy = format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
spec:
  selector: {{matchLabels: {{app: d}}}}
  template:
    metadata: {{labels: {{app: d}}}}
    spec:
      volumes: [{{name: "{name}", emptyDir: {{}}}}]
      containers: [{{name: c, image: i}}]
"#
        );
        let out = s.try_apply(&deploy);
        assert!(
            !out.ok
                && out
                    .stderr
                    .contains("spec.template.spec.volumes[0].name: Invalid value"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(s.k(&["get", "pods,deployments", "-o", "name"]).trim(), "");
    Ok(())
}

#[test]
fn install_script_writes_units_systemd_accepts() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dir = |d: &str| root.path().join(d).display().to_string();
    for role in ["server", "agent"] {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
            .arg(role)
            .env("SKIFF_BIN", common::skiff_bin())
            .env("INSTALL_BIN_DIR", dir("bin"))
            .env("SKIFF_CONFIG_DIR", dir(&format!("etc-{role}")))
            .env("SKIFF_UNIT_DIR", dir("units"))
            .env("SKIFF_DOC_DIR", dir("doc"))
            .env("SKIFF_NO_START", "1")
            .env("SKIFF_SERVER", "https://127.0.0.1:6443")
            .env("SKIFF_TOKEN", "t0ken")
            .output()?;
        assert!(
            out.status.success(),
            "install.sh {role}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let units = [
        dir("units/skiff-server.service"),
        dir("units/skiff-agent.service"),
    ];
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()?;
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let unit = std::fs::read_to_string(&units[0])?;
    assert!(unit.contains("Type=notify") && unit.contains(&format!("{} server", dir("bin/skiff"))));
    let config = std::fs::read_to_string(root.path().join("etc-agent/config.yaml"))?;
    assert!(config.contains("server: https://127.0.0.1:6443") && config.contains("token-file:"));
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc-agent/token"))?.trim(),
        "t0ken"
    );
    Ok(())
}

#[test]
fn the_server_tells_systemd_it_is_ready_and_alive() -> Result<()> {
    let root = tempfile::tempdir()?;
    let socket = root.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket)?;
    listener.set_read_timeout(Some(Duration::from_secs(30)))?;
    let s = Server::new(&root.path().join("s"), &[]);
    let mut child = s
        .command()
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "2000000")
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < 2 {
        let n = listener.recv(&mut buf)?;
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        if got.len() == 1 {
            // Ready means serving: /readyz answers at once.
            s.wait_ready(Duration::from_secs(2))?;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, vec!["READY=1", "WATCHDOG=1"]);
    Ok(())
}
