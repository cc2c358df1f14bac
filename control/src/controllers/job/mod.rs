//! The Job controller: runs pods until `completions` of them succeed (or, with
//! no completions, until one succeeds and the rest finish), at most
//! `parallelism` at a time; gives up after `backoffLimit` failures or
//! `activeDeadlineSeconds`; Indexed jobs give each pod its completion index;
//! finished jobs carry Complete or Failed and go after `ttlSecondsAfterFinished`.
//!
//! **Succeeded and failed counts come from the pods the job owns, which it
//! keeps until the job itself is deleted, so a restart never recounts.**

use crate::controllers::registration::all_keys;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{PostParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};

use crate::controllers::framework::{
    Action, Controller, ControllerError, Expectations, Informer, Key, Queue, Reconciler, Result,
};
use crate::controllers::owners::{claim, delete_exact};
use crate::controllers::podutil::{
    active, controller_ref, deletion_order, generate_prefix, phase, pod_from_template, ready,
    terminating,
};
use crate::controllers::replicaset::create_in_batches;

pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";
pub mod plan;

pub struct Jobs {
    pub client: Client,
    pub jobs: Arc<Informer<Job>>,
    pub pods: Arc<Informer<Pod>>,
    pub expectations: Expectations,
}

impl Jobs {
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.jobs
            .on(crate::controllers::framework::enqueue_self(queue));
        let q = queue.clone();
        self.pods.on(move |old, new| {
            for k in crate::controllers::framework::controller_keys(old, new, "Job") {
                q.add(k);
            }
        });
    }

    fn pods_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
}

fn has_condition(s: &JobStatus, type_: &str) -> bool {
    s.conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    let now = Some(Time(Timestamp::now()));
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: now.clone(),
        last_transition_time: now,
    }
}

fn index_of(p: &Pod) -> Option<i32> {
    p.annotations().get(INDEX_ANNOTATION)?.parse().ok()
}

/// `1,3-5,7` from a set of indexes.
pub fn compress_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        out.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// When the newest failure happened (pod finish time, else its creation).
fn last_failure(pods: &[Arc<Pod>]) -> Option<Timestamp> {
    pods.iter()
        .filter(|p| phase(p) == "Failed")
        .filter_map(|p| {
            let finished = p
                .status
                .as_ref()?
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
                .map(|t| t.0)
                .max();
            finished.or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        })
        .max()
}

impl Reconciler for Jobs {
    fn name(&self) -> &'static str {
        "job"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(job) = self.expectations.live(key, &self.jobs) else {
            return Ok(Action::await_change());
        };
        let job = job.as_ref();
        let mut status = job.status.clone().unwrap_or_default();
        let now = Timestamp::now();
        if has_condition(&status, "Complete") || has_condition(&status, "Failed") {
            return self
                .expire(job, &status, now)
                .await
                .map(Action::requeue_opt);
        }
        let Some(spec) = job.spec.as_ref() else {
            return Err(ControllerError::Invalid("job has no spec".into()));
        };
        let Some(sel) = spec.selector.clone() else {
            return Err(ControllerError::Invalid("job has no selector".into()));
        };
        let synced = self.expectations.seen_in(key, &self.pods);
        let owned = claim(
            &self.pods_api(&key.ns),
            &controller_ref(job),
            false,
            &sel,
            self.pods.list(&key.ns),
        )
        .await?;
        let running: Vec<Arc<Pod>> = owned.iter().filter(|p| active(p)).cloned().collect();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let succeeded_pods: Vec<&Arc<Pod>> =
            owned.iter().filter(|p| phase(p) == "Succeeded").collect();
        let done_indexes: BTreeSet<i32> =
            succeeded_pods.iter().filter_map(|p| index_of(p)).collect();
        let succeeded = if indexed {
            done_indexes.len() as i32
        } else {
            succeeded_pods.len() as i32
        };
        let restarts: i32 = if spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure")
        {
            owned
                .iter()
                .flat_map(|p| {
                    p.status
                        .iter()
                        .flat_map(|s| s.container_statuses.iter().flatten())
                })
                .map(|c| c.restart_count)
                .sum()
        } else {
            0
        };
        let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i32 + restarts;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let completions = spec.completions;
        let suspended = spec.suspend.unwrap_or(false);
        if status.start_time.is_none() && !suspended {
            status.start_time = Some(Time(now));
        }

        let busy: BTreeSet<i32> = running.iter().filter_map(|p| index_of(p)).collect();
        let input = plan::Input {
            completions,
            parallelism,
            backoff_limit: spec.backoff_limit.unwrap_or(6),
            active_deadline: spec.active_deadline_seconds,
            started: status.start_time.as_ref().map(|t| t.0.as_second()),
            suspended,
            indexed,
            succeeded,
            failed,
            running: running.len(),
            busy,
            done: done_indexes.clone(),
            failed_pods: owned.iter().filter(|p| phase(p) == "Failed").count() as u32,
            last_failure: last_failure(&owned).map(|t| t.as_second()),
            synced,
            now: now.as_second(),
        };
        let todo = plan::plan(&input);
        let finish: Option<JobCondition> = todo.finish.map(|f| {
            let (type_, reason, message) = f.condition();
            condition(type_, reason, message)
        });
        let mut requeue = todo.wait;
        if let Some(c) = &finish {
            for p in &running {
                self.delete_pod(key, p).await?;
            }
            let conds = status.conditions.get_or_insert_with(Vec::new);
            let criteria = if c.type_ == "Complete" {
                "SuccessCriteriaMet"
            } else {
                "FailureTarget"
            };
            if !conds.iter().any(|x| x.type_ == criteria) {
                conds.push(JobCondition {
                    type_: criteria.into(),
                    ..c.clone()
                });
            }
            conds.push(c.clone());
            if c.type_ == "Complete" {
                status.completion_time = Some(Time(now));
            }
            tracing::info!(job = %key, outcome = %c.type_, "job finished");
        } else {
            if !todo.create.is_empty() {
                self.create_pods(job, key, &todo.create).await?;
            }
            if todo.delete > 0 {
                let mut surplus = running.clone();
                deletion_order(&mut surplus);
                for p in surplus.iter().take(todo.delete) {
                    self.delete_pod(key, p).await?;
                }
            }
        }
        if suspended {
            let conds = status.conditions.get_or_insert_with(Vec::new);
            if !conds
                .iter()
                .any(|c| c.type_ == "Suspended" && c.status == "True")
            {
                conds.retain(|c| c.type_ != "Suspended");
                conds.push(condition("Suspended", "JobSuspended", "Job suspended"));
            }
        } else if let Some(conds) = status.conditions.as_mut() {
            conds.retain(|c| c.type_ != "Suspended");
        }
        status.active = Some(if finish.is_some() {
            0
        } else {
            running.len() as i32
        });
        status.ready = Some(running.iter().filter(|p| ready(p)).count() as i32);
        status.succeeded = Some(succeeded);
        status.failed = Some(failed);
        status.terminating = Some(owned.iter().filter(|p| terminating(p.as_ref())).count() as i32);
        if indexed {
            status.completed_indexes = Some(compress_indexes(&done_indexes));
        }
        crate::controllers::framework::write_status(&self.client, job, status.clone()).await?;
        if finish.is_some() {
            return self
                .expire(job, &status, now)
                .await
                .map(Action::requeue_opt);
        }
        if let (Some(ads), Some(start)) = (spec.active_deadline_seconds, status.start_time.as_ref())
        {
            let left = start.0.as_second() + ads - now.as_second();
            let d = Duration::from_secs(left.max(1) as u64);
            requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
        }
        if !synced {
            requeue = Some(Duration::from_secs(1));
        }
        Ok(Action::requeue_opt(requeue))
    }
}

impl Jobs {
    async fn create_pods(&self, job: &Job, key: &Key, indexes: &[Option<i32>]) -> Result<()> {
        let template = job
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        create_in_batches(indexes.len(), |n| {
            let index = indexes[n];
            let mut pod = pod_from_template(
                &template,
                &key.ns,
                Some(match index {
                    Some(i) => generate_prefix(&format!("{}-{i}", key.name)),
                    None => generate_prefix(&key.name),
                }),
                None,
                controller_ref(job),
            );
            if let Some(i) = index {
                pod.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(INDEX_ANNOTATION.into(), i.to_string());
                pod.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(INDEX_LABEL.into(), i.to_string());
                if let Some(spec) = pod.spec.as_mut() {
                    spec.hostname
                        .get_or_insert_with(|| format!("{}-{i}", key.name));
                    for c in &mut spec.containers {
                        c.env.get_or_insert_with(Vec::new).push(EnvVar {
                            name: "JOB_COMPLETION_INDEX".into(),
                            value: Some(i.to_string()),
                            value_from: None,
                        });
                    }
                }
            }
            async move {
                let made = self
                    .pods_api(&key.ns)
                    .create(&PostParams::default(), &pod)
                    .await?;
                self.expectations.created(key, &made.name_any());
                Ok(())
            }
        })
        .await
    }

    async fn delete_pod(&self, key: &Key, p: &Pod) -> Result<()> {
        self.expectations.deleted(key, &p.uid().unwrap_or_default());
        delete_exact(&self.pods_api(&key.ns), p, None).await
    }

    /// A finished job goes `ttlSecondsAfterFinished` after it finished.
    async fn expire(
        &self,
        job: &Job,
        status: &JobStatus,
        now: Timestamp,
    ) -> Result<Option<Duration>> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(None);
        };
        let finished = status
            .conditions
            .iter()
            .flatten()
            .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .max()
            .unwrap_or(now);
        let left = finished.as_second() + i64::from(ttl) - now.as_second();
        if left > 0 {
            return Ok(Some(Duration::from_secs(left as u64)));
        }
        let api = Api::<Job>::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
        delete_exact(&api, job, Some(PropagationPolicy::Background)).await?;
        Ok(None)
    }
}

/// Start the Job controller (2 workers).
pub fn start(ctx: &mut crate::controllers::registration::Ctx<'_>) {
    let pods = ctx.informer::<Pod>();
    let jobs = ctx.informer::<Job>();
    let jc = Arc::new(Jobs {
        client: ctx.client.clone(),
        jobs: jobs.clone(),
        pods: pods.clone(),
        expectations: Expectations::default(),
    });
    let q = Queue::new();
    jc.watch(&q);
    ctx.run(
        Controller::new(jc, q)
            .workers(2)
            .after_sync(vec![(&pods).into(), (&jobs).into()])
            .resync(all_keys(&jobs)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_compress_to_ranges() {
        let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(compress_indexes(&s), "0-2,4,6-7");
        assert_eq!(compress_indexes(&BTreeSet::new()), "");
    }
}
