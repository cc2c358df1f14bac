//! The API server's `GET /metrics` (Prometheus text format): request counts and
//! latencies by verb, resource and code (one middleware over every route), the
//! local Raft replica's state, and pods per phase listed at scrape time.
//!
//! **A request is observed when its response head is ready, so a watch counts
//! once, for the time it took to start streaming.** **The `resource` label is
//! only ever a registered plural (else ""), so made-up paths cannot grow the
//! number of series.**

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use skiff_common::prom::{self, CounterVec, GaugeVec, HistogramVec, Registry};

use crate::store::Store;

use super::ApiState;
use crate::model::selector::{FieldSelector, LabelSelector};

/// Kubernetes' `apiserver_request_duration_seconds` buckets.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Pod phases always reported, at 0 when no pod is in them.
const PHASES: &[&str] = &["Pending", "Running", "Succeeded", "Failed", "Unknown"];

/// The server's metrics, built once per [`ApiState`].
pub struct Metrics {
    registry: Registry,
    /// Requests refused for want of a valid credential, by reason.
    pub authn_failures: Arc<CounterVec>,
    durations: Arc<HistogramVec>,
    requests: Arc<CounterVec>,
    pods: Arc<GaugeVec>,
    certificates: Arc<GaugeVec>,
    plurals: BTreeSet<&'static str>,
}

impl Metrics {
    pub fn new(store: &Store, types: &crate::model::Registry) -> Metrics {
        let registry = Registry::new();
        let durations = registry.histogram_vec(
            "apiserver_request_duration_seconds",
            "Response latency (to the response head) by verb, resource and HTTP code.",
            &["verb", "resource", "code"],
            REQUEST_BUCKETS,
        );
        let requests = registry.counter_vec(
            "apiserver_request_total",
            "Requests by verb, resource and HTTP code.",
            &["verb", "resource", "code"],
        );
        let raft = |name: &str, help: &str, f: fn(&crate::store::ReplicaStatus) -> f64| {
            let store = store.clone();
            registry.gauge_fn(name, help, &[], move || vec![(vec![], f(&store.status()))]);
        };
        raft("skiff_raft_term", "Current Raft term.", |s| s.term as f64);
        raft(
            "skiff_raft_commit_index",
            "Highest Raft log index known committed.",
            |s| s.commit as f64,
        );
        raft(
            "skiff_raft_applied_index",
            "Highest Raft log index applied to the local state machine.",
            |s| s.applied as f64,
        );
        raft(
            "skiff_raft_is_leader",
            "1 if this server is the Raft leader, else 0.",
            |s| f64::from(u8::from(s.leader_id != 0 && s.leader_id == s.id)),
        );
        raft(
            "skiff_raft_voters",
            "Voting members of the Raft group.",
            |s| s.voters.len() as f64,
        );
        let pods = registry.gauge_vec(
            "skiff_pods",
            "Pods by status.phase, listed at scrape time.",
            &["phase"],
        );
        let authn_failures = registry.counter_vec(
            "apiserver_authentication_failures_total",
            "Requests refused for want of a valid credential (no_credential, invalid).",
            &["reason"],
        );
        let certificates = registry.gauge_vec(
            "skiff_certificate_expiration_timestamp_seconds",
            "When this server's certificates expire (Unix time): the cluster CA, the API serving, the client (to agents) and the Raft peer certificate; renewed ones at two thirds of their validity.",
            &["certificate"],
        );
        Metrics {
            registry,
            certificates,
            authn_failures,
            durations,
            requests,
            pods,
            plurals: types.all().iter().map(|t| t.plural).collect(),
        }
    }

    /// Record when certificate `name` (ca, serving, peer) expires.
    pub fn set_certificate_expiry(&self, name: &str, unix_secs: f64) {
        self.certificates.with_label_values(&[name]).set(unix_secs);
    }

    fn observe(&self, verb: &str, resource: &str, code: &str, started: Instant) {
        let labels = [verb, resource, code];
        self.requests.with_label_values(&labels).inc();
        self.durations
            .with_label_values(&labels)
            .observe_duration(started.elapsed());
    }

    /// Recount pods per phase; on a failed list the family is left empty.
    async fn count_pods(&self, objects: &crate::storage::Objects) {
        let Some(t) = objects.registry.lookup("", "v1", "pods") else {
            return;
        };
        let listed = objects
            .list(
                t,
                None,
                &LabelSelector::default(),
                &FieldSelector::default(),
                None,
                None,
            )
            .await;
        let pods = match listed {
            Ok((pods, _, _)) => pods,
            Err(e) => {
                tracing::warn!(error = %e.message, "metrics: listing pods failed");
                self.pods.set_all([]);
                return;
            }
        };
        let mut by_phase: BTreeMap<String, f64> =
            PHASES.iter().map(|p| (p.to_string(), 0.0)).collect();
        for pod in &pods {
            let phase = pod
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Pending");
            *by_phase.entry(phase.to_string()).or_default() += 1.0;
        }
        self.pods
            .set_all(by_phase.into_iter().map(|(p, n)| (vec![p], n)));
    }
}

/// `GET /metrics`.
pub async fn metrics(State(s): State<ApiState>) -> Response {
    s.metrics.count_pods(&s.rest.objects).await;
    (
        [(header::CONTENT_TYPE, prom::CONTENT_TYPE)],
        s.metrics.registry.render(),
    )
        .into_response()
}

/// Middleware over every route: count and time each request.
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let apply = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"));
    let (verb, plural) = classify(req.method(), req.uri().path(), req.uri().query(), apply);
    let resource = resource_label(&m.plurals, plural);
    let resp = next.run(req).await;
    m.observe(verb, resource, resp.status().as_str(), started);
    resp
}

/// The Kubernetes verb and the resource plural ("" outside the REST API) of a
/// request. `apply` is whether the body is an apply patch.
pub fn classify<'a>(
    method: &Method,
    path: &'a str,
    query: Option<&str>,
    apply: bool,
) -> (&'static str, &'a str) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => &[][..],
    };
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (resource, named) = match rest {
        [] => return (plain_verb(method), ""),
        [plural] => (*plural, false),
        ["namespaces", _, "status" | "finalize"] => ("namespaces", true),
        ["namespaces", _, plural] => (*plural, false),
        ["namespaces", _, plural, _, ..] => (*plural, true),
        [plural, _, ..] => (*plural, true),
    };
    let verb = match *method {
        Method::GET | Method::HEAD if legacy_watch || watch_query(query) => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH if apply => "apply",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        ref m => plain_verb(m),
    };
    (verb, resource)
}

/// The `resource` label of a plural from a path: itself if registered, else "".
fn resource_label(plurals: &BTreeSet<&'static str>, plural: &str) -> &'static str {
    plurals.get(plural).copied().unwrap_or("")
}

/// `watch=true`, `watch=1` or a bare `watch`.
fn watch_query(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k == "watch" && !matches!(v, "false" | "0")
    })
}

/// The verb of a request outside the resource API: its method, lowercase.
fn plain_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::HEAD => "head",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Method, path, query, apply patch → (verb, resource).
    type Case = (
        Method,
        &'static str,
        Option<&'static str>,
        bool,
        (&'static str, &'static str),
    );

    #[test]
    fn verbs_and_resources() {
        let cases: &[Case] = &[
            (Method::GET, "/api/v1/pods", None, false, ("list", "pods")),
            (
                Method::GET,
                "/api/v1/pods",
                Some("watch=true&rv=1"),
                false,
                ("watch", "pods"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods",
                Some("watch"),
                false,
                ("watch", "pods"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods",
                Some("watch=false"),
                false,
                ("list", "pods"),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/d/pods",
                None,
                false,
                ("watch", "pods"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p",
                None,
                false,
                ("get", "pods"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p/log",
                None,
                false,
                ("get", "pods"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                None,
                false,
                ("list", "namespaces"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d",
                None,
                false,
                ("get", "namespaces"),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/d/finalize",
                None,
                false,
                ("update", "namespaces"),
            ),
            (
                Method::GET,
                "/api/v1/nodes/n1",
                None,
                false,
                ("get", "nodes"),
            ),
            (
                Method::POST,
                "/apis/apps/v1/namespaces/d/deployments",
                None,
                false,
                ("create", "deployments"),
            ),
            (
                Method::PUT,
                "/apis/apps/v1/namespaces/d/deployments/x/scale",
                None,
                false,
                ("update", "deployments"),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/x",
                None,
                false,
                ("patch", "deployments"),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/x",
                None,
                true,
                ("apply", "deployments"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/pods/p",
                None,
                false,
                ("delete", "pods"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/pods",
                None,
                false,
                ("deletecollection", "pods"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/d/pods/p/binding",
                None,
                false,
                ("create", "pods"),
            ),
            (Method::GET, "/api/v1", None, false, ("get", "")),
            (Method::GET, "/apis/apps", None, false, ("get", "")),
            (Method::GET, "/apis", None, false, ("get", "")),
            (Method::GET, "/metrics", None, false, ("get", "")),
            (Method::POST, "/skiff/v0/join", None, false, ("post", "")),
            (
                Method::PUT,
                "/v2/img/blobs/uploads/1",
                None,
                false,
                ("put", ""),
            ),
        ];
        for (method, path, query, apply, want) in cases {
            assert_eq!(
                classify(method, path, *query, *apply),
                *want,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn only_registered_plurals_are_labels() {
        let types = crate::model::Registry::builtin();
        let plurals: BTreeSet<&'static str> = types.all().iter().map(|t| t.plural).collect();
        let label = |p: &str| resource_label(&plurals, p);
        assert_eq!(label("pods"), "pods");
        assert_eq!(label("deployments"), "deployments");
        assert_eq!(label("made-up"), "");
    }
}
