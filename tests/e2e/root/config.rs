//! `skiff server --config FILE`, `SKIFF_*` variables and flags in their order
//! of precedence; `skiff kubeconfig`; `skiff version`; `--tls-san`.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use common::{Server, free_port, skiff_bin};

/// Start `skiff server ARGS` with `env` (nothing else on its command line).
fn spawn(dir: &Path, api: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Server> {
    // Only its helpers are used (wait_ready, log, http): the command is ours.
    let mut s = Server::new(dir, &[]);
    s.api = api.to_string();
    let log = std::fs::File::create(s.log_path())?;
    s.child = Some(
        Command::new(skiff_bin())
            .arg("server")
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    Ok(s)
}

fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn config_file_env_and_flags_kubeconfig_and_version() -> Result<()> {
    let root = tempfile::tempdir()?;
    let (d1, d2) = (root.path().join("s1"), root.path().join("s2"));
    let (api1, api2) = (loopback(free_port()), loopback(free_port()));
    let config = root.path().join("config.yaml");
    // peer-addr here is unusable: the environment's must win over it.
    std::fs::write(
        &config,
        format!(
            "# a skiff config\napi-addr: {api1}\npeer-addr: 256.0.0.1:1\ndata-dir: {}\n\
             disable-agent: true\ntls-san: [skiff.test.example, 10.255.255.7]\n",
            d1.display()
        ),
    )?;
    let cfg = config.to_str().unwrap();

    // An unknown key stops the server at once, naming the key and the file.
    let bad = root.path().join("bad.yaml");
    std::fs::write(&bad, "api-adress: 127.0.0.1:1\n")?;
    let out = Command::new(skiff_bin())
        .args(["server", "--config", bad.to_str().unwrap()])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("api-adress") && err.contains(bad.to_str().unwrap()),
        "{err}"
    );

    // The file gives api-addr, data-dir and disable-agent; the environment
    // overrides its peer-addr.
    let peer1 = loopback(free_port());
    let s1 = spawn(
        &d1,
        &api1,
        &["--config", cfg],
        &[("SKIFF_PEER_ADDR", &peer1)],
    )?;
    // The flag beats both the environment and the file.
    let peer2 = loopback(free_port());
    let s2 = spawn(
        &d2,
        &api2,
        &["--api-addr", &api2, "--data-dir", d2.to_str().unwrap()],
        &[
            ("SKIFF_CONFIG", cfg),
            ("SKIFF_API_ADDR", "127.0.0.1:1"),
            ("SKIFF_PEER_ADDR", &peer2),
        ],
    )?;
    s1.wait_ready(Duration::from_secs(30))?;
    s2.wait_ready(Duration::from_secs(30))?;
    let log = s1.log();
    assert!(
        log.contains(&peer1) && !log.contains("256.0.0.1"),
        "env beats config:\n{log}"
    );

    // `skiff kubeconfig` prints the admin kubeconfig, which kubectl can use.
    let out = Command::new(skiff_bin())
        .args(["kubeconfig", "--data-dir", d1.to_str().unwrap()])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kc = String::from_utf8(out.stdout)?;
    assert!(kc.contains(&format!("server: https://{api1}")), "{kc}");
    let kc_path = root.path().join("printed.kubeconfig");
    std::fs::write(&kc_path, &kc)?;
    let k = Command::new(common::kubectl_path())
        .arg("--kubeconfig")
        .arg(&kc_path)
        .args(["get", "ns", "kube-system", "-o", "name"])
        .output()?;
    assert!(
        String::from_utf8_lossy(&k.stdout).contains("namespace/kube-system"),
        "{}",
        String::from_utf8_lossy(&k.stderr)
    );
    let missing = Command::new(skiff_bin())
        .args(["kubeconfig", "--data-dir"])
        .arg(root.path().join("nope"))
        .output()?;
    assert!(!missing.status.success());

    // The serving certificate covers --tls-san names and the fixed
    // in-cluster names (each resolved to loopback here, nothing leaves).
    let addr: std::net::SocketAddr = api1.parse()?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(d1.join("ca.crt"))?)?;
    for host in [
        "skiff.test.example",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    ] {
        let http = reqwest::blocking::Client::builder()
            .add_root_certificate(ca.clone())
            .resolve(host, addr)
            .timeout(Duration::from_secs(5))
            .build()?;
        let r = http
            .get(format!("https://{host}:{}/version", addr.port()))
            .send();
        assert!(r.is_ok(), "{host}: {r:?}");
    }

    // `skiff version` and the API's /version tell the same build.
    let out = Command::new(skiff_bin()).arg("version").output()?;
    let line = String::from_utf8(out.stdout)?;
    let commit = line
        .split("commit ")
        .nth(1)
        .and_then(|r| r.split([',', ')']).next())
        .unwrap_or_default()
        .to_string();
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line}"
    );
    let admin = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap_or_default();
    let v: serde_json::Value = s1
        .http()
        .get(format!("{}/version", s1.url()))
        .bearer_auth(admin)
        .send()?
        .json()?;
    assert_eq!(v["gitCommit"], commit.as_str(), "{v}");
    assert!(
        line.contains(v["buildDate"].as_str().unwrap_or("?")),
        "{line} {v}"
    );
    // disable-agent: true in the config (an agent would have made its dir
    // a second after start).
    assert!(!d1.join("agent").exists() && !d2.join("agent").exists());
    drop((s1, s2));
    Ok(())
}

#[test]
fn config_files_name_nodes_and_a_flag_overrides_them() -> Result<()> {
    let net = common::TestNet::claim();
    let root = tempfile::tempdir()?;
    let api = loopback(free_port());
    let (n0, bridge0) = net.node(0);
    let (n1, bridge1) = net.node(1);
    // The server's file names its node `…-file`; the command line's
    // --node-name wins over it.
    let server_cfg = root.path().join("server.yaml");
    std::fs::write(
        &server_cfg,
        format!(
            "api-addr: {api}\nnode-name: {n0}-file\nbridge: {bridge0}\nnode-ip: 127.0.0.1\n\
             no-containerd: true\ncluster-cidr: {}\nnode-cidr-mask-size: 26\nservice-cidr: {}\n\
             service-node-port-range: {}\n",
            net.cluster_cidr(),
            net.service_cidr(),
            net.node_ports()
        ),
    )?;
    let s = spawn(
        &root.path().join("s"),
        &api,
        &[
            "--config",
            server_cfg.to_str().unwrap(),
            "--data-dir",
            root.path().join("s").to_str().unwrap(),
            "--peer-addr",
            &loopback(free_port()),
            "--node-name",
            &n0,
        ],
        &[],
    )?;
    s.wait_ready(Duration::from_secs(30))?;
    assert!(common::node_ready(&s, &n0), "{}", s.log());
    // An agent set up by its file alone (as scripts/install.sh writes it).
    let agent_cfg = root.path().join("agent.yaml");
    let token = root.path().join("token");
    std::fs::write(&token, s.token())?;
    std::fs::write(
        &agent_cfg,
        format!(
            "server: https://{api}\ntoken-file: {}\nnode-name: {n1}\nbridge: {bridge1}\n\
             node-ip: 127.0.0.1\nno-containerd: true\ndata-dir: {}\n",
            token.display(),
            root.path().join("agent").display()
        ),
    )?;
    let mut agent = Command::new(skiff_bin())
        .args(["agent", "--config", agent_cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.path().join("agent.log"))?)
        .spawn()?;
    let ready = common::node_ready(&s, &n1);
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        ready,
        "the agent's node from its config file: {}",
        std::fs::read_to_string(root.path().join("agent.log")).unwrap_or_default()
    );
    assert!(
        s.not_found(&["node", &format!("{n0}-file")]),
        "the flag beat the file's node name"
    );
    Ok(())
}
