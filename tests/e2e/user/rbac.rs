//! RBAC with the real kubectl: roles and bindings decide what a user may do,
//! `kubectl --as` acts as a ServiceAccount (for those allowed to impersonate),
//! a 403 names user, verb and resource, and requests without credentials get
//! 401 everywhere but the health checks.

use crate::common;

use std::time::Duration;

use anyhow::Result;
use common::{eventually, single_server};

const READER: &str = "system:serviceaccount:team:reader";

#[test]
fn a_role_decides_what_a_service_account_may_do() -> Result<()> {
    let (_root, s) = single_server()?;
    s.apply(&common::pod_reader("team", "reader"));
    // The binding reaches the authorizer's cache within moments.
    let listed = eventually(Duration::from_secs(10), || {
        let r = s.kubectl(&["get", "pods", "-n", "team", "--as", READER]);
        r.ok.then_some(r)
    });
    assert!(listed.is_some(), "the reader lists pods in its namespace");

    let secrets = s.kubectl(&["get", "secrets", "-n", "team", "--as", READER]);
    assert!(!secrets.ok);
    assert!(
        secrets.stderr.contains("(Forbidden)")
            && secrets.stderr.contains(&format!(
                "User \"{READER}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""
            )),
        "{}",
        secrets.stderr
    );
    let everywhere = s.kubectl(&["get", "pods", "-A", "--as", READER]);
    assert!(
        !everywhere.ok && everywhere.stderr.contains("at the cluster scope"),
        "{}",
        everywhere.stderr
    );
    let write = s.kubectl(&["delete", "pod", "x", "-n", "team", "--as", READER]);
    assert!(
        !write.ok && write.stderr.contains("cannot delete resource \"pods\""),
        "{}",
        write.stderr
    );
    // `kubectl auth can-i` asks the server (SelfSubjectAccessReview) ...
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--as", READER]);
        let r = s.kubectl(&a);
        (r.ok, r.stdout.trim().to_string())
    };
    assert_eq!(can(&["list", "pods", "-n", "team"]), (true, "yes".into()));
    assert_eq!(
        can(&["get", "pods/web", "-n", "team"]),
        (true, "yes".into())
    );
    assert_eq!(
        can(&["list", "secrets", "-n", "team"]),
        (false, "no".into())
    );
    assert_eq!(can(&["list", "pods", "-A"]), (false, "no".into()));
    assert_eq!(
        can(&["create", "deployments", "-n", "team"]),
        (false, "no".into())
    );
    // ... and `--list` shows exactly what its role allows there (plus what
    // every authenticated user may: the reviews and discovery).
    let list = s.k(&["auth", "can-i", "--list", "-n", "team", "--as", READER]);
    let pods = list
        .lines()
        .find(|l| l.starts_with("pods "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(pods.contains("[get list]"), "{list}");
    assert!(!list.contains("secrets"), "{list}");
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    // The admin may ask about others.
    let other = s.kubectl(&[
        "auth", "can-i", "list", "pods", "-n", "team", "--as", READER,
    ]);
    assert!(other.ok);

    // Discovery works for every authenticated user (kubectl needs it).
    let api = s.kubectl(&["api-versions", "--as", READER]);
    assert!(
        api.ok && api.stdout.contains("rbac.authorization.k8s.io/v1"),
        "{}",
        api.stderr
    );

    // The account may not impersonate anyone, the admin may.
    let as_admin = s.kubectl(&[
        "get",
        "pods",
        "-n",
        "team",
        "--as",
        "system:serviceaccount:kube-system:default",
        "--as-group",
        "system:masters",
    ]);
    assert!(
        as_admin.ok,
        "the admin impersonates anyone: {}",
        as_admin.stderr
    );

    // A ClusterRoleBinding to the default `view` role: reads everywhere, still
    // no secrets and no writes.
    s.apply(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: reader-views
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: view
subjects:
- kind: ServiceAccount
  name: reader
  namespace: team
"#,
    );
    let all = eventually(Duration::from_secs(10), || {
        let r = s.kubectl(&["get", "deployments", "-A", "--as", READER]);
        r.ok.then_some(r)
    });
    assert!(all.is_some(), "view reads deployments everywhere");
    let secrets = s.kubectl(&["get", "secrets", "-A", "--as", READER]);
    assert!(
        !secrets.ok && secrets.stderr.contains("(Forbidden)"),
        "view must not read secrets: {}",
        secrets.stderr
    );
    Ok(())
}

#[test]
fn without_credentials_only_the_health_checks_answer() -> Result<()> {
    let (_root, s) = single_server()?;
    let (base, client) = (s.url(), s.http());
    for path in ["/healthz", "/livez", "/readyz"] {
        let r = client.get(format!("{base}{path}")).send()?;
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    for path in [
        "/version",
        "/api",
        "/apis",
        "/api/v1/namespaces/default/pods",
        "/openapi/v3",
        "/metrics",
        "/v2/",
    ] {
        let r = client.get(format!("{base}{path}")).send()?;
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let body: serde_json::Value = r.json()?;
        assert_eq!(body["reason"], "Unauthorized", "{path}: {body}");
    }
    // The raw key-value view is off unless asked for, even with the join
    // token.
    let kv = client
        .get(format!("{base}/skiff/v0/kv?prefix=/"))
        .bearer_auth(s.token())
        .send()?;
    assert_eq!(kv.status().as_u16(), 404);
    // The join token is not a credential of the Kubernetes API.
    let r = client
        .get(format!("{base}/api/v1/namespaces"))
        .bearer_auth(s.token())
        .send()?;
    assert_eq!(r.status().as_u16(), 401);
    Ok(())
}

#[test]
fn a_service_account_token_is_that_account_and_no_more() -> Result<()> {
    let (_root, s) = single_server()?;
    s.apply(&common::pod_reader("crew", "lister"));
    // Every namespace gets its `default` account and the CA bundle.
    let defaults = eventually(Duration::from_secs(10), || {
        let sa = s.kubectl(&["get", "serviceaccount", "default", "-n", "crew"]);
        let cm = s.kubectl(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "crew",
            "-o",
            "json",
        ]);
        (sa.ok && cm.ok).then_some(cm.stdout)
    })
    .expect("default account and kube-root-ca.crt in a new namespace");
    let cm: serde_json::Value = serde_json::from_str(&defaults)?;
    let ca = std::fs::read_to_string(s.dir.join("ca.crt"))?;
    assert_eq!(cm["data"]["ca.crt"], ca.as_str());

    let token = s.k(&[
        "create",
        "token",
        "lister",
        "-n",
        "crew",
        "--duration",
        "20m",
    ]);
    let token = token.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let with = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--token", &token]);
        s.kubectl(&a)
    };
    // The binding reaches the authorizer's cache within moments.
    let listed = eventually(Duration::from_secs(10), || {
        let r = with(&["get", "pods", "-n", "crew"]);
        r.ok.then_some(r)
    });
    assert!(listed.is_some(), "the token lists pods in its namespace");
    let who = with(&["auth", "whoami", "-o", "json"]);
    assert!(who.ok, "{}", who.stderr);
    let who: serde_json::Value = serde_json::from_str(&who.stdout)?;
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:crew:lister"
    );
    let secrets = with(&["get", "secrets", "-n", "crew"]);
    assert!(
        !secrets.ok && secrets.stderr.contains("(Forbidden)"),
        "{}",
        secrets.stderr
    );
    let all = with(&["get", "pods", "-A"]);
    assert!(
        !all.ok && all.stderr.contains("(Forbidden)"),
        "{}",
        all.stderr
    );
    let list = with(&["auth", "can-i", "--list", "-n", "crew"]);
    assert!(list.ok, "{}", list.stderr);
    let pods = list
        .stdout
        .lines()
        .find(|l| l.starts_with("pods "))
        .unwrap_or_else(|| panic!("{}", list.stdout));
    assert!(pods.contains("[get list]"), "{}", list.stdout);
    assert!(!list.stdout.contains("secrets"), "{}", list.stdout);
    // The account may not impersonate.
    let as_admin = with(&["get", "pods", "-n", "crew", "--as", "skiff-admin"]);
    assert!(
        !as_admin.ok && as_admin.stderr.contains("cannot impersonate"),
        "{}",
        as_admin.stderr
    );

    // TokenReview says whose it is; a token for another audience is not
    // valid here.
    let review = |t: &str| -> Result<serde_json::Value> {
        let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview", "spec": {"token": t}});
        Ok(s.http()
            .post(format!(
                "{}/apis/authentication.k8s.io/v1/tokenreviews",
                s.url()
            ))
            .bearer_auth(s.admin_token())
            .json(&body)
            .send()?
            .json()?)
    };
    let r = review(&token)?;
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:crew:lister"
    );
    let vault = s.k(&[
        "create",
        "token",
        "lister",
        "-n",
        "crew",
        "--audience",
        "vault",
    ]);
    let r = review(vault.trim())?;
    assert_eq!(r["status"]["authenticated"], false, "{r}");
    let other = s.kubectl(&["get", "pods", "-n", "crew", "--token", vault.trim()]);
    assert!(
        !other.ok && other.stderr.contains("Unauthorized"),
        "{}",
        other.stderr
    );

    // A token dies with its account, even if one of the same name comes back.
    s.k(&["delete", "serviceaccount", "lister", "-n", "crew"]);
    s.k(&["create", "serviceaccount", "lister", "-n", "crew"]);
    let gone = with(&["get", "pods", "-n", "crew"]);
    assert!(
        !gone.ok && gone.stderr.contains("Unauthorized"),
        "{}",
        gone.stderr
    );
    let r = review(&token)?;
    assert_eq!(r["status"]["authenticated"], false, "{r}");
    // Every request is in the audit log with user, verb, resource and code;
    // the token's own body (a TokenRequest's answer) is not.
    let log = std::fs::read_to_string(s.dir.join("audit/audit.log"))?;
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let found = |user: &str, verb: &str, resource: &str, code: u16| {
        events.iter().any(|e| {
            e["user"]["username"] == user
                && e["verb"] == verb
                && e["objectRef"]["resource"] == resource
                && e["responseStatus"]["code"] == code
        })
    };
    let lister = "system:serviceaccount:crew:lister";
    assert!(found(lister, "list", "pods", 200), "{log}");
    assert!(found(lister, "list", "secrets", 403), "{log}");
    assert!(
        found("skiff-admin", "create", "serviceaccounts", 201),
        "{log}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["responseStatus"]["code"] == 401 && e["user"] == serde_json::json!({})),
        "the refused token is logged without a user"
    );
    assert!(!log.contains(&token), "no token in the audit log");
    assert!(events.iter().all(|e| e["apiVersion"] == "audit.k8s.io/v1"
        && e["level"] == "Metadata"
        && e["auditID"].is_string()));
    // kubectl's requests come from its address (the controllers' do not
    // cross the network).
    assert!(
        events
            .iter()
            .filter(|e| e["userAgent"]
                .as_str()
                .is_some_and(|a| a.starts_with("kubectl")))
            .all(|e| e["sourceIPs"][0] == "127.0.0.1")
    );
    // A pod naming an account that does not exist is refused, as Kubernetes'
    // ServiceAccount admission refuses it; one naming `lister` gets its token
    // volume in every container.
    let pod = |sa: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: with-{sa}\n  namespace: crew\nspec:\n  serviceAccountName: {sa}\n  containers:\n  - name: c\n    image: acc/hello:v1\n"
        )
    };
    let missing = s.try_apply(&pod("nobody"));
    assert!(
        !missing.ok
            && missing
                .stderr
                .contains("serviceaccount \"nobody\" not found"),
        "{}",
        missing.stderr
    );
    s.apply(&pod("lister"));
    let made = s.json(&["pod", "with-lister", "-n", "crew"]);
    assert_eq!(
        made["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    // Too short a token is refused as Kubernetes refuses it.
    let short = s.kubectl(&[
        "create",
        "token",
        "lister",
        "-n",
        "crew",
        "--duration",
        "1m",
    ]);
    assert!(
        !short.ok && short.stderr.contains("less than 10 minutes"),
        "{}",
        short.stderr
    );
    Ok(())
}

#[test]
fn a_node_credential_reaches_only_its_own_node_and_pods() -> Result<()> {
    let (_root, s) = single_server()?;
    // What an agent gets for the join token: a credential of its node.
    let boot: serde_json::Value = s
        .http()
        .get(format!("{}/skiff/v0/agent?node=edge-1", s.url()))
        .bearer_auth(s.token())
        .send()?
        .json()?;
    let token = boot["token"]
        .as_str()
        .expect("a node credential")
        .to_string();
    assert_ne!(token, s.admin_token(), "not the admin's");
    let as_node = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--token", &token]);
        s.kubectl(&a)
    };
    let who = as_node(&["auth", "whoami", "-o", "json"]);
    assert!(who.ok, "{}", who.stderr);
    assert!(who.stdout.contains("system:node:edge-1") && who.stdout.contains("system:nodes"));
    // A pod bound to edge-1 uses one Secret; another Secret is nobody's.
    s.apply(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Secret
metadata:
  name: used
  namespace: shop
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata:
  name: unused
  namespace: shop
stringData: {k: v}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
spec:
  nodeName: edge-1
  containers:
  - name: c
    image: acc/hello:v1
    env:
    - name: K
      valueFrom: {secretKeyRef: {name: used, key: k}}
"#,
    );
    let got = eventually(Duration::from_secs(10), || {
        let r = as_node(&["get", "secret", "used", "-n", "shop"]);
        r.ok.then_some(r)
    });
    assert!(got.is_some(), "the node reads the Secret of its pod");
    for args in [
        &["get", "secret", "unused", "-n", "shop"][..],
        &["get", "secrets", "-n", "shop"][..],
        &["delete", "namespace", "shop"][..],
        &[
            "create",
            "clusterrolebinding",
            "x",
            "--clusterrole=cluster-admin",
            "--user=system:node:edge-1",
        ][..],
    ] {
        let r = as_node(args);
        assert!(
            !r.ok && r.stderr.to_lowercase().contains("forbidden"),
            "{args:?}: {}",
            r.stderr
        );
    }
    // Its own Node, not another one.
    let node = |name: &str| format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n");
    let dir = tempfile::tempdir()?;
    for name in ["edge-1", "edge-2"] {
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, node(name))?;
        let r = as_node(&["create", "-f", f.to_str().unwrap()]);
        assert_eq!(r.ok, name == "edge-1", "create node {name}: {}", r.stderr);
    }
    s.apply(&node("edge-2"));
    assert!(as_node(&["label", "node", "edge-1", "zone=a"]).ok);
    let other = as_node(&["label", "node", "edge-2", "zone=a"]);
    assert!(
        !other.ok && other.stderr.to_lowercase().contains("forbidden"),
        "{}",
        other.stderr
    );
    assert!(as_node(&["get", "nodes"]).ok, "nodes see the other nodes");
    // Tokens only for its pods' accounts, bound to its pods.
    let t = as_node(&[
        "create",
        "token",
        "default",
        "-n",
        "shop",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "web",
    ]);
    assert!(t.ok, "{}", t.stderr);
    let unbound = as_node(&["create", "token", "default", "-n", "shop"]);
    assert!(
        !unbound.ok && unbound.stderr.to_lowercase().contains("forbidden"),
        "{}",
        unbound.stderr
    );
    Ok(())
}

/// A ClusterRole labelled `aggregate-to-view` extends `view` (and through it
/// `edit` and `admin`), as an operator extends them for its resources; a
/// user bound to `view` may then do what it adds (here: read Secrets, which
/// `view` alone does not).
#[test]
fn aggregated_cluster_roles_take_the_rules_of_labelled_roles() -> Result<()> {
    let (_root, s) = single_server()?;
    s.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: secret-viewer\n  labels:\n    rbac.authorization.k8s.io/aggregate-to-view: \"true\"\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [get, list, watch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: jane-views\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: jane}\n",
    );
    let can = |verb: &str| {
        let r = s.kubectl(&["auth", "can-i", verb, "secrets", "--as", "jane"]);
        r.stdout.trim().ends_with("yes")
    };
    for role in ["view", "edit", "admin"] {
        let got = eventually(Duration::from_secs(15), || {
            let rules = s.k(&[
                "get",
                "clusterrole",
                role,
                "-o",
                "jsonpath={.rules[*].resources}",
            ]);
            rules.contains("\"secrets\"").then_some(())
        });
        assert!(got.is_some(), "{role} aggregates the secret rules");
    }
    assert!(
        eventually(Duration::from_secs(10), || can("list").then_some(())).is_some(),
        "jane may list secrets through view"
    );
    assert!(!can("delete"), "but not delete them");
    // Taking the label away takes the rules away again.
    s.k(&[
        "label",
        "clusterrole",
        "secret-viewer",
        "rbac.authorization.k8s.io/aggregate-to-view-",
    ]);
    assert!(
        eventually(Duration::from_secs(15), || (!can("list")).then_some(())).is_some(),
        "view drops the rules again"
    );
    Ok(())
}

/// `kubectl` with its own kubeconfig `kc` (no token): the output.
fn kubectl_as(kc: &std::path::Path, args: &[&str]) -> common::Kubectl {
    let out = std::process::Command::new(common::kubectl_path())
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .output()
        .expect("kubectl runs");
    common::Kubectl {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A key and certificate signing request made with openssl for `subject`.
fn openssl_request(dir: &std::path::Path, name: &str, subject: &str) -> Result<String> {
    let (key, csr) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .args(["-subj", subject])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.encode(std::fs::read(&csr)?))
}

fn csr_manifest(name: &str, request: &str) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400\n  usages: [client auth]\n"
    )
}

/// The Kubernetes way to a client certificate: openssl makes a key and a
/// request, `kubectl certificate approve` approves it, the cluster signs it;
/// kubectl with that certificate alone is user CN in group O (`auth
/// whoami`), and RBAC decides for that user. A denied request is never
/// signed.
#[test]
fn a_client_certificate_from_an_approved_request_authenticates_its_user() -> Result<()> {
    let (root, s) = single_server()?;
    let dir = root.path();
    let request = openssl_request(dir, "jane", "/CN=jane/O=dev")?;
    s.apply(&csr_manifest("jane", &request));
    assert_eq!(
        s.k(&["get", "csr", "jane", "-o", "jsonpath={.spec.username}"])
            .trim(),
        "skiff-admin",
        "the requester is recorded by the API"
    );
    s.k(&["certificate", "approve", "jane"]);
    let cert = eventually(Duration::from_secs(15), || {
        let c = s.k(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]);
        (!c.trim().is_empty()).then(|| c.trim().to_string())
    })
    .expect("the approved request is signed");
    use base64::Engine;
    std::fs::write(
        dir.join("jane.crt"),
        base64::engine::general_purpose::STANDARD.decode(&cert)?,
    )?;

    let kc = dir.join("jane.kubeconfig");
    let ca = s.dir.join("ca.crt");
    for args in [
        vec![
            "config".to_string(),
            "set-cluster".into(),
            "skiff".into(),
            format!("--server=https://{}", s.api),
            format!("--certificate-authority={}", ca.display()),
            "--embed-certs".into(),
        ],
        vec![
            "config".into(),
            "set-credentials".into(),
            "jane".into(),
            format!("--client-certificate={}", dir.join("jane.crt").display()),
            format!("--client-key={}", dir.join("jane.key").display()),
            "--embed-certs".into(),
        ],
        vec![
            "config".into(),
            "set-context".into(),
            "jane".into(),
            "--cluster=skiff".into(),
            "--user=jane".into(),
        ],
        vec!["config".into(), "use-context".into(), "jane".into()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = kubectl_as(&kc, &args);
        assert!(r.ok, "{args:?}: {}", r.stderr);
    }
    let who = kubectl_as(&kc, &["auth", "whoami", "-o", "json"]);
    assert!(who.ok, "{}", who.stderr);
    let who: serde_json::Value = serde_json::from_str(&who.stdout)?;
    assert_eq!(who["status"]["userInfo"]["username"], "jane");
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(
        groups.contains("\"dev\"") && groups.contains("system:authenticated"),
        "{groups}"
    );
    let pods = kubectl_as(&kc, &["get", "pods"]);
    assert!(
        !pods.ok
            && pods
                .stderr
                .contains("User \"jane\" cannot list resource \"pods\""),
        "{}",
        pods.stderr
    );
    s.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: dev-view\n  namespace: default\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: dev}\n",
    );
    let listed = eventually(Duration::from_secs(10), || {
        kubectl_as(&kc, &["get", "pods"]).ok.then_some(())
    });
    assert!(listed.is_some(), "group dev may list pods once bound");

    let request = openssl_request(dir, "mallory", "/CN=system:admin/O=system:masters")?;
    s.apply(&csr_manifest("mallory", &request));
    s.k(&["certificate", "deny", "mallory"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        s.k(&[
            "get",
            "csr",
            "mallory",
            "-o",
            "jsonpath={.status.certificate}"
        ])
        .trim()
        .is_empty(),
        "a denied request is never signed"
    );
    let cond = s.k(&[
        "get",
        "csr",
        "mallory",
        "-o",
        "jsonpath={.status.conditions[0].type}",
    ]);
    assert_eq!(cond.trim(), "Denied");
    Ok(())
}
