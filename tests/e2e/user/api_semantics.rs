//! REST semantics a Kubernetes client relies on, checked over HTTPS: paging,
//! optimistic concurrency, generation, dry run, field validation warnings,
//! deletecollection, and watch resume / expiry / bookmarks.

use crate::common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::Result;
use common::Server;
use serde_json::{Value, json};

struct Api {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(s: &Server) -> Api {
        let token = s.admin_token();
        Api {
            http: s.http(),
            base: s.url(),
            token,
        }
    }
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send()?;
        let code = resp.status().as_u16();
        let headers = resp.headers().clone();
        Ok((code, headers, resp.json().unwrap_or(Value::Null)))
    }
    fn post(&self, path: &str, body: Value) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
        self.send(reqwest::Method::POST, path, Some(body))
    }
    fn get(&self, path: &str) -> Result<(u16, Value)> {
        let (c, _, v) = self.send(reqwest::Method::GET, path, None)?;
        Ok((c, v))
    }
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": name}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn start(extra: &[&str]) -> Result<(tempfile::TempDir, Server)> {
    let root = tempfile::tempdir()?;
    let mut s = Server::new(&root.path().join("s"), extra);
    s.start()?;
    s.wait_ready(Duration::from_secs(20))?;
    // The controllers add `kube-root-ca.crt` to `default` at start: let that
    // land first, so the tests' ConfigMap watches see only their own.
    common::eventually(Duration::from_secs(20), || {
        s.kubectl(&["get", "configmap", "kube-root-ca.crt"])
            .ok
            .then_some(())
    })
    .ok_or_else(|| anyhow::anyhow!("no kube-root-ca.crt in default"))?;
    Ok((root, s))
}

#[test]
fn paging_concurrency_generation_dry_run_warnings_deletecollection() -> Result<()> {
    let (_root, s) = start(&[])?;
    let api = Api::new(&s);
    for i in 0..5 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        assert_eq!(
            api.post(CMS, cm(&format!("c{i}"), json!({"tier": tier})))?
                .0,
            201
        );
    }
    // limit/continue pages through everything exactly once.
    let mut names = Vec::new();
    let mut cont = String::new();
    loop {
        let (code, page) = api.get(&format!("{CMS}?limit=2&continue={cont}"))?;
        assert_eq!(code, 200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        names.extend(
            items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    // Every namespace also has the cluster's CA bundle.
    names.retain(|n| n != "kube-root-ca.crt");
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);

    // A stale resourceVersion on update is a 409 Conflict.
    let (_, obj) = api.get(&format!("{CMS}/c0"))?;
    let mut v1 = obj.clone();
    v1["data"]["k"] = json!("new");
    let (code, _, _) = api.send(reqwest::Method::PUT, &format!("{CMS}/c0"), Some(v1))?;
    assert_eq!(code, 200);
    let mut stale = obj.clone();
    stale["data"]["k"] = json!("stale");
    let (code, _, st) = api.send(reqwest::Method::PUT, &format!("{CMS}/c0"), Some(stale))?;
    assert_eq!((code, st["reason"].as_str()), (409, Some("Conflict")));

    // generation moves with the spec, not with metadata.
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let (code, _, created) = api.post(deps, dep)?;
    assert_eq!(
        (code, created["metadata"]["generation"].as_i64()),
        (201, Some(1))
    );
    let merge = |body: Value| -> Result<Value> {
        let r = api
            .http
            .patch(format!("{}{deps}/d", api.base))
            .bearer_auth(&api.token)
            .header("Content-Type", "application/merge-patch+json")
            .body(body.to_string())
            .send()?;
        assert_eq!(r.status().as_u16(), 200);
        Ok(r.json()?)
    };
    assert_eq!(
        merge(json!({"metadata": {"labels": {"x": "y"}}}))?["metadata"]["generation"],
        1
    );
    assert_eq!(
        merge(json!({"spec": {"replicas": 3}}))?["metadata"]["generation"],
        2
    );

    // dryRun=All answers as if created but stores nothing.
    let (code, _, _) = api.post(&format!("{CMS}?dryRun=All"), cm("dry", json!({})))?;
    assert_eq!(code, 201);
    assert_eq!(api.get(&format!("{CMS}/dry"))?.0, 404);

    // fieldValidation=Warn keeps the object and says why in a Warning header.
    let mut odd = cm("warned", json!({}));
    odd["extra"] = json!(1);
    let (code, headers, _) = api.post(&format!("{CMS}?fieldValidation=Warn"), odd.clone())?;
    assert_eq!(code, 201);
    let warning = headers
        .get("warning")
        .map(|w| w.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        warning.starts_with("299 - ") && warning.contains("unknown field \\\"extra\\\""),
        "{warning}"
    );
    odd["metadata"]["name"] = json!("strict");
    let (code, _, st) = api.post(&format!("{CMS}?fieldValidation=Strict"), odd)?;
    assert_eq!((code, st["reason"].as_str()), (400, Some("BadRequest")));

    // deletecollection honours the label selector.
    let (code, _, _) = api.send(
        reqwest::Method::DELETE,
        &format!("{CMS}?labelSelector=tier%3Deven"),
        None,
    )?;
    assert_eq!(code, 200);
    let (_, left) = api.get(&format!("{CMS}?labelSelector=tier"))?;
    let left: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["c1", "c3"]);
    Ok(())
}

/// Read NDJSON watch events from a streaming response until `n` arrived.
fn events(resp: reqwest::blocking::Response, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for line in BufReader::new(resp).lines() {
        let Ok(line) = line else { break };
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            out.push(v);
        }
        if out.len() >= n {
            break;
        }
    }
    out
}

#[test]
fn watch_resumes_expires_and_bookmarks() -> Result<()> {
    let (_root, s) = start(&["--watch-history", "8"])?;
    let api = Api::new(&s);
    let (_, _, first) = api.post(CMS, cm("w0", json!({})))?;
    let rv: u64 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()?;
    api.post(CMS, cm("w1", json!({})))?;
    api.send(reqwest::Method::DELETE, &format!("{CMS}/w0"), None)?;
    // Resume from a revision: exactly the later changes, in order.
    let resp = api
        .http
        .get(format!("{}{CMS}?watch=true&resourceVersion={rv}", api.base))
        .bearer_auth(&api.token)
        .send()?;
    let evs = events(resp, 2);
    let kinds: Vec<(&str, &str)> = evs
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, [("ADDED", "w1"), ("DELETED", "w0")]);
    // Push the first revision out of the (8-event) history: 410 Gone / Expired.
    for i in 0..20 {
        api.post(CMS, cm(&format!("x{i}"), json!({})))?;
    }
    let resp = api
        .http
        .get(format!("{}{CMS}?watch=true&resourceVersion={rv}", api.base))
        .bearer_auth(&api.token)
        .send()?;
    let evs = events(resp, 1);
    assert_eq!(evs[0]["type"], "ERROR");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Expired");
    // An idle watch with bookmarks gets one carrying the current revision.
    let (_, list) = api.get(CMS)?;
    let now = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = api
        .http
        .get(format!(
            "{}{CMS}?watch=true&allowWatchBookmarks=true&resourceVersion={now}&timeoutSeconds=20",
            api.base
        ))
        .bearer_auth(&api.token)
        .timeout(Duration::from_secs(25))
        .send()?;
    let evs = events(resp, 1);
    assert_eq!(evs[0]["type"], "BOOKMARK");
    assert!(
        evs[0]["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()?
            >= now.parse::<u64>()?
    );
    Ok(())
}
