//! The audit log: one `audit.k8s.io/v1` Event per API request, as JSON
//! lines, at the level the policy gives it (Kubernetes' `Policy` format:
//! the first rule that matches decides `None`, `Metadata`, `Request` or
//! `RequestResponse`). Without a policy file every request is logged at
//! `Metadata`. Requests that fail authentication are logged too (no user;
//! `apiserver_authentication_failures_total` counts them).
//!
//! **Secret and token bodies are never logged, whatever the policy asks:
//! `secrets`, `serviceaccounts/token` and `tokenreviews` stop at
//! `Metadata`. Events are written by one task in arrival order; a request
//! waits for room in its queue rather than go unlogged.**

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::auth::{Attributes, UserInfo};

/// How much of a request is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "None" => Level::None,
            "Metadata" => Level::Metadata,
            "Request" => Level::Request,
            "RequestResponse" => Level::RequestResponse,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// Errors of reading a policy file.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit policy {path}: {reason}")]
    Policy { path: PathBuf, reason: String },
    #[error("audit log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One rule of a policy.
#[derive(Debug, Clone)]
struct Rule {
    level: Level,
    users: Vec<String>,
    groups: Vec<String>,
    verbs: Vec<String>,
    /// (group, resources, resourceNames); a resource may be `sub/resource`,
    /// `*/sub` or `*`.
    resources: Vec<(String, Vec<String>, Vec<String>)>,
    namespaces: Vec<String>,
    non_resource_urls: Vec<String>,
}

/// An audit policy: its rules in order.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Default for Policy {
    /// Metadata for every request.
    fn default() -> Self {
        Policy {
            rules: vec![Rule {
                level: Level::Metadata,
                users: vec![],
                groups: vec![],
                verbs: vec![],
                resources: vec![],
                namespaces: vec![],
                non_resource_urls: vec![],
            }],
        }
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    crate::model::meta::strings(v.get(key))
}

impl Policy {
    /// Parse a Policy document (YAML or JSON).
    pub fn parse(text: &str) -> Result<Policy, String> {
        let doc: Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        if doc.get("kind").and_then(Value::as_str) != Some("Policy") {
            return Err("not an audit.k8s.io Policy (kind: Policy)".into());
        }
        let mut rules = Vec::new();
        for (i, r) in doc
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let level = r
                .get("level")
                .and_then(Value::as_str)
                .and_then(Level::parse)
                .ok_or_else(|| {
                    format!("rules[{i}].level must be None, Metadata, Request or RequestResponse")
                })?;
            let resources = r
                .get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|g| {
                    (
                        g.get("group")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        strings(g, "resources"),
                        strings(g, "resourceNames"),
                    )
                })
                .collect();
            rules.push(Rule {
                level,
                users: strings(r, "users"),
                groups: strings(r, "userGroups"),
                verbs: strings(r, "verbs"),
                resources,
                namespaces: strings(r, "namespaces"),
                non_resource_urls: strings(r, "nonResourceURLs"),
            });
        }
        Ok(Policy { rules })
    }

    /// Read a policy file.
    pub fn load(path: &Path) -> Result<Policy, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuditError::Policy {
            path: path.into(),
            reason: e.to_string(),
        })?;
        Policy::parse(&text).map_err(|reason| AuditError::Policy {
            path: path.into(),
            reason,
        })
    }

    /// The level of a request (no rule matching: `None`, as Kubernetes).
    pub fn level(&self, user: Option<&UserInfo>, a: &Attributes) -> Level {
        let level = self
            .rules
            .iter()
            .find(|r| rule_matches(r, user, a))
            .map_or(Level::None, |r| r.level);
        if level > Level::Metadata && never_bodies(a) {
            return Level::Metadata;
        }
        level
    }
}

/// Secrets and tokens: their bodies are never logged.
fn never_bodies(a: &Attributes) -> bool {
    match a {
        Attributes::Resource {
            resource,
            subresource,
            ..
        } => {
            resource == "secrets"
                || resource == "tokenreviews"
                || (resource == "serviceaccounts" && subresource.as_deref() == Some("token"))
        }
        Attributes::NonResource { .. } => false,
    }
}

fn rule_matches(r: &Rule, user: Option<&UserInfo>, a: &Attributes) -> bool {
    let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
    if !r.users.is_empty() && !user.is_some_and(|u| r.users.contains(&u.name)) {
        return false;
    }
    if !r.groups.is_empty() && !user.is_some_and(|u| r.groups.iter().any(|g| u.in_group(g))) {
        return false;
    }
    if !any(&r.verbs, a.verb()) {
        return false;
    }
    match a {
        Attributes::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
            ..
        } => {
            if !r.non_resource_urls.is_empty() && r.resources.is_empty() {
                return false;
            }
            if !r.namespaces.is_empty()
                && !r
                    .namespaces
                    .iter()
                    .any(|n| n == namespace.as_deref().unwrap_or(""))
            {
                return false;
            }
            if r.resources.is_empty() {
                return true;
            }
            let full = match subresource {
                Some(s) => format!("{resource}/{s}"),
                None => resource.clone(),
            };
            r.resources.iter().any(|(g, rs, names)| {
                g == group
                    && (rs.is_empty()
                        || rs.iter().any(|x| {
                            x == "*"
                                || *x == full
                                || (subresource.is_none() && x == resource)
                                || x.strip_prefix("*/")
                                    .is_some_and(|s| subresource.as_deref() == Some(s))
                                || x.strip_suffix("/*")
                                    .is_some_and(|p| p == resource && subresource.is_some())
                        }))
                    && (names.is_empty() || name.as_ref().is_some_and(|n| names.contains(n)))
            })
        }
        Attributes::NonResource { path, .. } => {
            if !r.resources.is_empty() || !r.namespaces.is_empty() {
                return false;
            }
            r.non_resource_urls.is_empty()
                || r.non_resource_urls
                    .iter()
                    .any(|u| match u.strip_suffix('*') {
                        Some(prefix) => path.starts_with(prefix),
                        None => u == path,
                    })
        }
    }
}

/// Annotations a handler leaves on its response for the request's audit
/// event (Pod Security's `pod-security.kubernetes.io/*`).
#[derive(Debug, Clone, Default)]
pub struct Annotations(pub Vec<(String, String)>);

/// What one request's event is built from.
pub struct Entry<'a> {
    pub id: String,
    pub level: Level,
    pub uri: &'a str,
    pub attrs: &'a Attributes,
    /// The authenticated user (`None`: authentication failed).
    pub user: Option<&'a UserInfo>,
    /// The user acted as, when it differs from `user`.
    pub impersonated: Option<&'a UserInfo>,
    pub source: Option<std::net::SocketAddr>,
    pub user_agent: Option<&'a str>,
    pub code: u16,
    pub received: jiff::Timestamp,
    pub request: Option<Value>,
    pub response: Option<Value>,
    pub annotations: Vec<(String, String)>,
}

fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Entry<'_> {
    /// The `audit.k8s.io/v1` Event.
    pub fn event(&self) -> Value {
        let mut e = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": self.level.name(),
            "auditID": self.id,
            "stage": "ResponseComplete",
            "requestURI": self.uri,
            "verb": self.attrs.verb(),
            "user": self.user.map_or(json!({}), UserInfo::to_json),
            "sourceIPs": self.source.map(|s| vec![s.ip().to_string()]).unwrap_or_default(),
            "responseStatus": {"metadata": {}, "code": self.code},
            "requestReceivedTimestamp": stamp(self.received),
            "stageTimestamp": stamp(jiff::Timestamp::now()),
        });
        if let Some(i) = self.impersonated {
            e["impersonatedUser"] = i.to_json();
        }
        if !self.annotations.is_empty() {
            e["annotations"] = self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<String, Value>>()
                .into();
        }
        if let Some(ua) = self.user_agent {
            e["userAgent"] = json!(ua);
        }
        if let Attributes::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
            ..
        } = self.attrs
        {
            let mut o = json!({"resource": resource, "apiGroup": group});
            if let Some(s) = subresource {
                o["subresource"] = json!(s);
            }
            if let Some(n) = namespace {
                o["namespace"] = json!(n);
            }
            if let Some(n) = name {
                o["name"] = json!(n);
            }
            e["objectRef"] = o;
        }
        if let Some(r) = &self.request {
            e["requestObject"] = r.clone();
        }
        if let Some(r) = &self.response {
            e["responseObject"] = r.clone();
        }
        e
    }
}

/// Where events go: a file (rotated at `max_bytes`, `backups` kept) or
/// standard output (`-`).
#[derive(Debug, Clone)]
pub struct Sink {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub backups: usize,
}

/// The audit log of one server.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Value>,
    pub policy: Arc<Policy>,
}

impl Auditor {
    /// Start the writer task.
    pub fn start(sink: Sink, policy: Policy) -> Result<Auditor, AuditError> {
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer::open(sink)?;
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| AuditError::Log {
                path: "audit-log thread".into(),
                source,
            })?;
        Ok(Auditor {
            tx,
            policy: Arc::new(policy),
        })
    }

    /// Log one request (waits while the queue is full).
    pub async fn record(&self, entry: &Entry<'_>) {
        if entry.level == Level::None {
            return;
        }
        let _ = self.tx.send(entry.event()).await;
    }
}

/// The writing end: a file it appends to and rotates.
struct Writer {
    sink: Sink,
    out: Box<dyn Write + Send>,
    written: u64,
}

impl Writer {
    fn open(sink: Sink) -> Result<Writer, AuditError> {
        let err = |source| AuditError::Log {
            path: sink.path.clone(),
            source,
        };
        if sink.path == Path::new("-") {
            return Ok(Writer {
                out: Box::new(std::io::stdout()),
                written: 0,
                sink,
            });
        }
        if let Some(dir) = sink.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = open_private(&sink.path).map_err(err)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Writer {
            out: Box::new(std::io::BufWriter::new(file)),
            written,
            sink,
        })
    }

    fn run(mut self, mut rx: mpsc::Receiver<Value>) {
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(e) = next {
                self.write(&e);
                next = rx.try_recv().ok();
            }
            if let Err(e) = self.out.flush() {
                tracing::warn!(error = %e, "audit log: flush failed");
            }
        }
    }

    fn write(&mut self, event: &Value) {
        let mut line = event.to_string();
        line.push('\n');
        if let Err(e) = self.out.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "audit log: write failed");
            return;
        }
        self.written += line.len() as u64;
        if self.sink.path != Path::new("-") && self.written >= self.sink.max_bytes {
            self.rotate();
        }
    }

    /// `audit.log` -> `audit.log.1` -> ... (the oldest dropped), then a new file.
    fn rotate(&mut self) {
        let _ = self.out.flush();
        let p = &self.sink.path;
        let numbered = |i: usize| PathBuf::from(format!("{}.{i}", p.display()));
        for i in (1..self.sink.backups).rev() {
            let _ = std::fs::rename(numbered(i), numbered(i + 1));
        }
        if self.sink.backups > 0 {
            let _ = std::fs::rename(p, numbered(1));
        } else {
            let _ = std::fs::remove_file(p);
        }
        match open_private(p) {
            Ok(f) => {
                self.out = Box::new(std::io::BufWriter::new(f));
                self.written = 0;
            }
            Err(e) => tracing::warn!(error = %e, "audit log: cannot reopen after rotation"),
        }
    }
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  users: ["system:kube-proxy"]
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["pods", "pods/log", "secrets"]
- level: Request
  verbs: ["create", "update"]
  namespaces: ["prod"]
- level: Metadata
"#;

    #[test]
    fn the_first_matching_rule_decides_and_secrets_stay_metadata() {
        let p = Policy::parse(POLICY).unwrap();
        let alice = UserInfo::new("alice", &[]);
        let proxy = UserInfo::new("system:kube-proxy", &[]);
        let res = |verb: &str, resource: &str, sub: Option<&str>, ns: &str| {
            Attributes::resource(
                verb,
                "",
                resource,
                sub,
                Some(ns).filter(|n| !n.is_empty()),
                None,
            )
        };
        let path = |p: &str| Attributes::path("get", p);
        let cases = [
            (&proxy, res("get", "pods", None, "a"), Level::None),
            (&alice, path("/healthz"), Level::None),
            (&alice, path("/healthz/ready"), Level::None),
            (&alice, path("/version"), Level::None),
            (&alice, path("/metrics"), Level::Metadata),
            (
                &alice,
                res("get", "pods", None, "a"),
                Level::RequestResponse,
            ),
            (
                &alice,
                res("get", "pods", Some("log"), "a"),
                Level::RequestResponse,
            ),
            (
                &alice,
                res("get", "pods", Some("exec"), "a"),
                Level::Metadata,
            ),
            (&alice, res("get", "secrets", None, "a"), Level::Metadata),
            (
                &alice,
                res("create", "configmaps", None, "prod"),
                Level::Request,
            ),
            (
                &alice,
                res("create", "configmaps", None, "dev"),
                Level::Metadata,
            ),
            (
                &alice,
                res("create", "serviceaccounts", Some("token"), "prod"),
                Level::Metadata,
            ),
        ];
        for (u, a, want) in cases {
            assert_eq!(p.level(Some(u), &a), want, "{a:?}");
        }
        assert_eq!(
            Policy::default().level(None, &path("/api")),
            Level::Metadata
        );
        assert!(Policy::parse("kind: Policy\nrules:\n- level: Loud\n").is_err());
        assert!(Policy::parse("kind: ConfigMap\n").is_err());
    }

    #[test]
    fn events_have_kubernetes_shape() {
        let user = UserInfo::new("alice", &["devs"]);
        let a = Attributes::Resource {
            verb: "delete".into(),
            group: "apps".into(),
            resource: "deployments".into(),
            subresource: None,
            namespace: Some("team".into()),
            name: Some("web".into()),
        };
        let e = Entry {
            id: "id-1".into(),
            level: Level::Metadata,
            uri: "/apis/apps/v1/namespaces/team/deployments/web",
            attrs: &a,
            user: Some(&user),
            impersonated: None,
            source: "127.0.0.1:5000".parse().ok(),
            user_agent: Some("kubectl/v1.37.0"),
            code: 200,
            received: jiff::Timestamp::now(),
            request: None,
            response: None,
            annotations: vec![(
                "pod-security.kubernetes.io/enforce-policy".into(),
                "baseline:latest".into(),
            )],
        }
        .event();
        assert_eq!(
            e["annotations"]["pod-security.kubernetes.io/enforce-policy"],
            "baseline:latest"
        );
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(e["verb"], "delete");
        assert_eq!(e["user"]["username"], "alice");
        assert_eq!(e["objectRef"]["resource"], "deployments");
        assert_eq!(e["objectRef"]["apiGroup"], "apps");
        assert_eq!(e["objectRef"]["name"], "web");
        assert_eq!(e["responseStatus"]["code"], 200);
        assert_eq!(e["sourceIPs"][0], "127.0.0.1");
        assert!(e.get("requestObject").is_none());
    }

    #[test]
    fn the_log_rotates_and_keeps_its_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut w = Writer::open(Sink {
            path: path.clone(),
            max_bytes: 200,
            backups: 2,
        })
        .unwrap();
        for i in 0..20 {
            w.write(&json!({"n": i, "pad": "x".repeat(40)}));
        }
        w.out.flush().unwrap();
        assert!(path.with_extension("log.1").exists());
        assert!(path.with_extension("log.2").exists());
        assert!(!path.with_extension("log.3").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
