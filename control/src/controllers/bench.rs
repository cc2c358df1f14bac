//! Benchmark support: the ReplicaSet controller's steady-state reconcile over
//! a large synthetic cache, with no API behind it (every set already matches
//! its pods, so a reconcile that tried to write would fail the run).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};

use super::framework::{ControllerError, Expectations, Informer, Key, Reconciler};
use super::podutil::controller_ref;
use super::replicaset::ReplicaSets;

/// A client whose every request fails: a benchmark or test must not reach an API.
pub fn no_api() -> Client {
    let svc = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, std::io::Error>(std::io::Error::other(
            "no API in this benchmark",
        ))
    });
    Client::new(svc, "default")
}

fn labels(set: usize) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), format!("bench-{set}"))])
}

/// `sets` ReplicaSets of `per_set` ready pods each, in one namespace.
fn world(sets: usize, per_set: usize) -> (Vec<ReplicaSet>, Vec<Pod>) {
    let ready_at = Time(Timestamp::now() - Duration::from_secs(60));
    let mut rss = Vec::new();
    let mut pods = Vec::new();
    for i in 0..sets {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("rs-{i}")),
                namespace: Some("bench".into()),
                uid: Some(format!("uid-rs-{i}")),
                generation: Some(1),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(per_set as i32),
                selector: LabelSelector {
                    match_labels: Some(labels(i)),
                    match_expressions: None,
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(i)),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                min_ready_seconds: None,
            },
            status: Some(ReplicaSetStatus {
                replicas: per_set as i32,
                fully_labeled_replicas: Some(per_set as i32),
                ready_replicas: Some(per_set as i32),
                available_replicas: Some(per_set as i32),
                terminating_replicas: Some(0),
                observed_generation: Some(1),
                conditions: None,
            }),
        };
        for j in 0..per_set {
            pods.push(Pod {
                metadata: ObjectMeta {
                    name: Some(format!("rs-{i}-{j}")),
                    namespace: Some("bench".into()),
                    uid: Some(format!("uid-pod-{i}-{j}")),
                    labels: Some(labels(i)),
                    owner_references: Some(vec![controller_ref(&rs)]),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    node_name: Some("node".into()),
                    ..Default::default()
                }),
                status: Some(PodStatus {
                    phase: Some("Running".into()),
                    conditions: Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(ready_at.clone()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            });
        }
        rss.push(rs);
    }
    (rss, pods)
}

/// Reconcile every set `passes` times; returns the reconciles done and the time taken.
pub async fn replicaset_reconcile(
    sets: usize,
    per_set: usize,
    passes: usize,
) -> Result<(usize, Duration), ControllerError> {
    let (rss, pods) = world(sets, per_set);
    reconcile_world(rss, pods, passes).await
}

/// Reconcile every set of a seeded cache `passes` times, with no API behind
/// the client (any request fails the reconcile).
async fn reconcile_world(
    rss: Vec<ReplicaSet>,
    pods: Vec<Pod>,
    passes: usize,
) -> Result<(usize, Duration), ControllerError> {
    let client = no_api();
    let set_cache = Informer::new(Api::<ReplicaSet>::all(client.clone()));
    let pod_cache = Informer::new(Api::<Pod>::all(client.clone()));
    set_cache.seed(rss);
    pod_cache.seed(pods);
    let rc = Arc::new(ReplicaSets {
        client,
        sets: set_cache.clone(),
        pods: pod_cache,
        expectations: Expectations::default(),
    });
    let keys: Vec<Key> = set_cache
        .list("")
        .iter()
        .map(|r| Key::of(r.as_ref()))
        .collect();
    let start = Instant::now();
    let mut n = 0;
    for _ in 0..passes {
        for k in &keys {
            rc.reconcile(k).await?;
            n += 1;
        }
    }
    Ok((n, start.elapsed()))
}

#[cfg(test)]
mod tests {
    /// Behind the benchmark's client every request fails, so a reconcile that
    /// succeeds made no request.
    #[tokio::test]
    async fn a_matched_world_reconciles_without_writes() {
        let (rss, pods) = super::world(3, 5);
        super::reconcile_world(rss, pods, 2).await.unwrap();
    }

    /// The same world one pod short needs a create: the reconcile reaches for
    /// the API, so the benchmark would notice a world that is not steady.
    #[tokio::test]
    async fn a_set_one_pod_short_reaches_for_the_api() {
        let (rss, mut pods) = super::world(3, 5);
        pods.pop();
        let err = super::reconcile_world(rss, pods, 1).await.unwrap_err();
        assert!(err.to_string().contains("no API"), "{err}");
    }
}
