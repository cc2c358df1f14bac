//! The Job's plan: given its spec, what its pods came to and the time, whether
//! it is finished (and how), which pods to create (with their completion
//! index when Indexed), how many surplus pods to delete, or how long to wait
//! before replacing failed pods.
//!
//! **A finished job creates nothing; failed pods are replaced only after the
//! failure back-off (10 s doubling per failure, at most 6 min).**

use std::collections::BTreeSet;
use std::time::Duration;

use crate::controllers::framework::backoff;

/// First delay before a failed pod is replaced; doubles per failure up to 6 min.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
pub const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(360);

/// What the plan reads: the spec (defaults applied), the counts from the
/// job's pods and the time (Unix seconds).
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub completions: Option<i32>,
    pub parallelism: i32,
    pub backoff_limit: i32,
    pub active_deadline: Option<i64>,
    /// When the job started, if it has.
    pub started: Option<i64>,
    pub suspended: bool,
    pub indexed: bool,
    /// Succeeded pods (distinct indexes when Indexed).
    pub succeeded: i32,
    /// Failed pods plus container restarts (OnFailure).
    pub failed: i32,
    /// Pods neither finished nor being deleted.
    pub running: usize,
    /// Completion indexes of the running pods, and of the succeeded ones.
    pub busy: BTreeSet<i32>,
    pub done: BTreeSet<i32>,
    /// Pods in phase Failed, and when the newest of them failed.
    pub failed_pods: u32,
    pub last_failure: Option<i64>,
    /// Whether the cache shows every earlier write of this job.
    pub synced: bool,
    pub now: i64,
}

/// How a job finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Complete,
    BackoffLimitExceeded,
    DeadlineExceeded,
}

impl Finish {
    /// The condition's type, reason and message.
    pub fn condition(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Finish::Complete => (
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
            Finish::BackoffLimitExceeded => (
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
            Finish::DeadlineExceeded => (
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
        }
    }
}

/// What one pass does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Finished: every running pod is deleted and nothing else happens.
    pub finish: Option<Finish>,
    /// Pods to create: a completion index each when Indexed, else `None`.
    pub create: Vec<Option<i32>>,
    /// How many running pods to delete, in deletion order.
    pub delete: usize,
    /// Wait this long (failure back-off) before creating.
    pub wait: Option<Duration>,
}

/// Whether (and how) the job is finished.
pub fn finished(i: &Input) -> Option<Finish> {
    let complete = match i.completions {
        Some(c) => i.succeeded >= c,
        None => i.succeeded > 0 && i.running == 0,
    };
    if complete {
        return Some(Finish::Complete);
    }
    if i.failed > i.backoff_limit {
        return Some(Finish::BackoffLimitExceeded);
    }
    if let (Some(ads), Some(start)) = (i.active_deadline, i.started)
        && !i.suspended
        && i.now - start >= ads
    {
        return Some(Finish::DeadlineExceeded);
    }
    None
}

/// How many pods should be running.
pub fn want_running(i: &Input) -> i32 {
    if i.suspended {
        return 0;
    }
    match i.completions {
        Some(c) => i.parallelism.min(c - i.succeeded).max(0),
        None if i.succeeded > 0 => 0,
        None => i.parallelism,
    }
}

pub fn plan(i: &Input) -> Plan {
    if let Some(f) = finished(i) {
        return Plan {
            finish: Some(f),
            ..Plan::default()
        };
    }
    if !i.synced {
        return Plan::default();
    }
    let want = want_running(i);
    let have = i.running as i32;
    if want < have {
        return Plan {
            delete: (have - want) as usize,
            ..Plan::default()
        };
    }
    if want == have {
        return Plan::default();
    }
    // Replace failed pods only after the failure back-off.
    let wait = match i.last_failure {
        Some(at) if i.failed_pods > 0 => {
            let delay = backoff(FAILURE_BACKOFF, FAILURE_BACKOFF_MAX, i.failed_pods);
            (at + delay.as_secs() as i64 - i.now).max(0)
        }
        _ => 0,
    };
    if wait > 0 {
        return Plan {
            wait: Some(Duration::from_secs(wait as u64)),
            ..Plan::default()
        };
    }
    let n = (want - have) as usize;
    let create = if i.indexed {
        (0..i.completions.unwrap_or(1))
            .filter(|x| !i.done.contains(x) && !i.busy.contains(x))
            .take(n)
            .map(Some)
            .collect()
    } else {
        vec![None; n]
    };
    Plan {
        create,
        ..Plan::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Input {
        Input {
            completions: Some(3),
            parallelism: 2,
            backoff_limit: 6,
            synced: true,
            started: Some(1_000),
            now: 1_010,
            ..Input::default()
        }
    }

    #[test]
    fn plan_table() {
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        let cases: Vec<(&str, Input, Plan)> = vec![
            (
                "start: parallelism pods",
                base(),
                Plan {
                    create: vec![None, None],
                    ..Plan::default()
                },
            ),
            (
                "one left to complete: one pod",
                Input {
                    succeeded: 2,
                    ..base()
                },
                Plan {
                    create: vec![None],
                    ..Plan::default()
                },
            ),
            (
                "running as wanted: nothing",
                Input {
                    running: 2,
                    ..base()
                },
                Plan::default(),
            ),
            (
                "completions reached",
                Input {
                    succeeded: 3,
                    running: 1,
                    ..base()
                },
                Plan {
                    finish: Some(Finish::Complete),
                    ..Plan::default()
                },
            ),
            (
                "no completions: first success and none running completes",
                Input {
                    completions: None,
                    succeeded: 1,
                    ..base()
                },
                Plan {
                    finish: Some(Finish::Complete),
                    ..Plan::default()
                },
            ),
            (
                "no completions: after a success, the rest are stopped",
                Input {
                    completions: None,
                    succeeded: 1,
                    running: 1,
                    ..base()
                },
                Plan {
                    delete: 1,
                    ..Plan::default()
                },
            ),
            (
                "too many failures",
                Input {
                    failed: 7,
                    running: 1,
                    ..base()
                },
                Plan {
                    finish: Some(Finish::BackoffLimitExceeded),
                    ..Plan::default()
                },
            ),
            (
                "deadline passed",
                Input {
                    active_deadline: Some(10),
                    ..base()
                },
                Plan {
                    finish: Some(Finish::DeadlineExceeded),
                    ..Plan::default()
                },
            ),
            (
                "suspended: deadline does not run, pods go",
                Input {
                    active_deadline: Some(10),
                    suspended: true,
                    running: 2,
                    ..base()
                },
                Plan {
                    delete: 2,
                    ..Plan::default()
                },
            ),
            (
                "parallelism lowered: surplus goes",
                Input {
                    parallelism: 1,
                    running: 2,
                    ..base()
                },
                Plan {
                    delete: 1,
                    ..Plan::default()
                },
            ),
            (
                "recent failure: wait out the back-off",
                Input {
                    failed: 1,
                    failed_pods: 1,
                    last_failure: Some(1_005),
                    ..base()
                },
                Plan {
                    wait: Some(Duration::from_secs(5)),
                    ..Plan::default()
                },
            ),
            (
                "two failures: twice the back-off",
                Input {
                    failed: 2,
                    failed_pods: 2,
                    last_failure: Some(1_005),
                    ..base()
                },
                Plan {
                    wait: Some(Duration::from_secs(15)),
                    ..Plan::default()
                },
            ),
            (
                "back-off over: replace",
                Input {
                    failed: 1,
                    failed_pods: 1,
                    last_failure: Some(990),
                    ..base()
                },
                Plan {
                    create: vec![None, None],
                    ..Plan::default()
                },
            ),
            (
                "indexed: free indexes only",
                Input {
                    indexed: true,
                    completions: Some(4),
                    parallelism: 3,
                    succeeded: 1,
                    done: set(&[0]),
                    running: 1,
                    busy: set(&[1]),
                    ..base()
                },
                Plan {
                    create: vec![Some(2), Some(3)],
                    ..Plan::default()
                },
            ),
            (
                "cache behind: nothing yet",
                Input {
                    synced: false,
                    ..base()
                },
                Plan::default(),
            ),
        ];
        for (what, input, want) in cases {
            assert_eq!(plan(&input), want, "{what}");
        }
    }
}
