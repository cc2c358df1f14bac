//! What admission refuses in a pod spec (as Kubernetes' `ValidatePod*`), what
//! a pod update and an immutable ConfigMap may not change, and the API's own
//! limits: object size, JSON patch growth, watch timeouts at the integer
//! maximum, and a flood of idle connections.

use crate::common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::{Result, bail};
use common::{Kubectl, Server, single_server};

fn create(s: &Server, yaml: &str) -> Kubectl {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let f = std::env::temp_dir().join(format!(
        "skiff-limits-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&f, yaml).unwrap();
    let r = s.kubectl(&["create", "-f", f.to_str().unwrap()]);
    let _ = std::fs::remove_file(&f);
    r
}

fn pod(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// A refusal that kubectl shows as Kubernetes' 422: "is invalid" and the field.
fn assert_invalid(r: &Kubectl, field: &str) {
    assert!(!r.ok, "accepted, wanted {field} refused:\n{}", r.stdout);
    assert!(
        r.stderr.contains("is invalid") && r.stderr.contains(field),
        "wanted 422 naming {field}, got:\n{}",
        r.stderr
    );
}

#[test]
fn pod_specs_that_could_escape_their_volumes_are_refused_naming_the_field() -> Result<()> {
    let (_root, s) = single_server()?;
    let c = "  containers:\n  - name: c\n    image: i\n";
    let cases = [
        (
            "  volumes:\n  - name: ../x\n    emptyDir: {}\n".to_string() + c,
            "spec.volumes[0].name",
        ),
        (
            "  volumes:\n  - name: d\n    emptyDir: {}\n  - name: d\n    emptyDir: {}\n".to_string() + c,
            "spec.volumes[1].name: Duplicate value",
        ),
        (
            "  volumes:\n  - name: d\n    emptyDir: {}\n  containers:\n  - name: c\n    image: i\n    volumeMounts:\n    - name: d\n      mountPath: /d\n      subPath: ../../etc\n".to_string(),
            "spec.containers[0].volumeMounts[0].subPath",
        ),
        (
            "  volumes:\n  - name: d\n    configMap:\n      name: cm\n      items:\n      - key: a\n        path: /etc/passwd\n".to_string() + c,
            "spec.volumes[0].configMap.items[0].path",
        ),
        (
            "  volumes:\n  - name: d\n    downwardAPI:\n      items:\n      - path: ../../x\n        fieldRef:\n          fieldPath: metadata.name\n".to_string() + c,
            "spec.volumes[0].downwardAPI.items[0].path",
        ),
        (
            "  containers:\n  - name: c\n    image: i\n    ports:\n    - name: http\n      containerPort: 80\n    - name: http\n      containerPort: 81\n".to_string(),
            "spec.containers[0].ports[1].name",
        ),
        (
            "  containers:\n  - name: c\n    image: i\n    resources:\n      requests:\n        memory: 2Gi\n      limits:\n        memory: 1Gi\n".to_string(),
            "spec.containers[0].resources.requests[memory]",
        ),
        (
            "  containers:\n  - name: c\n    image: i\n    livenessProbe:\n      periodSeconds: -3\n      exec:\n        command: [\"true\"]\n".to_string(),
            "spec.containers[0].livenessProbe.periodSeconds",
        ),
    ];
    for (i, (spec, field)) in cases.iter().enumerate() {
        assert_invalid(&create(&s, &pod(&format!("bad-{i}"), spec)), field);
    }
    // The same rules hold in a workload's template.
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      volumes:\n      - name: d\n        emptyDir: {}\n      containers:\n      - name: c\n        image: i\n        volumeMounts:\n        - name: d\n          mountPath: /d\n          subPath: /etc\n";
    assert_invalid(
        &create(&s, deploy),
        "spec.template.spec.containers[0].volumeMounts[0].subPath",
    );
    // Nothing was stored.
    let pods = s.k(&["get", "pods", "-o", "name"]);
    assert!(pods.trim().is_empty(), "stored: {pods}");

    // A pod's spec is immutable but for images (and a few others).
    let ok = create(
        &s,
        &pod("p", "  containers:\n  - name: c\n    image: one\n"),
    );
    assert!(ok.ok, "{}", ok.stderr);
    s.k(&["set", "image", "pod/p", "c=two"]);
    assert_eq!(
        s.k(&[
            "get",
            "pod",
            "p",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ]),
        "two"
    );
    let r = s.kubectl(&[
        "patch",
        "pod",
        "p",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/spec/containers/-","value":{"name":"d","image":"one"}}]"#,
    ]);
    assert_invalid(&r, "spec: Forbidden: pod updates may not change fields");
    let r = s.kubectl(&[
        "patch",
        "pod",
        "p",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"restartPolicy":"Never"}}"#,
    ]);
    assert_invalid(&r, "spec: Forbidden");
    // Labels are metadata: still editable.
    s.k(&["label", "pod", "p", "tier=web"]);

    // An immutable ConfigMap keeps its data and its immutability.
    s.k(&["create", "configmap", "frozen", "--from-literal=a=1"]);
    s.k(&[
        "patch",
        "configmap",
        "frozen",
        "--type",
        "merge",
        "-p",
        r#"{"immutable":true}"#,
    ]);
    for patch in [r#"{"data":{"a":"2"}}"#, r#"{"immutable":false}"#] {
        let r = s.kubectl(&[
            "patch",
            "configmap",
            "frozen",
            "--type",
            "merge",
            "-p",
            patch,
        ]);
        assert_invalid(&r, "field is immutable when `immutable` is set");
    }
    assert_eq!(
        s.k(&["get", "configmap", "frozen", "-o", "jsonpath={.data.a}"]),
        "1"
    );
    s.k(&["label", "configmap", "frozen", "still=editable"]);
    Ok(())
}

#[test]
fn the_api_bounds_patches_objects_watches_and_connections() -> Result<()> {
    let (_root, s) = single_server()?;
    // A JSON patch that copies an object into itself doubles it each time:
    // refused before anything is stored.
    s.k(&["create", "configmap", "grow", "--from-literal=a=1"]);
    let ops: Vec<String> = (0..40)
        .map(|i| {
            format!(r#"{{"op":"copy","from":"/metadata","path":"/metadata/annotations/k{i}"}}"#)
        })
        .collect();
    let patch = format!(
        r#"[{{"op":"add","path":"/metadata/annotations","value":{{}}}},{}]"#,
        ops.join(",")
    );
    let r = s.kubectl(&["patch", "configmap", "grow", "--type", "json", "-p", &patch]);
    assert!(!r.ok, "the doubling patch was accepted");
    assert!(
        r.stderr.contains("Request entity too large") && r.stderr.contains("copy"),
        "{}",
        r.stderr
    );
    let stored = s.json(&["configmap", "grow"]);
    assert!(
        stored.pointer("/metadata/annotations").is_none(),
        "{stored}"
    );

    // An object beyond the store's 1.5 MiB is a 413, whatever its kind.
    let big = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: big\nspec:\n  containers:\n  - name: c\n    image: i\n    env:\n    - name: BIG\n      value: {}\n",
        "y".repeat(2 * 1024 * 1024)
    );
    let r = create(&s, &big);
    assert!(
        !r.ok && r.stderr.contains("Request entity too large"),
        "{}",
        r.stderr
    );
    assert!(s.not_found(&["pod", "big"]));

    // A watch asking for the largest timeout there is runs, and delivers.
    let resp = s
        .http()
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0&timeoutSeconds={}",
            s.url(),
            u64::MAX
        ))
        .bearer_auth(s.admin_token())
        .send()?;
    assert_eq!(resp.status().as_u16(), 200);
    s.k(&["create", "configmap", "watched", "--from-literal=a=1"]);
    let mut lines = BufReader::new(resp).lines();
    let seen = lines
        .by_ref()
        .take(20)
        .map_while(Result::ok)
        .any(|l| l.contains("\"watched\""));
    assert!(seen, "the watch never delivered the new ConfigMap");

    // Ten thousand idle connections (no TLS handshake, no request) do not
    // keep kubectl out.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < 12_000 {
        if hard < 12_000 {
            bail!("this test needs 12000 open files, the hard limit is {hard}");
        }
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let addr = s.url().trim_start_matches("https://").to_string();
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(std::net::TcpStream::connect(&addr)?);
    }
    let r = s.kubectl(&["get", "configmaps", "-o", "name", "--request-timeout=20s"]);
    assert!(
        r.ok && r.stdout.contains("configmap/watched"),
        "{}",
        r.stderr
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(100));
    s.k(&["get", "namespaces"]);
    Ok(())
}
