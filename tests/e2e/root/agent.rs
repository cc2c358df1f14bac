//! Node agents: the embedded one registers its Node (capacity, runtimes, a pod
//! CIDR, Ready once the pod network is up), heartbeats through a Lease and
//! installs the unreachable routes; a second `skiff agent --server --token`
//! joins as another node with its own bridge, and pods spread over both.

use crate::common;

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
    // The agent API is mutual TLS: plain HTTP and TLS without a client
    // certificate of the CA get nothing, join token or not.
    let ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap()
        .to_string();
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "import ssl,socket,sys\nh,p,ca,tok=sys.argv[1:]\nreq=('GET /healthz HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer '+tok+'\\r\\n\\r\\n').encode()\ntry:\n  with socket.create_connection((h,int(p)),timeout=5) as t:\n    t.sendall(req); print('plain', t.recv(100))\nexcept Exception as e: print('plain refused', type(e).__name__)\nctx=ssl.create_default_context(cafile=ca); ctx.check_hostname=False\ntry:\n  with socket.create_connection((h,int(p)),timeout=5) as t:\n    with ctx.wrap_socket(t) as x:\n      x.sendall(req); print('tls', x.recv(100))\nexcept Exception as e: print('tls refused', type(e).__name__)",
            &ip,
            &port,
            s.dir.join("ca.crt").to_str().unwrap(),
            s.node_token().rsplit(':').next().unwrap(),
        ])
        .output()?;
    let said = String::from_utf8_lossy(&probe.stdout);
    assert!(
        !said.contains("200 OK") && said.contains("tls refused"),
        "the agent api answered without a client certificate: {said}"
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

#[test]
fn a_standalone_agent_outlives_its_server() -> Result<()> {
    let net = TestNet::claim();
    let root = tempfile::tempdir()?;
    let mut s = common::server_for_agents(root.path(), &net)?;
    let node = net.node(1).0;
    let mut agent = common::Agent::join_in(
        &s,
        &net,
        1,
        &root.path().join("agent"),
        None,
        &["--no-containerd"],
    )?;
    agent.wait_ready(&s, &node);
    s.import_wasm(
        &common::example_wasm("hello-wasm", "hello_wasm.wasm"),
        "acc/hello:v1",
    )?;
    s.apply(&common::web_app(1));
    s.k(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    let ip = s.k(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let url = format!("http://{ip}/");
    eventually(Duration::from_secs(20), || {
        common::http_get(&url).ok().filter(|(c, _)| *c == 200)
    })
    .expect("the Service answers");
    let pod = s.k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.uid}",
    ]);

    // Its only server away for a minute: the agent keeps running and serving.
    s.kill();
    let away = std::time::Instant::now();
    let mut requests = 0;
    while away.elapsed() < Duration::from_secs(60) {
        let answer = common::http_get(&url);
        assert!(
            matches!(answer, Ok((200, _))),
            "the Service answers while the API is away ({:?} in): {answer:?}",
            away.elapsed()
        );
        assert!(
            agent.child.try_wait()?.is_none(),
            "the agent is running; log:\n{}",
            std::fs::read_to_string(&agent.log).unwrap_or_default()
        );
        requests += 1;
        std::thread::sleep(Duration::from_secs(1));
    }

    // The server returns: the agent reconnects by itself, renews its Lease and
    // runs new pods; the old pod was never replaced.
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let lease = |s: &Server| {
        s.k(&[
            "get",
            "lease",
            &node,
            "-n",
            "kube-node-lease",
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let before = lease(&s);
    eventually(Duration::from_secs(30), || {
        (lease(&s) != before).then_some(())
    })
    .expect("the agent renews its Lease again");
    s.k(&["scale", "deploy/web", "--replicas=2"]);
    s.k(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let uids = s.k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ]);
    assert!(uids.contains(&pod), "the first pod is still there: {uids}");
    let restarts = s.k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
    ]);
    assert!(
        restarts.split(' ').all(|r| r == "0"),
        "no restarts: {restarts}"
    );
    eprintln!("{requests} requests answered while the server was away");
    agent.kill();
    Ok(())
}

#[test]
fn an_agent_whose_token_pins_another_ca_refuses_to_join() -> Result<()> {
    // No host changes: the agent stops before it makes anything.
    let (root, s) = common::single_server()?;
    // The token the server wrote pins its CA ...
    let pinned = s.node_token();
    let hash = skiff_common::jointoken::ca_hash(&std::fs::read_to_string(s.dir.join("ca.crt"))?);
    assert_eq!(pinned, format!("K10{hash}::server:{}", s.token()));
    // ... and one that pins another CA is refused before the secret goes out.
    let dir = root.path().join("a");
    std::fs::create_dir_all(&dir)?;
    let (node, bridge) = ("pinned-elsewhere", "skf-nothere");
    let out = std::process::Command::new(common::skiff_bin())
        .env("SKIFF_CONFIG", "")
        .args(["agent", "--server", &format!("https://{}", s.api)])
        .args([
            "--token",
            &format!("K10{}::server:{}", "0".repeat(64), s.token()),
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--node-name",
            node,
            "--bridge",
            bridge,
            "--node-ip",
            "127.0.0.1",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("refusing to join"), "{err}");
    assert!(s.not_found(&["node", node]), "no Node was registered");
    Ok(())
}
