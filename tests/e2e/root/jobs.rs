//! Jobs and CronJobs end to end with the real kubectl: completions with
//! bounded parallelism, a failing job stopping at its backoff limit, and a
//! CronJob every minute that respects concurrencyPolicy Forbid.

use crate::common;

use std::time::Duration;

use anyhow::Result;
use common::{Server, eventually};
use serde_json::Value;

fn job(name: &str, completions: u32, parallelism: u32, backoff: u32, args: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  completions: {completions}
  parallelism: {parallelism}
  backoffLimit: {backoff}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: acc/job:v1
        args: [{args}]
"#
    )
}

fn condition(obj: &Value, type_: &str) -> Option<Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

/// Pods of a job, with their phases and creation/finish times.
fn job_pods(s: &Server, job: &str) -> Vec<Value> {
    s.json(&["pods", "-l", &format!("job-name={job}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn jobs_complete_with_bounded_parallelism_or_fail_at_the_backoff_limit() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.apply(&job("five", 5, 2, 6, r#""--sleep-ms", "1500""#));
    s.apply(&job("doomed", 1, 1, 1, r#""--exit", "3""#));

    // While it runs, never more than two pods are active at once.
    let mut most_active = 0;
    let done = eventually(Duration::from_secs(120), || {
        let j = s.json(&["job", "five"]);
        most_active = most_active.max(j["status"]["active"].as_i64().unwrap_or(0));
        condition(&j, "Complete").map(|_| j)
    })
    .expect("the job completes");
    assert_eq!(done["status"]["succeeded"], 5, "{done}");
    assert!(most_active <= 2, "{most_active} pods ran at once");
    assert!(done["status"]["completionTime"].is_string());
    let pods = job_pods(s, "five");
    assert_eq!(pods.len(), 5);
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Succeeded"));
    let waited = s.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/five",
        "--timeout=5s",
    ]);
    assert!(waited.ok, "{}", waited.stderr);

    // backoffLimit 1: the second failure fails the job, and no third pod runs.
    let failed = eventually(Duration::from_secs(120), || {
        let j = s.json(&["job", "doomed"]);
        condition(&j, "Failed").map(|c| (j, c))
    })
    .expect("the failing job stops");
    assert_eq!(failed.1["reason"], "BackoffLimitExceeded", "{}", failed.0);
    assert_eq!(failed.0["status"]["failed"], 2, "{}", failed.0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(job_pods(s, "doomed").len(), 2);

    // Deleting a job takes its pods with it.
    s.k(&["delete", "job", "five"]);
    eventually(Duration::from_secs(60), || {
        job_pods(s, "five").is_empty().then_some(())
    })
    .expect("the job's pods go with it");
    Ok(())
}

/// A CronJob's Job comes with its minute and is recorded in the CronJob's
/// status while it runs and once it succeeded. (Which minute runs under
/// Allow, Forbid and Replace, suspend and the starting deadline is the
/// controller's `decisions_table`, without waiting for the clock.)
#[test]
fn cronjob_runs_its_minute_and_records_the_job() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.apply(
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: acc/job:v1
            args: ["--sleep-ms", "3000"]
"#,
    );
    let jobs = |s: &Server| -> Vec<Value> {
        s.json(&["jobs"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let first = eventually(Duration::from_secs(75), || {
        let j = jobs(s);
        (!j.is_empty()).then(|| j[0].clone())
    })
    .expect("a job within a minute");
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert!(
        first["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with(":00Z")),
        "the job names its scheduled minute: {first}"
    );
    let cj = s.json(&["cronjob", "tick"]);
    assert!(cj["status"]["lastScheduleTime"].is_string(), "{cj}");
    // Active while it runs (the job sleeps 3 s after its pod starts)...
    assert_eq!(
        cj["status"]["active"].as_array().map(Vec::len),
        Some(1),
        "{cj}"
    );
    // ...then recorded as the last success, with nothing active.
    let done = eventually(Duration::from_secs(60), || {
        let cj = s.json(&["cronjob", "tick"]);
        cj["status"]["lastSuccessfulTime"].is_string().then_some(cj)
    })
    .expect("the job's success is recorded");
    assert!(
        done["status"]["active"].is_null(),
        "{done}\n{}",
        s.log()
            .lines()
            .filter(|l| l.contains("cronjob"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
