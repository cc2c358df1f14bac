//! The HorizontalPodAutoscaler's arithmetic (autoscaling/v2), as Kubernetes'
//! horizontal.go and replica_calculator.go do it: the replicas one metric asks
//! for (tolerance, pods with missing metrics, unready pods, never a move in the
//! opposite direction), then the behavior (stabilisation windows, scaling
//! policies, selectPolicy) and the min/max clamp, with the reasons Kubernetes
//! puts in the AbleToScale and ScalingLimited conditions.
//!
//! **Pure: no I/O, no clock. Times come in as `Instant`s or seconds.**

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior,
};

/// kube-controller-manager's `--horizontal-pod-autoscaler-tolerance`.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD_SECS: f64 = 300.0;
/// `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY_SECS: f64 = 30.0;
/// `--horizontal-pod-autoscaler-downscale-stabilization`: the scale-down
/// window when the behavior leaves it unset.
pub const DOWNSCALE_STABILIZATION_SECS: i32 = 300;

/// Per-pod facts the calculator needs for one metric. The caller leaves out
/// pods being deleted and Failed pods, as Kubernetes ignores them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSample {
    pub name: String,
    /// Phase Pending: set aside (as unready) for every metric.
    pub pending: bool,
    /// With `cpu_rules`, the sample is set aside as unready when
    /// `started_recently && !ready`. [`cpu_flags`] computes both flags from
    /// Kubernetes' rule; without `cpu_rules` they are not looked at.
    pub ready: bool,
    pub started_recently: bool,
    /// The pod's metric (cpu in millicores, memory in bytes, or the custom
    /// value); `None` = no metric for this pod.
    pub value: Option<f64>,
    /// The resource request summed over the containers, same unit as
    /// `value`; needed by `Utilization` targets only.
    pub request: Option<f64>,
}

/// What a metric is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricTarget {
    /// Percent of the pods' requests (Resource and ContainerResource metrics).
    Utilization(i32),
    /// Per pod.
    AverageValue(f64),
    /// A total, for Object and External metrics.
    Value(f64),
}

/// What one metric asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricResult {
    pub replicas: i32,
    /// The current average (per pod) of the ready pods' values, or the total
    /// for a `Value` target; for the HPA's status.
    pub average_value: f64,
    /// Current utilization in percent of the requests (`Utilization` only).
    pub utilization: Option<i32>,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum CalcError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    #[error("missing request for the resource in pod {pod}")]
    MissingRequest { pod: String },
    #[error("no metrics returned matched known pods")]
    ZeroRequests,
    #[error("the metric target must be greater than zero, not {0}")]
    InvalidTarget(f64),
}

/// The ratio band within which a metric moves nothing: scale down only below
/// `1 - scale_down`, up only above `1 + scale_up`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    pub scale_down: f64,
    pub scale_up: f64,
}

impl Tolerances {
    pub fn symmetric(t: f64) -> Self {
        Self {
            scale_down: t,
            scale_up: t,
        }
    }

    fn is_within(&self, ratio: f64) -> bool {
        1.0 - self.scale_down <= ratio && ratio <= 1.0 + self.scale_up
    }
}

/// The tolerances of an HPA: the behavior's per-direction `tolerance` where
/// set, `default` otherwise.
pub fn tolerances(behavior: Option<&HorizontalPodAutoscalerBehavior>, default: f64) -> Tolerances {
    let of = |rules: Option<&HPAScalingRules>| {
        rules
            .and_then(|r| r.tolerance.as_ref())
            .and_then(|q| skiff_common::quantity::parse(&q.0))
            .unwrap_or(default)
    };
    Tolerances {
        scale_down: of(behavior.and_then(|b| b.scale_down.as_ref())),
        scale_up: of(behavior.and_then(|b| b.scale_up.as_ref())),
    }
}

/// Kubernetes' CPU readiness rule, as `(ready, started_recently)` for
/// [`PodSample`]. All times in seconds on one clock (e.g. Unix seconds):
/// `start` is the pod's `status.startTime`, `ready_condition` the Ready
/// condition's status ("True", "False", "Unknown") and lastTransitionTime,
/// `sample_end` and `sample_window` the metric's timestamp and window.
///
/// The sample is set aside when the pod has no start time or Ready
/// condition; within the initialisation period when it is not ready or the
/// sample's window began before the last readiness change; after it, when it
/// is unready and has never been ready (it turned unready within the initial
/// readiness delay of starting).
pub fn cpu_flags(
    now: f64,
    start: Option<f64>,
    ready_condition: Option<(&str, f64)>,
    sample_end: f64,
    sample_window: f64,
) -> (bool, bool) {
    let (Some(start), Some((status, transition))) = (start, ready_condition) else {
        return (false, true);
    };
    let not_false = status != "False";
    if start + CPU_INITIALIZATION_PERIOD_SECS > now {
        (not_false && sample_end >= transition + sample_window, true)
    } else {
        (
            not_false,
            !not_false && start + INITIAL_READINESS_DELAY_SECS > transition,
        )
    }
}

/// [`replicas_for_with`] with the same tolerance both ways.
pub fn replicas_for(
    current_replicas: i32,
    pods: &[PodSample],
    target: &MetricTarget,
    tolerance: f64,
    cpu_rules: bool,
) -> Result<MetricResult, CalcError> {
    replicas_for_with(
        current_replicas,
        pods,
        target,
        Tolerances::symmetric(tolerance),
        cpu_rules,
    )
}

/// The replicas one per-pod metric asks for: Kubernetes' GetResourceReplicas
/// (`Utilization`) and GetRawResourceReplicas / GetMetricReplicas
/// (`AverageValue`). Pods without a metric count as using the target (at
/// least 100% of their request) when scaling down and nothing when scaling
/// up; unready pods count as using nothing when scaling up and are left out
/// otherwise; if taking them in would reverse the direction, or changes too
/// little, the replicas stay. `cpu_rules` applies the CPU readiness rule
/// (see [`PodSample::ready`]).
///
/// Unlike Kubernetes' integer milli-values, averages are not truncated; the
/// utilization is truncated to a whole percent as Kubernetes does.
///
/// A `Value` target sums the samples' values and multiplies the ratio by the
/// ready pods (see [`replicas_for_total`], which Object and External metrics
/// should call directly).
pub fn replicas_for_with(
    current_replicas: i32,
    pods: &[PodSample],
    target: &MetricTarget,
    tol: Tolerances,
    cpu_rules: bool,
) -> Result<MetricResult, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    match *target {
        MetricTarget::Utilization(t) => {
            if t <= 0 {
                return Err(CalcError::InvalidTarget(t as f64));
            }
            let mut requests = Vec::with_capacity(pods.len());
            for p in pods {
                match p.request {
                    Some(r) => requests.push(r),
                    None => {
                        return Err(CalcError::MissingRequest {
                            pod: p.name.clone(),
                        });
                    }
                }
            }
            let fallback = t.max(100) as f64;
            calculate(
                current_replicas,
                pods,
                tol,
                cpu_rules,
                |metrics| utilization_ratio(metrics, &requests, t),
                |i| (requests[i] * fallback / 100.0).trunc(),
            )
        }
        MetricTarget::AverageValue(t) => {
            check_target(t)?;
            calculate(
                current_replicas,
                pods,
                tol,
                cpu_rules,
                |metrics| {
                    let avg = metrics.iter().map(|(_, v)| v).sum::<f64>() / metrics.len() as f64;
                    Ok((avg / t, avg, None))
                },
                |_| t,
            )
        }
        MetricTarget::Value(t) => {
            let values: Vec<f64> = pods.iter().filter_map(|p| p.value).collect();
            if values.is_empty() {
                return Err(CalcError::NoMetrics);
            }
            let ready = pods.iter().filter(|p| p.ready && !p.pending).count() as i32;
            replicas_for_total(current_replicas, values.iter().sum(), ready, t, tol)
        }
    }
}

/// An Object or External metric against a `Value` target (Kubernetes'
/// GetObjectMetricReplicas / GetExternalMetricReplicas): the ratio of `total`
/// to `target` times the ready (Running and Ready) pods; from zero replicas,
/// the ratio alone, with no tolerance, so a scaled-to-zero target can wake.
pub fn replicas_for_total(
    current_replicas: i32,
    total: f64,
    ready_pods: i32,
    target: f64,
    tol: Tolerances,
) -> Result<MetricResult, CalcError> {
    check_target(target)?;
    let ratio = total / target;
    let replicas = if current_replicas != 0 {
        if tol.is_within(ratio) {
            current_replicas
        } else {
            ceil_i32(ratio * ready_pods as f64)
        }
    } else {
        ceil_i32(ratio)
    };
    Ok(MetricResult {
        replicas,
        average_value: total,
        utilization: None,
    })
}

/// An Object or External metric against an `AverageValue` target
/// (Kubernetes' GetObjectPerPodMetricReplicas /
/// GetExternalPerPodMetricReplicas): `total` over the target per pod, when
/// the current `status_replicas` are outside the tolerance.
pub fn replicas_for_total_average(
    status_replicas: i32,
    total: f64,
    target_average: f64,
    tol: Tolerances,
) -> Result<MetricResult, CalcError> {
    check_target(target_average)?;
    let ratio = total / (target_average * status_replicas as f64);
    let replicas = if tol.is_within(ratio) {
        status_replicas
    } else {
        ceil_i32(total / target_average)
    };
    Ok(MetricResult {
        replicas,
        average_value: total / status_replicas.max(1) as f64,
        utilization: None,
    })
}

/// `(ratio, average, utilization)` of a set of `(pod index, value)`.
type Ratio = (f64, f64, Option<i32>);

/// The shared body of GetResourceReplicas and calcPlainMetricReplicas.
fn calculate(
    current: i32,
    pods: &[PodSample],
    tol: Tolerances,
    cpu_rules: bool,
    ratio_of: impl Fn(&[(usize, f64)]) -> Result<Ratio, CalcError>,
    missing_fallback: impl Fn(usize) -> f64,
) -> Result<MetricResult, CalcError> {
    let mut ready = 0usize;
    let mut unready = Vec::new();
    let mut missing = Vec::new();
    let mut metrics = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        if p.pending {
            unready.push(i);
            continue;
        }
        let Some(v) = p.value else {
            missing.push(i);
            continue;
        };
        if cpu_rules && p.started_recently && !p.ready {
            unready.push(i);
            continue;
        }
        ready += 1;
        metrics.push((i, v));
    }
    if metrics.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let (ratio, average_value, utilization) = ratio_of(&metrics)?;
    let result = |replicas| MetricResult {
        replicas,
        average_value,
        utilization,
    };

    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if tol.is_within(ratio) {
            return Ok(result(current));
        }
        return Ok(result(ceil_i32(ratio * ready as f64)));
    }

    if ratio < 1.0 {
        metrics.extend(missing.iter().map(|&i| (i, missing_fallback(i))));
    } else if ratio > 1.0 {
        metrics.extend(missing.iter().map(|&i| (i, 0.0)));
    }
    if scale_up_with_unready {
        metrics.extend(unready.iter().map(|&i| (i, 0.0)));
    }

    let (new_ratio, _, _) = ratio_of(&metrics)?;
    if tol.is_within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(result(current));
    }
    let new_replicas = ceil_i32(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && new_replicas > current) || (new_ratio > 1.0 && new_replicas < current) {
        return Ok(result(current));
    }
    Ok(result(new_replicas))
}

/// Kubernetes' GetResourceUtilizationRatio: the utilization in whole
/// percent (truncated) of the summed requests, over the target.
fn utilization_ratio(
    metrics: &[(usize, f64)],
    requests: &[f64],
    target: i32,
) -> Result<Ratio, CalcError> {
    let total: f64 = metrics.iter().map(|(_, v)| v).sum();
    let requested: f64 = metrics.iter().map(|&(i, _)| requests[i]).sum();
    if requested == 0.0 {
        return Err(CalcError::ZeroRequests);
    }
    let utilization = (total * 100.0 / requested).trunc() as i32;
    Ok((
        utilization as f64 / target as f64,
        total / metrics.len() as f64,
        Some(utilization),
    ))
}

/// Targets must be positive (Kubernetes' validation makes them so).
fn check_target(t: f64) -> Result<(), CalcError> {
    if t.is_nan() || t <= 0.0 {
        return Err(CalcError::InvalidTarget(t));
    }
    Ok(())
}

/// Rounds up, saturating at the bounds of `i32`.
fn ceil_i32(x: f64) -> i32 {
    x.ceil() as i32
}

/// What one HPA remembers between passes (kept in memory by the controller).
#[derive(Default, Debug, Clone)]
pub struct History {
    /// Unstabilised recommendations.
    recommendations: Vec<(Instant, i32)>,
    /// Replicas added by each scale-up.
    scale_up_events: Vec<(Instant, i32)>,
    /// Replicas removed by each scale-down.
    scale_down_events: Vec<(Instant, i32)>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: i32,
    /// The ScalingLimited condition's status: the policies or min/max changed
    /// the stabilised recommendation.
    pub limited: bool,
    /// "DesiredWithinRange" | "TooFewReplicas" | "TooManyReplicas" |
    /// "ScaleUpLimit" | "ScaleDownLimit".
    pub limited_reason: &'static str,
    pub limited_message: String,
    /// "ScaleUpStabilized" | "ScaleDownStabilized" when the stabilisation
    /// window held the recommendation back (the AbleToScale condition's
    /// reason, with `stabilized_message`); `None` means Kubernetes'
    /// "ReadyForNewScale" ("recommended size matches current size").
    pub stabilized: Option<&'static str>,
    pub stabilized_message: &'static str,
}

/// The behavior with every unset field filled, as Kubernetes' defaulting
/// (SetDefaults_HorizontalPodAutoscalerBehavior) and the controller (unset
/// scale-down window) do. `None` gets the full defaults: scale up with no
/// window, 4 pods or 100% per 15 s, the larger; scale down with a 300 s
/// window, 100% per 15 s.
pub fn defaulted(
    behavior: Option<&HorizontalPodAutoscalerBehavior>,
) -> HorizontalPodAutoscalerBehavior {
    let policy = |type_: &str, value, period_seconds| HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds,
    };
    let fill = |from: Option<&HPAScalingRules>, window: i32, policies: Vec<HPAScalingPolicy>| {
        let from = from.cloned().unwrap_or_default();
        HPAScalingRules {
            policies: Some(from.policies.unwrap_or(policies)),
            select_policy: Some(from.select_policy.unwrap_or_else(|| "Max".into())),
            stabilization_window_seconds: Some(from.stabilization_window_seconds.unwrap_or(window)),
            tolerance: from.tolerance,
        }
    };
    HorizontalPodAutoscalerBehavior {
        scale_up: Some(fill(
            behavior.and_then(|b| b.scale_up.as_ref()),
            0,
            vec![policy("Pods", 4, 15), policy("Percent", 100, 15)],
        )),
        scale_down: Some(fill(
            behavior.and_then(|b| b.scale_down.as_ref()),
            DOWNSCALE_STABILIZATION_SECS,
            vec![policy("Percent", 100, 15)],
        )),
    }
}

/// Stabilisation, then the rate policies and the min/max clamp, as Kubernetes'
/// normalizeDesiredReplicasWithBehaviors does. Records `proposed` (the
/// metrics' recommendation) in `history`; drops what no window or period can
/// use any more. The cases Kubernetes settles before looking at metrics
/// (current replicas zero, above max or below min) are [`preflight`]'s.
pub fn decide(
    history: &mut History,
    now: Instant,
    behavior: Option<&HorizontalPodAutoscalerBehavior>,
    min_replicas: i32,
    max_replicas: i32,
    current: i32,
    proposed: i32,
) -> Decision {
    let b = defaulted(behavior);
    let (up, down) = (
        b.scale_up.unwrap_or_default(),
        b.scale_down.unwrap_or_default(),
    );

    prune_events(&mut history.scale_up_events, now, longest_period(&up));
    prune_events(&mut history.scale_down_events, now, longest_period(&down));

    let (stabilized, reason, message) = stabilize(history, now, &up, &down, current, proposed);
    let (desired, limited_reason, limited_message) = limit_rate(
        history,
        now,
        &up,
        &down,
        min_replicas,
        max_replicas,
        current,
        stabilized,
    );
    let held = stabilized != proposed;
    Decision {
        desired,
        limited: desired != stabilized,
        limited_reason,
        limited_message: limited_message.to_string(),
        stabilized: held.then_some(reason),
        stabilized_message: if held { message } else { "" },
    }
}

/// Record a scale that happened (for the rate policies).
pub fn record_scale(history: &mut History, now: Instant, from: i32, to: i32) {
    if to > from {
        history.scale_up_events.push((now, to - from));
    } else if to < from {
        history.scale_down_events.push((now, from - to));
    }
}

/// What Kubernetes decides before computing metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preflight {
    /// The target has zero replicas and minReplicas is not zero: autoscaling
    /// is off (ScalingActive False, "ScalingDisabled").
    Disabled,
    /// Scale straight to `desired`, for `reason`, with no stabilisation.
    Fixed { desired: i32, reason: &'static str },
    /// Compute the metrics, then [`decide`].
    Compute,
}

/// The message of [`Preflight::Disabled`]'s condition.
pub const SCALING_DISABLED_MESSAGE: &str =
    "scaling is disabled since the replica count of the target is zero";

/// Kubernetes' checks of the target's `spec.replicas` against min and max.
pub fn preflight(current: i32, min_replicas: i32, max_replicas: i32) -> Preflight {
    if current == 0 && min_replicas != 0 {
        Preflight::Disabled
    } else if current > max_replicas {
        Preflight::Fixed {
            desired: max_replicas,
            reason: "Current number of replicas above Spec.MaxReplicas",
        }
    } else if current < min_replicas {
        Preflight::Fixed {
            desired: min_replicas,
            reason: "Current number of replicas below Spec.MinReplicas",
        }
    } else {
        Preflight::Compute
    }
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

fn longest_period(rules: &HPAScalingRules) -> i32 {
    rules
        .policies
        .iter()
        .flatten()
        .map(|p| p.period_seconds)
        .max()
        .unwrap_or(0)
}

fn prune_events(events: &mut Vec<(Instant, i32)>, now: Instant, longest: i32) {
    let longest = secs(longest);
    events.retain(|(t, _)| now.saturating_duration_since(*t) <= longest);
}

/// Kubernetes' stabilizeRecommendationWithBehaviors: the current replicas
/// brought within [lowest recommendation in the scale-up window, highest in
/// the scale-down window].
fn stabilize(
    history: &mut History,
    now: Instant,
    up: &HPAScalingRules,
    down: &HPAScalingRules,
    current: i32,
    desired: i32,
) -> (i32, &'static str, &'static str) {
    let up_window = secs(up.stabilization_window_seconds.unwrap_or(0));
    let down_window = secs(down.stabilization_window_seconds.unwrap_or(0));
    let mut up_rec = desired;
    let mut down_rec = desired;
    for &(t, r) in &history.recommendations {
        let age = now.saturating_duration_since(t);
        if age < up_window {
            up_rec = up_rec.min(r);
        }
        if age < down_window {
            down_rec = down_rec.max(r);
        }
    }
    let longest = up_window.max(down_window);
    history
        .recommendations
        .retain(|(t, _)| now.saturating_duration_since(*t) <= longest);
    history.recommendations.push((now, desired));

    let recommendation = current.max(up_rec).min(down_rec);
    if desired >= current {
        (
            recommendation,
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        )
    } else {
        (
            recommendation,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )
    }
}

/// Replicas added (or removed) by the events of the last `period_secs`.
fn change_in_period(events: &[(Instant, i32)], now: Instant, period_secs: i32) -> i32 {
    let period = secs(period_secs);
    events
        .iter()
        .filter(|(t, _)| now.saturating_duration_since(*t) < period)
        .map(|(_, c)| *c)
        .fold(0i32, |a, c| a.saturating_add(c))
}

/// The replicas at the start of `policy`'s period.
fn period_start(history: &History, now: Instant, current: i32, policy: &HPAScalingPolicy) -> i32 {
    current
        .saturating_sub(change_in_period(
            &history.scale_up_events,
            now,
            policy.period_seconds,
        ))
        .saturating_add(change_in_period(
            &history.scale_down_events,
            now,
            policy.period_seconds,
        ))
}

/// Kubernetes' calculateScaleUpLimitWithScalingRules.
fn scale_up_limit(history: &History, now: Instant, current: i32, rules: &HPAScalingRules) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select_policy.as_deref() {
        Some("Disabled") => return current,
        Some("Min") => (i32::MAX, i32::min),
        _ => (i32::MIN, i32::max),
    };
    for p in rules.policies.iter().flatten() {
        let start = period_start(history, now, current, p);
        let proposed = match p.type_.as_str() {
            "Pods" => start.saturating_add(p.value),
            "Percent" => ceil_i32(start as f64 * (1.0 + p.value as f64 / 100.0)),
            _ => continue,
        };
        result = pick(result, proposed);
    }
    result
}

/// Kubernetes' calculateScaleDownLimitWithBehaviors.
fn scale_down_limit(history: &History, now: Instant, current: i32, rules: &HPAScalingRules) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select_policy.as_deref() {
        Some("Disabled") => return current,
        Some("Min") => (i32::MIN, i32::max),
        _ => (i32::MAX, i32::min),
    };
    for p in rules.policies.iter().flatten() {
        let start = period_start(history, now, current, p);
        let proposed = match p.type_.as_str() {
            "Pods" => start.saturating_sub(p.value),
            "Percent" => (start as f64 * (1.0 - p.value as f64 / 100.0)) as i32,
            _ => continue,
        };
        result = pick(result, proposed);
    }
    result
}

/// Kubernetes' convertDesiredReplicasWithBehaviorRate.
#[allow(clippy::too_many_arguments)]
fn limit_rate(
    history: &History,
    now: Instant,
    up: &HPAScalingRules,
    down: &HPAScalingRules,
    min_replicas: i32,
    max_replicas: i32,
    current: i32,
    desired: i32,
) -> (i32, &'static str, &'static str) {
    if desired > current {
        let limit = scale_up_limit(history, now, current, up).max(current);
        let (allowed, reason, message) = if max_replicas > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max_replicas,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if desired > allowed {
            return (allowed, reason, message);
        }
    } else if desired < current {
        let limit = scale_down_limit(history, now, current, down).min(current);
        let (allowed, reason, message) = if min_replicas < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min_replicas,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if desired < allowed {
            return (allowed, reason, message);
        }
    }
    (
        desired,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, current, pods, target, cpu_rules, replicas, utilization)
    type ReplicaCase = (
        &'static str,
        i32,
        Vec<PodSample>,
        MetricTarget,
        bool,
        i32,
        Option<i32>,
    );
    /// (name, start, Ready condition, sample end, window, set aside)
    type CpuCase = (
        &'static str,
        Option<f64>,
        Option<(&'static str, f64)>,
        f64,
        f64,
        bool,
    );
    /// (name, behavior, min, max, current, proposed, desired, reason)
    type DecideCase = (
        &'static str,
        Option<HorizontalPodAutoscalerBehavior>,
        i32,
        i32,
        i32,
        i32,
        i32,
        &'static str,
    );

    /// A running pod; `v`/`r` of -1 mean none.
    fn pod(name: &str, ready: bool, recent: bool, v: f64, r: f64) -> PodSample {
        PodSample {
            name: name.into(),
            pending: false,
            ready,
            started_recently: recent,
            value: (v >= 0.0).then_some(v),
            request: (r >= 0.0).then_some(r),
        }
    }

    fn ready(values: &[f64], request: f64) -> Vec<PodSample> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| pod(&format!("p{i}"), true, false, v, request))
            .collect()
    }

    #[test]
    fn replicas_table() {
        use MetricTarget::*;
        let unready = |n: &str, v| pod(n, false, true, v, 1000.0);
        let pending = PodSample {
            name: "pending".into(),
            pending: true,
            request: Some(1000.0),
            ..Default::default()
        };
        let with = |mut pods: Vec<PodSample>, extra: Vec<PodSample>| {
            pods.extend(extra);
            pods
        };
        let cases: Vec<ReplicaCase> = vec![
            (
                "within tolerance keeps replicas",
                3,
                ready(&[1050.0; 3], 1000.0),
                Utilization(100),
                true,
                3,
                Some(105),
            ),
            (
                "tolerance edge (110%) keeps replicas",
                3,
                ready(&[1100.0; 3], 1000.0),
                Utilization(100),
                true,
                3,
                Some(110),
            ),
            (
                "utilization scale up",
                3,
                ready(&[300.0, 500.0, 700.0], 1000.0),
                Utilization(30),
                true,
                5,
                Some(50),
            ),
            (
                "utilization scale down, whole percent",
                5,
                ready(&[100.0, 300.0, 500.0, 250.0, 250.0], 1000.0),
                Utilization(50),
                true,
                3,
                Some(28),
            ),
            // 40.5% counts as 40%: 0.8 * 10 = 8, where 0.81 * 10 would round up to 9.
            (
                "utilization truncated before the ratio",
                10,
                ready(&[405.0; 10], 1000.0),
                Utilization(50),
                true,
                8,
                Some(40),
            ),
            (
                "missing metrics on scale down count as 100%",
                4,
                ready(&[100.0, 100.0, 100.0, -1.0], 1000.0),
                Utilization(50),
                true,
                3,
                Some(10),
            ),
            (
                "missing metrics on scale down count as the target above 100%",
                3,
                ready(&[100.0, 100.0, -1.0], 1000.0),
                Utilization(200),
                true,
                2,
                Some(10),
            ),
            (
                "missing metrics on scale up count as 0",
                4,
                ready(&[900.0, 900.0, 900.0, -1.0], 1000.0),
                Utilization(50),
                true,
                6,
                Some(90),
            ),
            (
                "unready pods on scale up count as 0",
                3,
                vec![
                    unready("u", 300.0),
                    pod("a", true, false, 500.0, 1000.0),
                    pod("b", true, false, 700.0, 1000.0),
                ],
                Utilization(30),
                true,
                4,
                Some(60),
            ),
            (
                "unready pods reversing the direction keep replicas",
                3,
                vec![
                    unready("u1", 0.0),
                    unready("u2", 0.0),
                    pod("a", true, false, 600.0, 1000.0),
                ],
                Utilization(50),
                true,
                3,
                Some(60),
            ),
            (
                "unready pods left out of a scale down",
                3,
                vec![
                    unready("u", 900.0),
                    pod("a", true, false, 100.0, 1000.0),
                    pod("b", true, false, 100.0, 1000.0),
                ],
                Utilization(50),
                true,
                1,
                Some(10),
            ),
            (
                "not ready but not recent: counted for cpu",
                3,
                vec![
                    pod("old", false, false, 900.0, 1000.0),
                    pod("a", true, false, 900.0, 1000.0),
                    pod("b", true, false, 900.0, 1000.0),
                ],
                Utilization(50),
                true,
                6,
                Some(90),
            ),
            (
                "readiness ignored without cpu rules",
                2,
                vec![unready("u", 900.0), pod("a", true, false, 900.0, 1000.0)],
                Utilization(50),
                false,
                4,
                Some(90),
            ),
            (
                "pending pods count as 0 on scale up",
                3,
                with(ready(&[900.0, 900.0], 1000.0), vec![pending.clone()]),
                Utilization(50),
                false,
                4,
                Some(90),
            ),
            (
                "average value",
                3,
                ready(&[10.0, 20.0, 30.0], -1.0),
                AverageValue(10.0),
                false,
                6,
                None,
            ),
            (
                "average value within tolerance",
                3,
                ready(&[10.5, 10.0, 10.0], -1.0),
                AverageValue(10.0),
                false,
                3,
                None,
            ),
            (
                "average value, missing on scale down count as the target",
                3,
                ready(&[2.0, 2.0, -1.0], -1.0),
                AverageValue(10.0),
                false,
                2,
                None,
            ),
            (
                "value: the sum times the ready pods",
                2,
                ready(&[100.0, 200.0], -1.0),
                Value(100.0),
                false,
                6,
                None,
            ),
        ];
        for (name, current, pods, target, cpu, want, util) in cases {
            let got = replicas_for(current, &pods, &target, DEFAULT_TOLERANCE, cpu).unwrap();
            assert_eq!(got.replicas, want, "{name}");
            assert_eq!(got.utilization, util, "{name}");
        }
    }

    #[test]
    fn replicas_errors() {
        let t = MetricTarget::Utilization(50);
        let cases: Vec<(&str, Vec<PodSample>, MetricTarget, CalcError)> = vec![
            ("no pods", vec![], t, CalcError::NoPods),
            (
                "all missing",
                ready(&[-1.0, -1.0], 1000.0),
                t,
                CalcError::NoMetrics,
            ),
            (
                "all unready",
                vec![pod("u", false, true, 5.0, 1000.0)],
                t,
                CalcError::NoMetrics,
            ),
            (
                "missing request",
                vec![
                    pod("a", true, false, 5.0, 1000.0),
                    pod("b", true, false, 5.0, -1.0),
                ],
                t,
                CalcError::MissingRequest { pod: "b".into() },
            ),
            (
                "zero requests",
                ready(&[5.0], 0.0),
                t,
                CalcError::ZeroRequests,
            ),
            (
                "zero target",
                ready(&[5.0], 10.0),
                MetricTarget::AverageValue(0.0),
                CalcError::InvalidTarget(0.0),
            ),
        ];
        for (name, pods, target, want) in cases {
            assert_eq!(
                replicas_for(3, &pods, &target, 0.1, true),
                Err(want),
                "{name}"
            );
        }
    }

    #[test]
    fn totals_and_tolerances() {
        let sym = Tolerances::symmetric(0.1);
        // (current, total, ready pods, target, replicas)
        for (current, total, ready_pods, target, want) in [
            (2, 300.0, 2, 100.0, 6),
            (2, 105.0, 2, 100.0, 2),
            (0, 250.0, 0, 100.0, 3),
            (0, 0.0, 0, 100.0, 0),
        ] {
            let got = replicas_for_total(current, total, ready_pods, target, sym).unwrap();
            assert_eq!(got.replicas, want, "{current} {total}");
        }
        let got = replicas_for_total_average(3, 300.0, 50.0, sym).unwrap();
        assert_eq!((got.replicas, got.average_value), (6, 100.0));
        assert_eq!(
            replicas_for_total_average(3, 155.0, 50.0, sym)
                .unwrap()
                .replicas,
            3
        );

        // 115% is outside 10% but within a 20% scale-up tolerance.
        let pods = ready(&[1150.0; 2], 1000.0);
        let t = MetricTarget::Utilization(100);
        assert_eq!(replicas_for(2, &pods, &t, 0.1, true).unwrap().replicas, 3);
        let wide = Tolerances {
            scale_down: 0.1,
            scale_up: 0.2,
        };
        assert_eq!(
            replicas_for_with(2, &pods, &t, wide, true)
                .unwrap()
                .replicas,
            2
        );

        let b: HorizontalPodAutoscalerBehavior = serde_json::from_value(serde_json::json!({
            "scaleUp": {"tolerance": "50m"}
        }))
        .unwrap();
        assert_eq!(
            tolerances(Some(&b), 0.1),
            Tolerances {
                scale_down: 0.1,
                scale_up: 0.05
            }
        );
        assert_eq!(tolerances(None, 0.2), Tolerances::symmetric(0.2));
    }

    #[test]
    fn cpu_flags_table() {
        let now = 1000.0;
        let cases: Vec<CpuCase> = vec![
            ("no start time", None, Some(("True", 0.0)), now, 30.0, true),
            ("no ready condition", Some(0.0), None, now, 30.0, true),
            (
                "young and unready",
                Some(900.0),
                Some(("False", 900.0)),
                now,
                30.0,
                true,
            ),
            (
                "young, ready, sample after readiness",
                Some(900.0),
                Some(("True", 920.0)),
                960.0,
                30.0,
                false,
            ),
            (
                "young, ready, sample straddles readiness",
                Some(900.0),
                Some(("True", 950.0)),
                960.0,
                30.0,
                true,
            ),
            (
                "young, unknown readiness",
                Some(900.0),
                Some(("Unknown", 900.0)),
                960.0,
                30.0,
                false,
            ),
            (
                "old, never ready",
                Some(0.0),
                Some(("False", 10.0)),
                now,
                30.0,
                true,
            ),
            (
                "old, was ready once",
                Some(0.0),
                Some(("False", 500.0)),
                now,
                30.0,
                false,
            ),
            (
                "old and ready",
                Some(0.0),
                Some(("True", 10.0)),
                now,
                30.0,
                false,
            ),
        ];
        for (name, start, cond, end, window, aside) in cases {
            let (ready, recent) = cpu_flags(now, start, cond, end, window);
            assert_eq!(recent && !ready, aside, "{name}");
        }
    }

    fn rules(window: i32, select: &str, policies: &[(&str, i32, i32)]) -> HPAScalingRules {
        HPAScalingRules {
            policies: Some(
                policies
                    .iter()
                    .map(|&(t, value, period_seconds)| HPAScalingPolicy {
                        type_: t.into(),
                        value,
                        period_seconds,
                    })
                    .collect(),
            ),
            select_policy: Some(select.into()),
            stabilization_window_seconds: Some(window),
            tolerance: None,
        }
    }

    fn behavior(
        up: Option<HPAScalingRules>,
        down: Option<HPAScalingRules>,
    ) -> HorizontalPodAutoscalerBehavior {
        HorizontalPodAutoscalerBehavior {
            scale_up: up,
            scale_down: down,
        }
    }

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn decide_table() {
        let fast_down = rules(0, "Max", &[("Percent", 100, 15)]);
        let fast_up = rules(0, "Max", &[("Percent", 1000, 15)]);
        let pods_percent = |select| rules(0, select, &[("Pods", 4, 60), ("Percent", 50, 60)]);
        let cases: Vec<DecideCase> = vec![
            (
                "defaults limit a scale up to max(+4, x2)",
                None,
                1,
                100,
                2,
                20,
                6,
                "ScaleUpLimit",
            ),
            (
                "defaults, large: x2",
                None,
                1,
                100,
                10,
                50,
                20,
                "ScaleUpLimit",
            ),
            (
                "defaults, within the rate",
                None,
                1,
                100,
                2,
                5,
                5,
                "DesiredWithinRange",
            ),
            (
                "Max select takes the larger change",
                Some(behavior(Some(pods_percent("Max")), None)),
                1,
                100,
                10,
                30,
                15,
                "ScaleUpLimit",
            ),
            (
                "Min select takes the smaller change",
                Some(behavior(Some(pods_percent("Min")), None)),
                1,
                100,
                10,
                30,
                14,
                "ScaleUpLimit",
            ),
            (
                "max clamps",
                Some(behavior(Some(fast_up.clone()), None)),
                1,
                10,
                5,
                50,
                10,
                "TooManyReplicas",
            ),
            (
                "min clamps",
                Some(behavior(None, Some(fast_down.clone()))),
                3,
                10,
                5,
                1,
                3,
                "TooFewReplicas",
            ),
            (
                "min 0 allows zero",
                Some(behavior(None, Some(fast_down.clone()))),
                0,
                10,
                2,
                0,
                0,
                "DesiredWithinRange",
            ),
            (
                "scale down Percent truncates",
                Some(behavior(
                    None,
                    Some(rules(0, "Max", &[("Percent", 25, 60)])),
                )),
                1,
                10,
                10,
                2,
                7,
                "ScaleDownLimit",
            ),
            (
                "scale down Pods/Percent Min select",
                Some(behavior(
                    None,
                    Some(rules(0, "Min", &[("Pods", 1, 60), ("Percent", 50, 60)])),
                )),
                1,
                20,
                10,
                2,
                9,
                "ScaleDownLimit",
            ),
            (
                "scale down Pods/Percent Max select",
                Some(behavior(
                    None,
                    Some(rules(0, "Max", &[("Pods", 1, 60), ("Percent", 50, 60)])),
                )),
                1,
                20,
                10,
                2,
                5,
                "ScaleDownLimit",
            ),
            (
                "scale up Disabled",
                Some(behavior(
                    Some(rules(0, "Disabled", &[("Pods", 4, 15)])),
                    None,
                )),
                1,
                10,
                3,
                8,
                3,
                "ScaleUpLimit",
            ),
            (
                "scale down Disabled",
                Some(behavior(
                    None,
                    Some(rules(0, "Disabled", &[("Percent", 100, 15)])),
                )),
                1,
                10,
                8,
                2,
                8,
                "ScaleDownLimit",
            ),
            ("no change", None, 1, 10, 4, 4, 4, "DesiredWithinRange"),
        ];
        let now = Instant::now();
        for (name, b, min, max, current, proposed, want, reason) in cases {
            let mut h = History::default();
            let d = decide(&mut h, now, b.as_ref(), min, max, current, proposed);
            assert_eq!((d.desired, d.limited_reason), (want, reason), "{name}");
            assert_eq!(d.limited, reason != "DesiredWithinRange", "{name}");
            assert_eq!(d.stabilized, None, "{name}");
        }
    }

    #[test]
    fn scale_down_stabilisation_window() {
        let t0 = Instant::now();
        let mut h = History::default();
        let d = decide(&mut h, t0, None, 1, 10, 10, 10);
        assert_eq!((d.desired, d.stabilized), (10, None));

        // The recommendation of 10 a minute ago holds the scale-down back.
        let d = decide(&mut h, at(t0, 60), None, 1, 10, 10, 4);
        assert_eq!((d.desired, d.stabilized), (10, Some("ScaleDownStabilized")));
        assert!(
            d.stabilized_message
                .starts_with("recent recommendations were higher")
        );
        assert_eq!(d.limited_reason, "DesiredWithinRange");

        // Once it is out of the 300 s window, the lower ones go through.
        let d = decide(&mut h, at(t0, 301), None, 1, 10, 10, 4);
        assert_eq!((d.desired, d.stabilized), (4, None));
        // Only the recommendations still within the window are kept.
        assert_eq!(h.recommendations.len(), 2);
    }

    #[test]
    fn scale_up_stabilisation_window() {
        let up = rules(60, "Max", &[("Percent", 1000, 15)]);
        let b = behavior(Some(up), Some(rules(0, "Max", &[("Percent", 100, 15)])));
        let t0 = Instant::now();
        let mut h = History::default();
        decide(&mut h, t0, Some(&b), 1, 20, 3, 3);
        let d = decide(&mut h, at(t0, 10), Some(&b), 1, 20, 3, 8);
        assert_eq!((d.desired, d.stabilized), (3, Some("ScaleUpStabilized")));
        // The 3 has left the 60 s window; the lowest left is 8.
        let d = decide(&mut h, at(t0, 65), Some(&b), 1, 20, 3, 9);
        assert_eq!((d.desired, d.stabilized), (8, Some("ScaleUpStabilized")));
        let d = decide(&mut h, at(t0, 120), Some(&b), 1, 20, 8, 9);
        assert_eq!((d.desired, d.stabilized), (9, None));
    }

    #[test]
    fn policies_count_recent_scales() {
        let up = rules(0, "Max", &[("Pods", 4, 60)]);
        let b = behavior(Some(up), None);
        let t0 = Instant::now();
        let mut h = History::default();
        let d = decide(&mut h, t0, Some(&b), 1, 100, 10, 30);
        assert_eq!(d.desired, 14);
        record_scale(&mut h, t0, 10, 14);

        // Within the period the 4 pods are spent.
        let d = decide(&mut h, at(t0, 30), Some(&b), 1, 100, 14, 30);
        assert_eq!((d.desired, d.limited_reason), (14, "ScaleUpLimit"));
        assert!(d.limited);

        // A scale-down in the period gives room back.
        record_scale(&mut h, at(t0, 31), 14, 12);
        let d = decide(&mut h, at(t0, 32), Some(&b), 1, 100, 12, 30);
        assert_eq!(d.desired, 14);

        // After the period, 4 more.
        let d = decide(&mut h, at(t0, 100), Some(&b), 1, 100, 14, 30);
        assert_eq!(d.desired, 18);
        assert!(h.scale_up_events.is_empty(), "old events are dropped");
    }

    #[test]
    fn defaults_fill_unset_fields() {
        let all = defaulted(None);
        let up = all.scale_up.unwrap();
        assert_eq!(up.stabilization_window_seconds, Some(0));
        assert_eq!(up.select_policy.as_deref(), Some("Max"));
        assert_eq!(up.policies.unwrap().len(), 2);
        let down = all.scale_down.unwrap();
        assert_eq!(down.stabilization_window_seconds, Some(300));
        assert_eq!(down.policies.unwrap()[0].type_, "Percent");

        let partial = behavior(
            None,
            Some(HPAScalingRules {
                select_policy: Some("Min".into()),
                ..Default::default()
            }),
        );
        let down = defaulted(Some(&partial)).scale_down.unwrap();
        assert_eq!(down.select_policy.as_deref(), Some("Min"));
        assert_eq!(down.stabilization_window_seconds, Some(300));
        assert_eq!(down.policies.unwrap()[0].value, 100);
    }

    #[test]
    fn preflight_table() {
        let cases = [
            (0, 1, 10, Preflight::Disabled),
            (0, 0, 10, Preflight::Compute),
            (
                12,
                1,
                10,
                Preflight::Fixed {
                    desired: 10,
                    reason: "Current number of replicas above Spec.MaxReplicas",
                },
            ),
            (
                1,
                2,
                10,
                Preflight::Fixed {
                    desired: 2,
                    reason: "Current number of replicas below Spec.MinReplicas",
                },
            ),
            (5, 1, 10, Preflight::Compute),
        ];
        for (current, min, max, want) in cases {
            assert_eq!(preflight(current, min, max), want, "{current} {min} {max}");
        }
    }
}
