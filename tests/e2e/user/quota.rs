//! ResourceQuota and LimitRange with the real kubectl: a quota of two pods
//! refuses the third naming the quota, its status follows creates and
//! deletes, compute quotas need requests, and LimitRange fills defaults and
//! refuses what exceeds its bounds.

use crate::common;

use std::time::Duration;

use anyhow::Result;
use common::{Server, eventually, single_server};

fn pod(s: &Server, ns: &str, name: &str, resources: &str) -> common::Kubectl {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  containers:\n  - name: c\n    image: i\n{resources}"
    );
    let f = s.dir.with_extension(format!("{ns}-{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    s.kubectl(&["create", "-f", f.to_str().unwrap()])
}

fn used(s: &Server, ns: &str, quota: &str, res: &str) -> String {
    s.k(&[
        "get",
        "resourcequota",
        "-n",
        ns,
        quota,
        "-o",
        &format!("jsonpath={{.status.used.{}}}", res.replace('.', "\\.")),
    ])
}

#[test]
fn a_quota_of_two_pods_refuses_the_third_and_limit_ranges_fill_defaults() -> Result<()> {
    let (_root, s) = single_server()?;
    s.k(&["create", "namespace", "team"]);
    s.k(&[
        "create",
        "quota",
        "two-pods",
        "-n",
        "team",
        "--hard=pods=2,count/configmaps=5",
    ]);
    assert!(pod(&s, "team", "a", "").ok);
    assert!(pod(&s, "team", "b", "").ok);
    let r = pod(&s, "team", "c", "");
    assert!(!r.ok, "a third pod was admitted");
    assert!(
        r.stderr.contains("(Forbidden)")
            && r.stderr.contains(
                "exceeded quota: two-pods, requested: pods=1, used: pods=2, limited: pods=2"
            ),
        "{}",
        r.stderr
    );
    assert!(s.not_found(&["pod", "-n", "team", "c"]));
    // A server-side dry run is judged the same way.
    let f = s.dir.with_extension("dry.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: d\n  namespace: team\nspec:\n  containers:\n  - name: c\n    image: i\n",
    )?;
    let r = s.kubectl(&[
        "create",
        "--dry-run=server",
        "-f",
        f.to_str().unwrap_or_default(),
    ]);
    assert!(
        !r.ok && r.stderr.contains("exceeded quota: two-pods"),
        "{}",
        r.stderr
    );
    let two = eventually(Duration::from_secs(20), || {
        (used(&s, "team", "two-pods", "pods") == "2").then_some(())
    });
    assert!(two.is_some(), "status.used.pods never said 2");
    // A deleted pod frees its unit (the controller recounts).
    s.k(&["delete", "pod", "-n", "team", "a", "--wait=false"]);
    let one = eventually(Duration::from_secs(30), || {
        (used(&s, "team", "two-pods", "pods") == "1").then_some(())
    });
    assert!(one.is_some(), "status.used.pods never went back to 1");
    assert!(pod(&s, "team", "c", "").ok);
    // `kubectl describe quota` reads the status.
    let d = s.k(&["describe", "quota", "-n", "team", "two-pods"]);
    assert!(d.contains("pods") && d.contains("count/configmaps"), "{d}");

    // A compute quota needs every container to say what it asks for.
    s.k(&["create", "namespace", "compute"]);
    s.k(&[
        "create",
        "quota",
        "cpu",
        "-n",
        "compute",
        "--hard=requests.cpu=1,limits.memory=1Gi",
    ]);
    let r = pod(&s, "compute", "bare", "");
    assert!(
        !r.ok && r.stderr.contains("failed quota: cpu: must specify"),
        "{}",
        r.stderr
    );
    let sized = "    resources:\n      requests: {cpu: 600m}\n      limits: {memory: 512Mi}\n";
    assert!(pod(&s, "compute", "one", sized).ok);
    let r = pod(&s, "compute", "two", sized);
    assert!(
        !r.ok && r.stderr.contains("exceeded quota: cpu") && r.stderr.contains("requests.cpu=600m"),
        "{}",
        r.stderr
    );

    // LimitRange: defaults filled, bounds enforced.
    s.k(&["create", "namespace", "ranged"]);
    s.apply("apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: bounds\n  namespace: ranged\nspec:\n  limits:\n  - type: Container\n    default: {memory: 256Mi, cpu: 500m}\n    defaultRequest: {memory: 128Mi}\n    max: {memory: 1Gi}\n");
    assert!(pod(&s, "ranged", "defaulted", "").ok);
    let p = s.json(&["pod", "-n", "ranged", "defaulted"]);
    let res = &p["spec"]["containers"][0]["resources"];
    assert_eq!(res["limits"]["memory"], "256Mi", "{res}");
    assert_eq!(res["requests"]["memory"], "128Mi", "{res}");
    assert_eq!(res["requests"]["cpu"], "500m", "{res}");
    let r = pod(
        &s,
        "ranged",
        "huge",
        "    resources:\n      limits: {memory: 2Gi}\n",
    );
    assert!(
        !r.ok
            && r.stderr
                .contains("maximum memory usage per Container is 1Gi, but limit is 2Gi"),
        "{}",
        r.stderr
    );
    Ok(())
}

#[test]
fn an_update_is_charged_what_it_adds() -> Result<()> {
    let (_root, s) = single_server()?;
    s.k(&["create", "namespace", "svc"]);
    s.k(&[
        "create",
        "quota",
        "ports",
        "-n",
        "svc",
        "--hard=services.nodeports=1",
    ]);
    s.k(&[
        "create",
        "service",
        "nodeport",
        "open",
        "-n",
        "svc",
        "--tcp=80:8080",
    ]);
    s.k(&[
        "create",
        "service",
        "clusterip",
        "inner",
        "-n",
        "svc",
        "--tcp=80:8080",
    ]);
    let charged = eventually(Duration::from_secs(10), || {
        (used(&s, "svc", "ports", "services.nodeports") == "1").then_some(())
    });
    assert!(charged.is_some(), "the NodePort Service is counted");
    // Turning the ClusterIP Service into a NodePort one would take a second
    // node port: refused naming the quota, and the Service is unchanged.
    let r = s.kubectl(&[
        "patch",
        "service",
        "inner",
        "-n",
        "svc",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    assert!(
        !r.ok
            && r.stderr.contains("(Forbidden)")
            && r.stderr.contains("exceeded quota: ports")
            && r.stderr.contains("requested: services.nodeports=1"),
        "{}",
        r.stderr
    );
    let ty = s.k(&[
        "get",
        "service",
        "inner",
        "-n",
        "svc",
        "-o",
        "jsonpath={.spec.type}",
    ]);
    assert_eq!(ty, "ClusterIP");
    // An update that adds nothing is not judged (a label), and once the
    // first Service gives its port back, the change goes through.
    s.k(&["label", "service", "inner", "-n", "svc", "tier=db"]);
    s.k(&["delete", "service", "open", "-n", "svc"]);
    let freed = eventually(Duration::from_secs(20), || {
        (used(&s, "svc", "ports", "services.nodeports") == "0").then_some(())
    });
    assert!(freed.is_some(), "the quota controller recounts");
    s.k(&[
        "patch",
        "service",
        "inner",
        "-n",
        "svc",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    Ok(())
}
