//! Images pulled from a real registry (issue 22): Debian's `docker-registry`
//! (the CNCF distribution registry) on a test host of the test's own, with
//! TLS from a test CA and htpasswd authentication. A container image pushed
//! there with `skopeo` and a Wasm artifact pushed with `oras` run as pods by
//! reference alone, with an `imagePullSecret`; without one the pod shows
//! `ErrImagePull` naming the 401. The agent reaches the registry through
//! its `registries.yaml` (a mirror endpoint for the registry's name, the CA
//! file), never through the host's resolvers. The pulled images are copied
//! into the cluster's store: a second node runs them with the registry
//! stopped.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::common::{self, REGISTRY_USER, TestNet, World, eventually, run};

const NAME: &str = "registry.test.example:5000";

fn pod(name: &str, image: &str, secret: Option<&str>, node: Option<&str>) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n"
    );
    if let Some(n) = node {
        y.push_str(&format!("  nodeName: {n}\n"));
    }
    if let Some(s) = secret {
        y.push_str(&format!("  imagePullSecrets: [{{name: {s}}}]\n"));
    }
    y.push_str(&format!(
        "  containers:\n  - name: web\n    image: {image}\n    ports: [{{containerPort: 8080}}]\n"
    ));
    y
}

#[test]
fn images_pulled_from_a_registry_with_pull_secrets_run_and_stay_in_the_cluster() -> Result<()> {
    let net = TestNet::claim();
    let dir = tempfile::tempdir()?;
    let mut world = World::new(&net)?;
    let reg_dir = dir.path().join("registry");
    let (registry, _ca) = world.serve_registry("registry.test.example", &reg_dir)?;
    let ip = format!("{}:5000", world.ip);
    let ca_file = reg_dir.join("tls/ca.crt");

    // The agent knows the registry's name only through registries.yaml.
    let registries = dir.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!(
            "mirrors:\n  {NAME:?}:\n    endpoint: [\"https://{ip}\"]\n  {ip:?}:\n    endpoint: [\"https://{ip}\"]\nconfigs:\n  {ip:?}:\n    tls: {{ca_file: {ca}}}\n",
            ca = ca_file.display()
        ),
    )?;
    let c = common::one_node_with_containers_on(
        net,
        &["--registries-config", &registries.to_string_lossy()],
    )?;

    // Push: a container image with skopeo, a Wasm component with oras.
    let certs = dir.path().join("client-certs");
    std::fs::create_dir_all(&certs)?;
    std::fs::copy(&ca_file, certs.join("ca.crt"))?;
    let creds = format!("{}:{}", REGISTRY_USER.0, REGISTRY_USER.1);
    let tar = common::busybox_image(
        &c.s,
        "team/box:v1",
        &[
            "--cmd", "httpd", "--cmd", "-f", "--cmd", "-p", "--cmd", "8080", "--cmd", "-h",
            "--cmd", "/",
        ],
    )?;
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-creds", &creds])
        .arg("--dest-cert-dir")
        .arg(&certs)
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("docker://{ip}/team/box:v1")))?;
    let wasm = common::example_wasm("hello-wasm", "hello_wasm.wasm");
    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(hostname={ip:?}, tls_verify={ca:?}, auth_backend='basic')\n\
         c.auth.set_basic_auth({user:?}, {pw:?})\n\
         c.push(target={target:?}, files=[{file:?}], manifest_config='/dev/null:application/vnd.wasm.config.v0+json', disable_path_validation=True)\n",
        ca = ca_file.to_string_lossy(),
        user = REGISTRY_USER.0,
        pw = REGISTRY_USER.1,
        target = format!("{ip}/team/hello:v1"),
        file = format!("{}:application/wasm", wasm.display()),
    );
    run(Command::new("python3")
        .args(["-c", &script])
        .current_dir(dir.path()))?;

    // Without a pull secret: ErrImagePull, naming the registry's 401.
    let image = format!("{NAME}/team/box:v1");
    c.s.apply(&pod("nosecret", &image, None, None));
    let waiting = eventually(Duration::from_secs(60), || {
        let w = c.s.k(&[
            "get",
            "pod",
            "nosecret",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].state.waiting.message}",
        ]);
        ((w.starts_with("ErrImagePull") || w.starts_with("ImagePullBackOff")) && w.contains("401"))
            .then_some(w)
    });
    assert!(
        waiting.is_some(),
        "a pull without credentials fails naming 401: {}",
        c.s.k(&["get", "pod", "nosecret", "-o", "yaml"])
    );
    let events = c.s.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=nosecret",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("Pulling: Pulling image") && events.contains("401"),
        "the pull and its failure are events: {events}"
    );
    c.s.k(&["delete", "pod", "nosecret", "--wait=false"]);

    // With one: the pods run.
    for (secret, server) in [("regcred", NAME), ("regcred-ip", ip.as_str())] {
        c.s.k(&[
            "create",
            "secret",
            "docker-registry",
            secret,
            &format!("--docker-server={server}"),
            &format!("--docker-username={}", REGISTRY_USER.0),
            &format!("--docker-password={}", REGISTRY_USER.1),
        ]);
    }
    c.s.apply(&pod("box", &image, Some("regcred"), None));
    let wasm_image = format!("{ip}/team/hello:v1");
    c.s.apply(&pod("wasm", &wasm_image, Some("regcred-ip"), None));
    let ready = |p: &str| {
        let out = c.s.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=120s",
        ]);
        assert!(
            out.ok,
            "pod {p} runs: {}\n{}",
            out.stderr,
            c.s.k(&["get", "pod", p, "-o", "yaml"])
        );
    };
    ready("box");
    ready("wasm");
    let pod_ip = |p: &str| c.s.k(&["get", "pod", p, "-o", "jsonpath={.status.podIP}"]);
    let answer = common::http_get(&format!("http://{}:8080/bin/sh", pod_ip("box")))?;
    assert_eq!(answer.0, 200, "the pulled container serves: {answer:?}");
    let answer = common::http_get(&format!("http://{}:8080/", pod_ip("wasm")))?;
    assert_eq!(answer, (200, "hello from wasm\n".to_string()));
    let events = c.s.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=box",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("Pulled: Successfully pulled image"),
        "a successful pull is an event: {events}"
    );

    // The cluster keeps them: a second node runs both with the registry gone.
    world.stop(registry);
    assert!(
        std::net::TcpStream::connect_timeout(&ip.parse()?, Duration::from_millis(500)).is_err(),
        "the registry is stopped"
    );
    let agent_dir = dir.path().join("agent2");
    let agent = common::Agent::join(&c.s, &c.net, 1, &agent_dir)?;
    let (node2, _) = c.net.node(1);
    agent.wait_ready(&c.s, &node2);
    c.s.apply(&pod("box2", &image, Some("regcred"), Some(&node2)));
    c.s.apply(&pod("wasm2", &wasm_image, Some("regcred-ip"), Some(&node2)));
    ready("box2");
    ready("wasm2");
    let answer = common::http_get(&format!("http://{}:8080/", pod_ip("wasm2")))?;
    assert_eq!(answer, (200, "hello from wasm\n".to_string()));

    // Never: only what the cluster holds.
    c.s.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: never}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: registry.test.example:5000/team/absent:v1\n    imagePullPolicy: Never\n",
    );
    let never = eventually(Duration::from_secs(30), || {
        let r = c.s.k(&[
            "get",
            "pod",
            "never",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ]);
        (r == "ErrImageNeverPull").then_some(())
    });
    assert!(never.is_some(), "imagePullPolicy Never: ErrImageNeverPull");
    for p in ["box", "wasm", "box2", "wasm2", "never"] {
        c.s.k(&["delete", "pod", p, "--wait=false"]);
    }
    drop(agent);
    Ok(())
}
