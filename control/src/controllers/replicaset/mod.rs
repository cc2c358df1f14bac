//! The ReplicaSet controller: keeps `spec.replicas` active pods made from the
//! template, adopts matching orphans, releases owned pods that stop matching,
//! and reports replicas, fullyLabeled, ready and available counts.
//!
//! **Pods are created or deleted only when the cache shows every earlier write
//! of this ReplicaSet (expectations), so a slow cache never doubles them.**

use crate::controllers::registration::all_keys;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use crate::controllers::framework::{
    Action, Controller, Expectations, Informer, Key, Queue, Reconciler, Result,
};
use crate::controllers::owners::{claim, delete_exact};
use crate::controllers::podutil::{
    active, available, controller_ref, generate_prefix, pod_from_template, ready, selector_matches,
    terminating, until_available,
};

pub mod plan;

pub struct ReplicaSets {
    pub client: Client,
    pub sets: Arc<Informer<ReplicaSet>>,
    pub pods: Arc<Informer<Pod>>,
    pub expectations: Expectations,
}

impl ReplicaSets {
    /// Wire the informers to `queue`: a set's own changes, and pod changes to the
    /// set that controls (or could adopt) the pod.
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.sets
            .on(crate::controllers::framework::enqueue_self(queue));
        self.pods.on(crate::controllers::owners::enqueue_owners(
            queue,
            &self.sets,
            "ReplicaSet",
            |o: &ReplicaSet| &o.spec.selector,
        ));
    }

    fn pods_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Create or delete pods so `active` becomes `want` (see `plan`); returns
    /// the uids of the pods it deleted.
    async fn manage(
        &self,
        rs: &ReplicaSet,
        key: &Key,
        active: Vec<Arc<Pod>>,
        want: usize,
    ) -> Result<Vec<String>> {
        let p = plan::plan(want, active);
        if p.create > 0 {
            let Some(template) = rs.spec.template.clone() else {
                return Err(crate::controllers::framework::ControllerError::Invalid(
                    "no pod template".into(),
                ));
            };
            let pod = pod_from_template(
                &template,
                &key.ns,
                Some(generate_prefix(&key.name)),
                None,
                controller_ref(rs),
            );
            create_in_batches(p.create, |_| {
                let pod = pod.clone();
                async move {
                    let made = self
                        .pods_api(&key.ns)
                        .create(&PostParams::default(), &pod)
                        .await?;
                    self.expectations.created(key, &made.name_any());
                    Ok(())
                }
            })
            .await?;
        }
        let deletes = p.delete.iter().map(|p| async move {
            self.expectations.deleted(key, &p.uid().unwrap_or_default());
            delete_exact(&self.pods_api(&key.ns), p.as_ref(), None).await
        });
        for r in futures::future::join_all(deletes).await {
            r?;
        }
        Ok(p.delete
            .iter()
            .map(|p| p.uid().unwrap_or_default())
            .collect())
    }

    async fn write_status(&self, rs: &ReplicaSet, status: ReplicaSetStatus) -> Result<()> {
        crate::controllers::framework::write_status(&self.client, rs, status).await
    }
}

/// Make `n` objects with Kubernetes' slow start: batches of 1, 2, 4, ... so a
/// systematic failure (quota, bad template) costs one request, not `n`.
pub async fn create_in_batches<F, Fut>(n: usize, make: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut done = 0;
    let mut batch = 1;
    while done < n {
        let size = batch.min(n - done);
        let results = futures::future::join_all((done..done + size).map(&make)).await;
        for r in results {
            r?;
        }
        done += size;
        batch *= 2;
    }
    Ok(())
}

impl Reconciler for ReplicaSets {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(rs) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(Action::await_change());
        };
        let synced = self.expectations.seen_in(key, &self.pods);
        let owned = claim(
            &self.pods_api(&key.ns),
            &controller_ref(rs.as_ref()),
            terminating(rs.as_ref()),
            &rs.spec.selector,
            self.pods.list(&key.ns),
        )
        .await?;
        let mut active: Vec<_> = owned.iter().filter(|p| active(p)).cloned().collect();
        let want = rs.spec.replicas.unwrap_or(1).max(0) as usize;
        let mut failure = None;
        if synced && !terminating(rs.as_ref()) {
            match self.manage(&rs, key, active.clone(), want).await {
                // Pods deleted just now are not counted in the status written
                // below: a Deployment trusts a status whose observedGeneration
                // is current, and must not count them as available.
                Ok(deleted) => active.retain(|p| !deleted.contains(&p.uid().unwrap_or_default())),
                Err(e) => failure = Some(e),
            }
        }
        let now = Timestamp::now();
        let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
        let template_labels = rs
            .spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let full = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(template_labels),
            match_expressions: None,
        };
        let mut conditions: Vec<ReplicaSetCondition> = rs
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_.as_deref() != Some("ReplicaFailure"))
            .collect();
        if let Some(e) = &failure {
            let verb = if active.len() < want {
                "create"
            } else {
                "delete"
            };
            conditions.push(ReplicaSetCondition {
                type_: Some("ReplicaFailure".into()),
                status: Some("True".into()),
                reason: Some(
                    if verb == "create" {
                        "FailedCreate"
                    } else {
                        "FailedDelete"
                    }
                    .into(),
                ),
                message: Some(e.to_string()),
                last_transition_time: Some(Time(now)),
            });
        }
        let status = ReplicaSetStatus {
            replicas: active.len() as i32,
            fully_labeled_replicas: Some(
                active
                    .iter()
                    .filter(|p| selector_matches(&full, p.labels()))
                    .count() as i32,
            ),
            ready_replicas: Some(active.iter().filter(|p| ready(p)).count() as i32),
            available_replicas: Some(
                active
                    .iter()
                    .filter(|p| available(p, min_ready, now))
                    .count() as i32,
            ),
            terminating_replicas: Some(
                owned.iter().filter(|p| terminating(p.as_ref())).count() as i32
            ),
            observed_generation: rs.metadata.generation,
            conditions: (!conditions.is_empty()).then_some(conditions),
        };
        self.write_status(&rs, status).await?;
        if let Some(e) = failure {
            let (reason, verb) = if active.len() < want {
                ("FailedCreate", "creating")
            } else {
                ("FailedDelete", "deleting")
            };
            crate::controllers::events::record(
                &self.client,
                "replicaset-controller",
                rs.as_ref(),
                true,
                reason,
                &format!("Error {verb}: {e}"),
            )
            .await;
            return Err(e);
        }
        if !synced {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let soonest = active
            .iter()
            .filter_map(|p| until_available(p, min_ready, now))
            .min();
        Ok(Action::requeue_opt(
            soonest.map(|s| Duration::from_secs(s as u64)),
        ))
    }
}

/// Start the ReplicaSet controller (4 workers).
pub fn start(ctx: &mut crate::controllers::registration::Ctx<'_>) {
    let pods = ctx.informer::<Pod>();
    let sets = ctx.informer::<ReplicaSet>();
    let rs = Arc::new(ReplicaSets {
        client: ctx.client.clone(),
        sets: sets.clone(),
        pods: pods.clone(),
        expectations: Expectations::default(),
    });
    let q = Queue::new();
    rs.watch(&q);
    ctx.run(
        Controller::new(rs, q)
            .workers(4)
            .after_sync(vec![(&pods).into(), (&sets).into()])
            .resync(all_keys(&sets)),
    );
}
