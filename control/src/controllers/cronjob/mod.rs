//! The CronJob controller: makes a Job for each time the schedule (in the
//! CronJob's time zone) comes round, honouring suspend, startingDeadlineSeconds
//! and concurrencyPolicy (Allow, Forbid, Replace), and keeps only the newest
//! finished Jobs within the history limits.
//!
//! **A Job's name is the CronJob's name plus its scheduled minute, so a
//! schedule is never run twice, even across leader changes.**

use crate::controllers::registration::all_keys;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{PostParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};

use crate::controllers::framework::{
    Action, Controller, ControllerError, Informer, Key, Queue, Reconciler, Result,
};
use crate::controllers::owners::delete_exact;
use crate::controllers::podutil::{controlled_by, controller_ref, terminating};

pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub struct CronJobs {
    pub client: Client,
    pub cronjobs: Arc<Informer<CronJob>>,
    pub jobs: Arc<Informer<Job>>,
}

impl CronJobs {
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.cronjobs
            .on(crate::controllers::framework::enqueue_self(queue));
        let q = queue.clone();
        self.jobs.on(move |old, new| {
            for k in crate::controllers::framework::controller_keys(old, new, "CronJob") {
                q.add(k);
            }
        });
    }

    fn jobs_api(&self, ns: &str) -> Api<Job> {
        Api::namespaced(self.client.clone(), ns)
    }
}

/// A parsed schedule in its time zone.
pub struct Schedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl Schedule {
    /// `spec.schedule` (standard five fields or a macro, optionally prefixed
    /// with `CRON_TZ=` or `TZ=`) in `spec.timeZone` (default UTC).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule> {
        let mut s = schedule.trim();
        let mut zone = time_zone.map(str::to_string);
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = s.strip_prefix(prefix) {
                let (z, r) = rest.split_once(' ').unwrap_or((rest, ""));
                zone = Some(z.to_string());
                s = r.trim();
            }
        }
        let tz: chrono_tz::Tz = match zone.as_deref() {
            None | Some("") => chrono_tz::UTC,
            Some(z) => z
                .parse()
                .map_err(|_| ControllerError::Invalid(format!("unknown time zone {z:?}")))?,
        };
        let cron: croner::Cron = s
            .parse()
            .map_err(|e| ControllerError::Invalid(format!("invalid schedule {s:?}: {e}")))?;
        Ok(Schedule { cron, tz })
    }

    /// The latest scheduled time in `(after, now]`, if any.
    pub fn latest(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let now_tz = self.tz.from_utc_datetime(&whole_second(now).naive_utc());
        let t = self.cron.find_previous_occurrence(&now_tz, true).ok()?;
        let t = whole_second(t.with_timezone(&Utc));
        (t > after).then_some(t)
    }

    /// The first scheduled time after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let now_tz = self.tz.from_utc_datetime(&whole_second(now).naive_utc());
        let t = self.cron.find_next_occurrence(&now_tz, false).ok()?;
        Some(whole_second(t.with_timezone(&Utc)))
    }
}

/// `t` without its fraction of a second. croner carries the clock's
/// nanoseconds into the occurrences it finds, and a scheduled time recorded
/// in whole seconds (`lastScheduleTime`) would then look older than the same
/// minute found again: the minute would run twice.
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    t.with_nanosecond(0).unwrap_or(t)
}

/// What a CronJob's spec and its running Jobs say about a due time.
struct Due<'a> {
    suspended: bool,
    starting_deadline: Option<i64>,
    /// `Allow`, `Forbid` or `Replace`.
    policy: &'a str,
    /// Jobs of this CronJob not finished yet.
    running: usize,
}

/// What to do now.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Nothing is due (or the CronJob is suspended).
    Wait,
    /// The latest due time is past the starting deadline.
    Missed(DateTime<Utc>),
    /// Due, but Forbid and a Job is still running: skipped.
    Forbidden(DateTime<Utc>),
    /// Make the Job of `at`; with `replace`, delete the running ones first.
    Run { at: DateTime<Utc>, replace: bool },
}

impl Due<'_> {
    /// The latest time of `schedule` in `(since, now]` (`since` is the last
    /// scheduled time, or the CronJob's creation), judged as Kubernetes'
    /// CronJob controller does. A skipped time does not move `since`, so the
    /// next reconcile after the running Job ends runs the newest due time.
    fn decide(&self, schedule: &Schedule, since: DateTime<Utc>, now: DateTime<Utc>) -> Decision {
        if self.suspended {
            return Decision::Wait;
        }
        let Some(at) = schedule.latest(since, now) else {
            return Decision::Wait;
        };
        if self
            .starting_deadline
            .is_some_and(|d| (now - at).num_seconds() > d)
        {
            return Decision::Missed(at);
        }
        match self.policy {
            "Forbid" if self.running > 0 => Decision::Forbidden(at),
            "Replace" => Decision::Run {
                at,
                replace: self.running > 0,
            },
            _ => Decision::Run { at, replace: false },
        }
    }
}

fn to_chrono(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), 0).unwrap_or_default()
}

fn to_jiff(t: DateTime<Utc>) -> Timestamp {
    Timestamp::from_second(t.timestamp()).unwrap_or_default()
}

/// Whether a job finished, and whether it succeeded.
fn finished(j: &Job) -> Option<bool> {
    let conds = j.status.as_ref()?.conditions.as_ref()?;
    if conds
        .iter()
        .any(|c| c.type_ == "Complete" && c.status == "True")
    {
        return Some(true);
    }
    conds
        .iter()
        .any(|c| c.type_ == "Failed" && c.status == "True")
        .then_some(false)
}

fn scheduled_at(j: &Job) -> i64 {
    j.annotations()
        .get(SCHEDULED_AT)
        .and_then(|s| s.parse::<Timestamp>().ok())
        .or_else(|| j.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .map(|t| t.as_second())
        .unwrap_or(0)
}

impl Reconciler for CronJobs {
    fn name(&self) -> &'static str {
        "cronjob"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(cj) = self.cronjobs.get(key) else {
            return Ok(Action::await_change());
        };
        if terminating(cj.as_ref()) {
            return Ok(Action::await_change());
        }
        let cj = cj.as_ref();
        let uid = cj.uid().unwrap_or_default();
        let mut jobs: Vec<Arc<Job>> = self
            .jobs
            .list(&key.ns)
            .into_iter()
            .filter(|j| controlled_by(j.as_ref(), &uid))
            .collect();
        jobs.sort_by_key(|j| scheduled_at(j));
        let mut status = cj.status.clone().unwrap_or_default();

        // History: the newest finished jobs within the limits.
        self.trim(cj, &jobs).await?;
        jobs.retain(|j| !terminating(j.as_ref()));
        let running: Vec<&Arc<Job>> = jobs.iter().filter(|j| finished(j).is_none()).collect();
        if let Some(last_ok) = jobs
            .iter()
            .filter(|j| finished(j) == Some(true))
            .filter_map(|j| j.status.as_ref()?.completion_time.clone())
            .max_by_key(|t| t.0)
        {
            status.last_successful_time = Some(last_ok);
        }

        let schedule = Schedule::parse(&cj.spec.schedule, cj.spec.time_zone.as_deref())?;
        let now = chrono::Utc::now();
        let since = status
            .last_schedule_time
            .as_ref()
            .or(cj.metadata.creation_timestamp.as_ref())
            .map(|t| to_chrono(t.0))
            .unwrap_or(now);
        let mut active = running.iter().map(|j| reference(j)).collect::<Vec<_>>();
        let policy = cj.spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let due = Due {
            suspended: cj.spec.suspend.unwrap_or(false),
            starting_deadline: cj.spec.starting_deadline_seconds,
            policy,
            running: running.len(),
        };
        match due.decide(&schedule, since, now) {
            Decision::Wait => {}
            Decision::Missed(t) => {
                tracing::info!(cronjob = %key, scheduled = %t, "missed its starting deadline; skipped");
            }
            Decision::Forbidden(t) => {
                tracing::debug!(cronjob = %key, scheduled = %t, "a job is still running; Forbid skips this run");
            }
            Decision::Run { at, replace } => {
                if replace {
                    for j in &running {
                        self.delete_job(j).await?;
                    }
                    active.clear();
                }
                let job = self.create_job(cj, at).await?;
                active.push(reference(&job));
                status.last_schedule_time = Some(Time(to_jiff(at)));
            }
        }
        status.active = (!active.is_empty()).then_some(active);
        crate::controllers::framework::write_status(&self.client, cj, status).await?;
        let next = schedule
            .next(now)
            .map(|n| (n - now).num_milliseconds().max(0) as u64 + 100);
        Ok(Action::requeue(Duration::from_millis(
            next.unwrap_or(60_000),
        )))
    }
}

fn reference(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        ..Default::default()
    }
}

impl CronJobs {
    async fn create_job(&self, cj: &CronJob, at: DateTime<Utc>) -> Result<Job> {
        let ns = cj.namespace().unwrap_or_default();
        let name = format!("{}-{}", cj.name_any(), at.timestamp() / 60);
        let t = &cj.spec.job_template;
        let meta = t.metadata.clone().unwrap_or_default();
        let mut annotations = meta.annotations.unwrap_or_default();
        annotations.insert(SCHEDULED_AT.into(), to_jiff(at).to_string());
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: meta.labels,
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref(cj)]),
                ..Default::default()
            },
            spec: Some(t.spec.clone().unwrap_or_default()),
            status: None,
        };
        match self
            .jobs_api(&ns)
            .create(&PostParams::default(), &job)
            .await
        {
            Ok(j) => {
                tracing::info!(cronjob = %cj.name_any(), job = %name, "created job");
                Ok(j)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(self.jobs_api(&ns).get(&name).await?),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_job(&self, j: &Job) -> Result<()> {
        let api = self.jobs_api(&j.namespace().unwrap_or_default());
        delete_exact(&api, j, Some(PropagationPolicy::Background)).await
    }

    /// Delete the oldest finished jobs beyond successfulJobsHistoryLimit and
    /// failedJobsHistoryLimit.
    async fn trim(&self, cj: &CronJob, jobs: &[Arc<Job>]) -> Result<()> {
        for (ok, limit) in [
            (true, cj.spec.successful_jobs_history_limit.unwrap_or(3)),
            (false, cj.spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let done: Vec<&Arc<Job>> = jobs
                .iter()
                .filter(|j| finished(j) == Some(ok) && !terminating(j.as_ref()))
                .collect();
            let extra = done.len().saturating_sub(limit.max(0) as usize);
            for j in done.into_iter().take(extra) {
                self.delete_job(j).await?;
            }
        }
        Ok(())
    }
}

/// Start the CronJob controller (1 worker).
pub fn start(ctx: &mut crate::controllers::registration::Ctx<'_>) {
    let jobs = ctx.informer::<Job>();
    let cronjobs = ctx.informer::<CronJob>();
    let cc = Arc::new(CronJobs {
        client: ctx.client.clone(),
        cronjobs: cronjobs.clone(),
        jobs: jobs.clone(),
    });
    let q = Queue::new();
    cc.watch(&q);
    ctx.run(
        Controller::new(cc, q)
            .after_sync(vec![(&jobs).into(), (&cronjobs).into()])
            .resync(all_keys(&cronjobs)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn schedules_in_a_time_zone() {
        let s = Schedule::parse("30 9 * * *", Some("Europe/Paris")).unwrap();
        // 09:30 in Paris in winter is 08:30 UTC.
        let n = s.next(at("2026-12-01T00:00:00Z")).unwrap();
        assert_eq!(n, at("2026-12-01T08:30:00Z"));
        let l = s.latest(at("2026-11-01T00:00:00Z"), at("2026-12-01T10:00:00Z"));
        assert_eq!(l, Some(at("2026-12-01T08:30:00Z")));
        assert_eq!(
            s.latest(at("2026-12-01T09:00:00Z"), at("2026-12-01T10:00:00Z")),
            None
        );
        let every = Schedule::parse("*/5 * * * *", None).unwrap();
        assert_eq!(
            every.next(at("2026-12-01T00:01:00Z")),
            Some(at("2026-12-01T00:05:00Z"))
        );
        let tz = Schedule::parse("CRON_TZ=Asia/Tokyo 0 0 * * *", None).unwrap();
        assert_eq!(
            tz.next(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-01T15:00:00Z"))
        );
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(Schedule::parse("* * * * *", Some("Mars/Base")).is_err());
        assert!(Schedule::parse("@hourly", None).is_ok());
    }

    #[test]
    fn decisions_table() {
        let every_minute = Schedule::parse("* * * * *", None).unwrap();
        let due = |policy, running, suspended, starting_deadline| Due {
            suspended,
            starting_deadline,
            policy,
            running,
        };
        let created = at("2026-12-01T10:00:30Z");
        let (t1, t2) = (at("2026-12-01T10:01:00Z"), at("2026-12-01T10:02:00Z"));
        let run = |at, replace| Decision::Run { at, replace };
        // (case, due, since, now, decision)
        #[rustfmt::skip]
        let table = [
            ("not yet due", due("Allow", 0, false, None), created, at("2026-12-01T10:00:59Z"), Decision::Wait),
            ("first minute", due("Allow", 0, false, None), created, at("2026-12-01T10:01:00Z"), run(t1, false)),
            ("allow overlaps", due("Allow", 1, false, None), t1, at("2026-12-01T10:02:01Z"), run(t2, false)),
            ("forbid skips while one runs", due("Forbid", 1, false, None), t1, at("2026-12-01T10:02:01Z"), Decision::Forbidden(t2)),
            ("forbid runs once it ended", due("Forbid", 0, false, None), t1, at("2026-12-01T10:02:40Z"), run(t2, false)),
            ("a skipped minute is not run late twice", due("Forbid", 0, false, None), t1, at("2026-12-01T10:03:05Z"), run(at("2026-12-01T10:03:00Z"), false)),
            ("replace deletes the running one", due("Replace", 2, false, None), t1, at("2026-12-01T10:02:00Z"), run(t2, true)),
            ("replace with none running", due("Replace", 0, false, None), t1, at("2026-12-01T10:02:00Z"), run(t2, false)),
            ("suspended", due("Allow", 0, true, None), t1, at("2026-12-01T10:05:00Z"), Decision::Wait),
            ("within the deadline", due("Allow", 0, false, Some(30)), t1, at("2026-12-01T10:02:30Z"), run(t2, false)),
            ("past the deadline", due("Allow", 0, false, Some(30)), t1, at("2026-12-01T10:02:31Z"), Decision::Missed(t2)),
            ("already run this minute", due("Allow", 0, false, None), t2, at("2026-12-01T10:02:59Z"), Decision::Wait),
            // The clock has nanoseconds; lastScheduleTime has whole seconds.
            ("already run, the clock past a whole second", due("Allow", 0, false, None), t2, at("2026-12-01T10:02:03.763098696Z"), Decision::Wait),
            ("due, the clock past a whole second", due("Allow", 0, false, None), t1, at("2026-12-01T10:02:00.250000001Z"), run(t2, false)),
        ];
        for (case, d, since, now, want) in table {
            assert_eq!(d.decide(&every_minute, since, now), want, "{case}");
        }
    }
}
