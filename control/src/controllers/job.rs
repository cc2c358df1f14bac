//! The Job controller: runs pods until `completions` of them succeed (or, with
//! no completions, until one succeeds and the rest finish), at most
//! `parallelism` at a time; gives up after `backoffLimit` failures or
//! `activeDeadlineSeconds`; Indexed jobs give each pod its completion index;
//! finished jobs carry Complete or Failed and go after `ttlSecondsAfterFinished`.
//!
//! **Succeeded and failed counts come from the pods the job owns, which it
//! keeps until the job itself is deleted, so a restart never recounts.**

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{PostParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};

use super::owners::{claim, delete_exact};
use super::podutil::{
    active, controller_ref, deletion_order, generate_prefix, phase, pod_from_template, ready,
    terminating,
};
use super::replicaset::create_in_batches;
use super::runtime::{ControllerError, Expectations, Informer, Key, Queue, Reconciler, Result};

pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";
/// First delay before a failed pod is replaced; doubles per failure up to 6 min.
const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(360);

pub struct Jobs {
    pub client: Client,
    pub jobs: Arc<Informer<Job>>,
    pub pods: Arc<Informer<Pod>>,
    pub expectations: Expectations,
}

impl Jobs {
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.jobs.on(super::runtime::enqueue_self(queue));
        let q = queue.clone();
        self.pods.on(move |old, new| {
            for k in super::runtime::controller_keys(old, new, "Job") {
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

    async fn reconcile(&self, key: &Key) -> Result<Option<Duration>> {
        let Some(job) = self.expectations.live(key, &self.jobs) else {
            return Ok(None);
        };
        let job = job.as_ref();
        let mut status = job.status.clone().unwrap_or_default();
        let now = Timestamp::now();
        if has_condition(&status, "Complete") || has_condition(&status, "Failed") {
            return self.expire(job, &status, now).await;
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

        // Finished?
        let mut finish: Option<JobCondition> = None;
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let complete = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && running.is_empty(),
        };
        if complete {
            finish = Some(condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        } else if failed > backoff_limit {
            finish = Some(condition(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        } else if let (Some(ads), Some(start)) =
            (spec.active_deadline_seconds, status.start_time.as_ref())
            && !suspended
            && now.as_second() - start.0.as_second() >= ads
        {
            finish = Some(condition(
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        }

        let mut requeue = None;
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
        } else if synced {
            let want = if suspended {
                0
            } else {
                match completions {
                    Some(c) => parallelism.min(c - succeeded).max(0),
                    None if succeeded > 0 => 0,
                    None => parallelism,
                }
            };
            let have = running.len() as i32;
            if want > have {
                // Replace failed pods only after the failure back-off.
                let failures = owned.iter().filter(|p| phase(p) == "Failed").count() as u32;
                let wait = match last_failure(&owned) {
                    Some(at) if failures > 0 => {
                        let delay =
                            super::runtime::backoff(FAILURE_BACKOFF, FAILURE_BACKOFF_MAX, failures);
                        let ready_at = at.as_second() + delay.as_secs() as i64;
                        (ready_at - now.as_second()).max(0)
                    }
                    _ => 0,
                };
                if wait > 0 {
                    requeue = Some(Duration::from_secs(wait as u64));
                } else {
                    let busy: BTreeSet<i32> = running.iter().filter_map(|p| index_of(p)).collect();
                    let free: Vec<Option<i32>> = if indexed {
                        (0..completions.unwrap_or(1))
                            .filter(|i| !done_indexes.contains(i) && !busy.contains(i))
                            .take((want - have) as usize)
                            .map(Some)
                            .collect()
                    } else {
                        vec![None; (want - have) as usize]
                    };
                    self.create_pods(job, key, &free).await?;
                }
            } else if want < have {
                let mut surplus = running.clone();
                deletion_order(&mut surplus);
                for p in surplus.iter().take((have - want) as usize) {
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
        super::runtime::write_status(&self.client, job, status.clone()).await?;
        if finish.is_some() {
            return self.expire(job, &status, now).await;
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
        Ok(requeue)
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
