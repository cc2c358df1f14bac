//! The Deployment's plan: given the deployment and its ReplicaSets (the new
//! one, matching the template, and the old ones), the scaling steps of one
//! pass: a rolling step (grow the new set within the surge, shrink old sets
//! within the availability budget), a proportional scale (a paused
//! deployment, or a resize during a rollout), Recreate's scale-down, and the
//! old sets to delete beyond the revision history limit.
//!
//! **Each plan is a function of the cached sets alone; a rolling step shrinks
//! old sets only when every set's status has caught up with its spec.**

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{DESIRED_REPLICAS, REVISION};
use crate::controllers::framework::{ControllerError, Result};
use crate::controllers::podutil::terminating;

/// One step: scale this set to this size (a step that keeps the size still
/// records the deployment's size on the set).
pub type Scale = (Arc<ReplicaSet>, i32);

/// The deployment's replicas, defaulting to 1.
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1).max(0)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

pub fn rs_status(
    rs: &ReplicaSet,
    f: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32,
) -> i32 {
    rs.status.as_ref().map(f).unwrap_or(0)
}

/// Whether a set's status reflects its current spec.
pub fn settled(rs: &ReplicaSet) -> bool {
    rs.status.as_ref().and_then(|s| s.observed_generation) >= rs.metadata.generation
}

pub fn rolling(d: &Deployment) -> bool {
    d.spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        != "Recreate"
}

/// Resolve an int-or-percent against `total`, rounding up or down.
pub fn scaled_value(
    v: Option<&IntOrString>,
    default: &str,
    total: i32,
    round_up: bool,
) -> Result<i32> {
    let v = v
        .cloned()
        .unwrap_or_else(|| IntOrString::String(default.into()));
    match v {
        IntOrString::Int(i) => Ok(i.max(0)),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    ControllerError::Invalid(format!(
                        "invalid value {s:?}: want an integer or a percentage"
                    ))
                })?;
            let x = p * i64::from(total);
            let r = if round_up { (x + 99) / 100 } else { x / 100 };
            Ok(r.max(0) as i32)
        }
    }
}

/// (maxSurge, maxUnavailable) resolved for the deployment; both zero is not
/// allowed, so unavailable becomes 1 then (as Kubernetes does).
pub fn surge_and_unavailable(d: &Deployment) -> Result<(i32, i32)> {
    if !rolling(d) {
        return Ok((0, 0));
    }
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let n = replicas(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), "25%", n, true)?;
    let mut unavailable =
        scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), "25%", n, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable.min(n)))
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub fn created(rs: &ReplicaSet) -> (i64, String) {
    (
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
        rs.name_any(),
    )
}

/// What one pass found: the new ReplicaSet (if any) and the old ones.
pub struct Sets {
    pub new: Option<Arc<ReplicaSet>>,
    pub old: Vec<Arc<ReplicaSet>>,
}

impl Sets {
    pub fn all(&self) -> impl Iterator<Item = &Arc<ReplicaSet>> {
        self.old.iter().chain(self.new.iter())
    }
    pub fn spec_total(&self) -> i32 {
        self.all().map(|r| rs_replicas(r)).sum()
    }
    pub fn available(&self) -> i32 {
        self.all()
            .map(|r| rs_status(r, |s| s.available_replicas.unwrap_or(0)))
            .sum()
    }
}

/// The new set's size for the next rolling step: grow to fill the surge but
/// not past the deployment's size.
pub fn new_replicas(d: &Deployment, sets: &Sets, cur: i32) -> Result<i32> {
    if !rolling(d) {
        return Ok(replicas(d));
    }
    let (surge, _) = surge_and_unavailable(d)?;
    let want = replicas(d);
    let total = sets.spec_total();
    let max_total = want + surge;
    if total >= max_total {
        return Ok(cur);
    }
    Ok(cur + (max_total - total).min(want - cur).max(0))
}

/// The new set has every replica and they are all available, with no old pods.
pub fn complete(d: &Deployment, sets: &Sets) -> bool {
    let Some(new) = &sets.new else {
        return false;
    };
    let want = replicas(d);
    rs_status(new, |s| s.replicas) == want
        && rs_status(new, |s| s.available_replicas.unwrap_or(0)) == want
        && sets.old.iter().all(|r| rs_status(r, |s| s.replicas) == 0)
        && sets.all().all(|r| settled(r))
}

/// Whether the deployment's size changed since its active sets were last
/// scaled for it.
pub fn scaling_event(d: &Deployment, sets: &Sets) -> bool {
    let want = replicas(d).to_string();
    sets.all().filter(|r| rs_replicas(r) > 0).any(|r| {
        r.annotations()
            .get(DESIRED_REPLICAS)
            .is_some_and(|v| *v != want)
    })
}

/// A rolling step: grow the new set within the surge (and stop there if it
/// grew), else shrink old sets, first by their unavailable pods, then by
/// available ones as far as maxUnavailable allows, oldest set first.
pub fn roll(d: &Deployment, sets: &Sets) -> Result<Vec<Scale>> {
    let Some(new) = &sets.new else {
        return Ok(Vec::new());
    };
    let want = replicas(d);
    let cur = rs_replicas(new);
    if cur > want {
        return Ok(vec![(new.clone(), want)]);
    }
    let mut steps = Vec::new();
    if cur < want {
        let to = new_replicas(d, sets, cur)?;
        steps.push((new.clone(), to));
        if to != cur {
            return Ok(steps);
        }
    }
    // Scale down old sets, judging availability only from statuses that
    // have caught up with their sets' last scaling (a stale count would let
    // two steps take the same available pod).
    let old_total: i32 = sets.old.iter().map(|r| rs_replicas(r)).sum();
    if old_total == 0 || !sets.all().all(|r| settled(r)) {
        return Ok(steps);
    }
    let (_, max_unavailable) = surge_and_unavailable(d)?;
    let min_available = want - max_unavailable;
    let new_unavailable = rs_replicas(new) - rs_status(new, |s| s.available_replicas.unwrap_or(0));
    let mut budget = sets.spec_total() - min_available - new_unavailable;
    if budget <= 0 {
        return Ok(steps);
    }
    let mut old: Vec<_> = sets.old.clone();
    old.sort_by_key(|r| created(r));
    // First the old pods that are not available anyway.
    let mut cleaned = 0;
    for rs in &old {
        if budget <= 0 {
            break;
        }
        let spec = rs_replicas(rs);
        let avail = rs_status(rs, |s| s.available_replicas.unwrap_or(0));
        if spec == 0 || avail >= spec {
            continue;
        }
        let down = budget.min(spec - avail);
        budget -= down;
        cleaned += down;
        steps.push((rs.clone(), spec - down));
    }
    if cleaned > 0 {
        return Ok(steps);
    }
    // Then available ones, as far as availability allows.
    let mut can = sets.available() - min_available - cleaned;
    for rs in &old {
        if can <= 0 {
            break;
        }
        let spec = rs_replicas(rs);
        if spec == 0 {
            continue;
        }
        let down = can.min(spec);
        can -= down;
        steps.push((rs.clone(), spec - down));
    }
    Ok(steps)
}

/// Recreate's first step: every old set with replicas to zero.
pub fn recreate_old(sets: &Sets) -> Vec<Scale> {
    sets.old
        .iter()
        .filter(|rs| rs_replicas(rs) > 0)
        .map(|rs| (rs.clone(), 0))
        .collect()
}

/// Bring every active set to the deployment's size without rolling (a paused
/// deployment, or a scale while a rollout is under way): proportionally,
/// within the surge; the rest goes to the biggest set (newest on growth,
/// oldest on shrink).
pub fn proportional(d: &Deployment, sets: &Sets) -> Result<Vec<Scale>> {
    let want = replicas(d);
    let active: Vec<&Arc<ReplicaSet>> = sets.all().filter(|r| rs_replicas(r) > 0).collect();
    if active.len() <= 1 {
        let target = active
            .first()
            .copied()
            .or(sets.new.as_ref())
            .or(sets.old.last());
        return Ok(target.map(|rs| (rs.clone(), want)).into_iter().collect());
    }
    if let Some(new) = &sets.new
        && rs_replicas(new) == want
        && rs_status(new, |s| s.available_replicas.unwrap_or(0)) == want
    {
        return Ok(sets.old.iter().map(|rs| (rs.clone(), 0)).collect());
    }
    let (surge, _) = surge_and_unavailable(d)?;
    let allowed = if want > 0 { want + surge } else { 0 };
    let total: i32 = active.iter().map(|r| rs_replicas(r)).sum();
    let delta = allowed - total;
    if delta == 0 {
        return Ok(Vec::new());
    }
    let mut order = active.clone();
    if delta > 0 {
        order.sort_by_key(|r| (-rs_replicas(r), std::cmp::Reverse(created(r))));
    } else {
        order.sort_by_key(|r| (-rs_replicas(r), created(r)));
    }
    let mut given = 0;
    let mut sizes: Vec<i32> = order
        .iter()
        .map(|r| {
            let share = i64::from(delta) * i64::from(rs_replicas(r)) / i64::from(total.max(1));
            given += share as i32;
            rs_replicas(r) + share as i32
        })
        .collect();
    sizes[0] += delta - given;
    Ok(order
        .iter()
        .zip(sizes)
        .map(|(rs, size)| ((*rs).clone(), size.max(0)))
        .collect())
}

/// Old, empty sets beyond revisionHistoryLimit, oldest revision first.
pub fn cleanup(d: &Deployment, sets: &Sets) -> Vec<Arc<ReplicaSet>> {
    let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut cleanable: Vec<_> = sets
        .old
        .iter()
        .filter(|r| {
            rs_replicas(r) == 0 && rs_status(r, |s| s.replicas) == 0 && !terminating(r.as_ref())
        })
        .cloned()
        .collect();
    if cleanable.len() <= limit {
        return Vec::new();
    }
    cleanable.sort_by_key(|r| (revision(r), created(r)));
    let n = cleanable.len() - limit;
    cleanable.truncate(n);
    cleanable
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    /// A deployment of `n` replicas; RollingUpdate with (surge, unavailable),
    /// or Recreate when `None`.
    fn deployment(n: i32, rolling: Option<(i32, i32)>) -> Deployment {
        Deployment {
            spec: DeploymentSpec {
                replicas: Some(n),
                strategy: Some(match rolling {
                    Some((surge, unavailable)) => DeploymentStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(RollingUpdateDeployment {
                            max_surge: Some(IntOrString::Int(surge)),
                            max_unavailable: Some(IntOrString::Int(unavailable)),
                        }),
                    },
                    None => DeploymentStrategy {
                        type_: Some("Recreate".into()),
                        rolling_update: None,
                    },
                }),
                revision_history_limit: Some(1),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A set: name, spec replicas, status replicas, available, created (s),
    /// revision; its status has caught up.
    fn rs(
        name: &str,
        spec: i32,
        have: i32,
        available: i32,
        created: i64,
        rev: i64,
    ) -> Arc<ReplicaSet> {
        Arc::new(ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                generation: Some(1),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                annotations: Some([(super::super::REVISION.to_string(), rev.to_string())].into()),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            },
            status: Some(ReplicaSetStatus {
                replicas: have,
                available_replicas: Some(available),
                observed_generation: Some(1),
                ..Default::default()
            }),
        })
    }

    fn sets(new: Option<Arc<ReplicaSet>>, old: Vec<Arc<ReplicaSet>>) -> Sets {
        Sets { new, old }
    }

    /// What, the sets, and the steps wanted (set name, size).
    type RollCase = (&'static str, Sets, Vec<(&'static str, i32)>);
    type ProportionalCase = (&'static str, Deployment, Sets, Vec<(&'static str, i32)>);

    fn steps(s: Vec<Scale>) -> Vec<(String, i32)> {
        s.into_iter().map(|(rs, to)| (rs.name_any(), to)).collect()
    }

    #[test]
    fn roll_table() {
        let d = deployment(4, Some((1, 1)));
        let cases: Vec<RollCase> = vec![
            (
                "start: new set grows by the surge",
                sets(
                    Some(rs("new", 0, 0, 0, 20, 2)),
                    vec![rs("old", 4, 4, 4, 10, 1)],
                ),
                vec![("new", 1)],
            ),
            (
                "surge used: old shrinks within maxUnavailable",
                sets(
                    Some(rs("new", 1, 1, 0, 20, 2)),
                    vec![rs("old", 4, 4, 4, 10, 1)],
                ),
                vec![("new", 1), ("old", 3)],
            ),
            (
                "unavailable old pods go first",
                sets(
                    Some(rs("new", 1, 1, 1, 20, 2)),
                    vec![rs("old", 4, 4, 2, 10, 1)],
                ),
                vec![("new", 1), ("old", 2)],
            ),
            (
                "new pods not available yet: no budget to shrink",
                sets(
                    Some(rs("new", 2, 2, 0, 20, 2)),
                    vec![rs("old", 3, 3, 3, 10, 1)],
                ),
                vec![("new", 2)],
            ),
            (
                "new set too big: back to size",
                sets(Some(rs("new", 6, 6, 6, 20, 2)), vec![]),
                vec![("new", 4)],
            ),
            (
                "done: nothing but the size note",
                sets(
                    Some(rs("new", 4, 4, 4, 20, 2)),
                    vec![rs("old", 0, 0, 0, 10, 1)],
                ),
                vec![],
            ),
            (
                "no new set: nothing",
                sets(None, vec![rs("old", 4, 4, 4, 10, 1)]),
                vec![],
            ),
        ];
        for (what, s, want) in cases {
            let want: Vec<(String, i32)> = want.into_iter().map(|(n, t)| (n.into(), t)).collect();
            assert_eq!(steps(roll(&d, &s).unwrap()), want, "{what}");
        }
    }

    #[test]
    fn roll_waits_for_statuses_to_catch_up() {
        let d = deployment(4, Some((1, 1)));
        let mut stale = (*rs("old", 4, 4, 4, 10, 1)).clone();
        stale.metadata.generation = Some(2);
        let s = sets(Some(rs("new", 1, 1, 0, 20, 2)), vec![Arc::new(stale)]);
        assert_eq!(steps(roll(&d, &s).unwrap()), vec![("new".to_string(), 1)]);
    }

    #[test]
    fn proportional_table() {
        let cases: Vec<ProportionalCase> = vec![
            (
                "one active set takes the size",
                deployment(5, Some((1, 1))),
                sets(
                    Some(rs("new", 3, 3, 3, 20, 2)),
                    vec![rs("old", 0, 0, 0, 10, 1)],
                ),
                vec![("new", 5)],
            ),
            (
                "new set complete: old ones to zero",
                deployment(3, Some((1, 1))),
                sets(
                    Some(rs("new", 3, 3, 3, 20, 2)),
                    vec![rs("old", 1, 1, 1, 10, 1)],
                ),
                vec![("old", 0)],
            ),
            (
                "grow shared by size, rest to the biggest",
                deployment(10, Some((0, 1))),
                sets(
                    Some(rs("new", 2, 2, 2, 20, 2)),
                    vec![rs("old", 4, 4, 4, 10, 1)],
                ),
                vec![("old", 7), ("new", 3)],
            ),
            (
                "shrink shared by size",
                deployment(2, Some((0, 1))),
                sets(
                    Some(rs("new", 2, 2, 1, 20, 2)),
                    vec![rs("old", 4, 4, 4, 10, 1)],
                ),
                vec![("old", 1), ("new", 1)],
            ),
            (
                "within the surge: nothing",
                deployment(5, Some((1, 1))),
                sets(
                    Some(rs("new", 2, 2, 2, 20, 2)),
                    vec![rs("old", 4, 4, 4, 10, 1)],
                ),
                vec![],
            ),
        ];
        for (what, d, s, want) in cases {
            let want: Vec<(String, i32)> = want.into_iter().map(|(n, t)| (n.into(), t)).collect();
            assert_eq!(steps(proportional(&d, &s).unwrap()), want, "{what}");
        }
    }

    #[test]
    fn recreate_and_cleanup() {
        let s = sets(
            Some(rs("new", 0, 0, 0, 30, 3)),
            vec![
                rs("a", 2, 2, 2, 10, 1),
                rs("b", 0, 0, 0, 20, 2),
                rs("c", 0, 0, 0, 5, 0),
                rs("d", 0, 1, 0, 25, 4),
            ],
        );
        assert_eq!(steps(recreate_old(&s)), vec![("a".to_string(), 0)]);
        // Empty old sets: c (revision 0) and b (1); the limit keeps one.
        let gone: Vec<String> = cleanup(&deployment(1, None), &s)
            .iter()
            .map(|r| r.name_any())
            .collect();
        assert_eq!(gone, vec!["c".to_string()]);
    }
}
