//! The HorizontalPodAutoscaler controller (autoscaling/v2): every sync period
//! it reads the target's scale, the metrics of its pods through the metrics
//! APIs (`metrics.k8s.io` for cpu and memory, `custom.metrics.k8s.io` for Pods
//! metrics such as `requests_per_second` and `concurrency`), computes the
//! replicas each metric asks for and scales to the largest, within the
//! behavior's stabilisation windows and rate policies (`calc`), and writes the
//! status and conditions Kubernetes reports.
//!
//! **An HPA never scales its target to zero nor wakes it from zero: with
//! `minReplicas: 0` the scale-to-zero controller does the former after the
//! idle window and the node's activator the latter.**

pub mod calc;

use crate::controllers::registration::all_keys;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricSpec, MetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::framework::{
    Action, Controller, ControllerError, Informer, Key, Queue, Reconciler, Result, enqueue_self,
    write_status,
};
use super::metricsapi;
use calc::{MetricTarget, PodSample, Preflight};

/// Kubernetes' default tolerance.
const TOLERANCE: f64 = 0.1;
/// The window the agents measure usage over (`skiff-node`'s `stats::WINDOW`).
const SAMPLE_WINDOW_SECONDS: f64 = 5.0;

pub struct Autoscalers {
    pub client: kube::Client,
    pub hpas: Arc<Informer<HorizontalPodAutoscaler>>,
    pub sync_period: Duration,
    pub history: Mutex<HashMap<Key, calc::History>>,
}

/// What the metrics asked for.
struct Computed {
    replicas: i32,
    statuses: Vec<MetricStatus>,
    /// The metric that asked for the most, for events.
    reason: String,
}

/// A quantity string for `v` (milli-units unless whole).
fn quantity(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{}m", (v * 1000.0).round() as i64)
    }
}

fn target_of(t: &k8s_openapi::api::autoscaling::v2::MetricTarget) -> Option<MetricTarget> {
    let q = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        skiff_common::quantity::parse(&q.0)
    };
    match t.type_.as_str() {
        "Utilization" => t.average_utilization.map(MetricTarget::Utilization),
        "AverageValue" => t
            .average_value
            .as_ref()
            .and_then(q)
            .map(MetricTarget::AverageValue),
        "Value" => t.value.as_ref().and_then(q).map(MetricTarget::Value),
        _ => None,
    }
}

/// The sum of a pod's containers' requests of `resource` (cpu in millicores,
/// memory in bytes); `None` when a container has none.
fn request_of(p: &Pod, resource: &str) -> Option<f64> {
    let mut sum = 0.0;
    for c in &p.spec.as_ref()?.containers {
        let r = c.resources.as_ref()?.requests.as_ref()?.get(resource)?;
        let v = skiff_common::quantity::parse(&r.0)?;
        sum += if resource == "cpu" { v * 1000.0 } else { v };
    }
    Some(sum)
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        observed_generation: None,
    }
}

/// Keep the transition time of conditions whose status did not change.
fn carry_times(
    old: Option<&HorizontalPodAutoscalerStatus>,
    new: &mut [HorizontalPodAutoscalerCondition],
) {
    for c in new {
        if let Some(o) = old
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|o| o.type_ == c.type_))
            && o.status == c.status
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}

impl Autoscalers {
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.hpas.on(enqueue_self(queue));
    }

    fn scale_path(hpa: &HorizontalPodAutoscaler) -> String {
        let r = &hpa.spec.scale_target_ref;
        let ns = hpa.namespace().unwrap_or_default();
        let group_version = r.api_version.clone().unwrap_or_else(|| "apps/v1".into());
        let prefix = if group_version.contains('/') {
            format!("/apis/{group_version}")
        } else {
            format!("/api/{group_version}")
        };
        format!(
            "{prefix}/namespaces/{ns}/{}s/{}/scale",
            r.kind.to_lowercase(),
            r.name
        )
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if body.is_some() {
            req = req.header("content-type", "application/merge-patch+json");
        }
        let req = req
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        Ok(self.client.request::<Value>(req).await?)
    }

    /// The replicas the metrics ask for, and the metrics' current values.
    async fn compute(
        &self,
        hpa: &HorizontalPodAutoscaler,
        current: i32,
        selector: &str,
    ) -> std::result::Result<Computed, (String, String)> {
        let ns = hpa.namespace().unwrap_or_default();
        let pods: Vec<Pod> = Api::<Pod>::namespaced(self.client.clone(), &ns)
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| ("FailedGetScale".to_string(), e.to_string()))?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed"))
            .collect();
        let default_metric: Vec<MetricSpec> = vec![serde_json::from_value(json!({
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
        }))
        .expect("default metric")];
        let metrics = hpa
            .spec
            .metrics
            .as_ref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&default_metric);
        let now = jiff::Timestamp::now().as_second() as f64;
        let mut out = Computed {
            replicas: 0,
            statuses: Vec::new(),
            reason: String::new(),
        };
        let mut usage = None;
        for m in metrics {
            let (samples, target, status, label, cpu_rules) = match m.type_.as_str() {
                "Resource" => {
                    let r = m.resource.as_ref().ok_or((
                        "InvalidMetricSourceType".to_string(),
                        "resource is required".to_string(),
                    ))?;
                    if usage.is_none() {
                        usage = Some(
                            metricsapi::pod_usage(&self.client, &ns, selector)
                                .await
                                .map_err(|e| {
                                    ("FailedGetResourceMetric".to_string(), e.to_string())
                                })?,
                        );
                    }
                    let u = usage.as_ref().expect("read above");
                    let cpu = r.name == "cpu";
                    let samples = pods
                        .iter()
                        .map(|p| {
                            let start = p
                                .status
                                .as_ref()
                                .and_then(|s| s.start_time.as_ref())
                                .map(|t| t.0.as_second() as f64);
                            let cond = p
                                .status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                                .map(|c| {
                                    (
                                        c.status.as_str(),
                                        c.last_transition_time
                                            .as_ref()
                                            .map_or(0.0, |t| t.0.as_second() as f64),
                                    )
                                });
                            let (ready, recent) =
                                calc::cpu_flags(now, start, cond, now, SAMPLE_WINDOW_SECONDS);
                            PodSample {
                                name: p.name_any(),
                                pending: p.status.as_ref().and_then(|s| s.phase.as_deref())
                                    == Some("Pending"),
                                ready,
                                started_recently: recent,
                                value: u
                                    .get(&p.name_any())
                                    .map(|u| if cpu { u.cpu_millis } else { u.memory_bytes }),
                                request: request_of(p, &r.name),
                            }
                        })
                        .collect::<Vec<_>>();
                    let target = target_of(&r.target).ok_or((
                        "InvalidMetricSourceType".to_string(),
                        format!("invalid target for resource {}", r.name),
                    ))?;
                    (samples, target, "resource", r.name.clone(), cpu)
                }
                "Pods" => {
                    let p = m.pods.as_ref().ok_or((
                        "InvalidMetricSourceType".to_string(),
                        "pods is required".to_string(),
                    ))?;
                    let values =
                        metricsapi::pod_metric(&self.client, &ns, selector, &p.metric.name)
                            .await
                            .map_err(|e| ("FailedGetPodsMetric".to_string(), e.to_string()))?;
                    let samples = pods
                        .iter()
                        .map(|pod| PodSample {
                            name: pod.name_any(),
                            pending: pod.status.as_ref().and_then(|s| s.phase.as_deref())
                                == Some("Pending"),
                            ready: true,
                            started_recently: false,
                            value: values.get(&pod.name_any()).copied(),
                            request: None,
                        })
                        .collect::<Vec<_>>();
                    let target = target_of(&p.target).ok_or((
                        "InvalidMetricSourceType".to_string(),
                        format!("invalid target for pods metric {}", p.metric.name),
                    ))?;
                    (samples, target, "pods", p.metric.name.clone(), false)
                }
                other => {
                    return Err((
                        "InvalidMetricSourceType".to_string(),
                        format!(
                            "the HPA controller here serves Resource and Pods metrics; {other} metrics are not supported"
                        ),
                    ));
                }
            };
            let kind = if status == "resource" {
                "FailedGetResourceMetric"
            } else {
                "FailedGetPodsMetric"
            };
            let r = calc::replicas_for(current, &samples, &target, TOLERANCE, cpu_rules).map_err(
                |e| {
                    (
                        kind.to_string(),
                        format!("failed to get {label} metric value: {e}"),
                    )
                },
            )?;
            let current_value = match (status, r.utilization) {
                ("resource", Some(u)) => {
                    json!({"averageUtilization": u, "averageValue": quantity(r.average_value / if cpu_rules { 1000.0 } else { 1.0 })})
                }
                ("resource", None) => {
                    json!({"averageValue": quantity(r.average_value / if cpu_rules { 1000.0 } else { 1.0 })})
                }
                _ => json!({"averageValue": quantity(r.average_value)}),
            };
            let st = if status == "resource" {
                json!({"type": "Resource", "resource": {"name": label, "current": current_value}})
            } else {
                json!({"type": "Pods", "pods": {"metric": {"name": label}, "current": current_value}})
            };
            if let Ok(s) = serde_json::from_value::<MetricStatus>(st) {
                out.statuses.push(s);
            }
            if r.replicas > out.replicas {
                out.replicas = r.replicas;
                out.reason = if status == "resource" {
                    format!(
                        "{label} resource{}",
                        if matches!(target, MetricTarget::Utilization(_)) {
                            " utilization (percentage of request)"
                        } else {
                            ""
                        }
                    )
                } else {
                    format!("pods metric {label}")
                };
            }
        }
        Ok(out)
    }
}

impl Reconciler for Autoscalers {
    fn name(&self) -> &'static str {
        "horizontal-pod-autoscaler"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(hpa) = self.hpas.get(key) else {
            self.history.lock().expect("history").remove(key);
            return Ok(Action::await_change());
        };
        let path = Self::scale_path(&hpa);
        let min = hpa.spec.min_replicas.unwrap_or(1);
        let max = hpa.spec.max_replicas;
        let old = hpa.status.clone();
        let mut status = HorizontalPodAutoscalerStatus {
            current_replicas: None,
            desired_replicas: 0,
            current_metrics: old.as_ref().and_then(|s| s.current_metrics.clone()),
            last_scale_time: old.as_ref().and_then(|s| s.last_scale_time.clone()),
            observed_generation: hpa.metadata.generation,
            conditions: None,
        };
        let scale = match self.raw("GET", &path, None).await {
            Ok(s) => s,
            Err(e) => {
                let mut conds = vec![condition(
                    "AbleToScale",
                    false,
                    "FailedGetScale",
                    &format!(
                        "the HPA controller was unable to get the target's current scale: {e}"
                    ),
                )];
                carry_times(old.as_ref(), &mut conds);
                status.conditions = Some(conds);
                write_status(&self.client, hpa.as_ref(), status).await?;
                return Ok(Action::requeue(self.sync_period));
            }
        };
        let current = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0) as i32;
        let selector = scale
            .pointer("/status/selector")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        status.current_replicas = scale
            .pointer("/status/replicas")
            .and_then(Value::as_i64)
            .map(|r| r as i32);
        status.desired_replicas = current;
        let mut conds = Vec::new();
        // Scale-to-zero targets at zero are the activator's to wake.
        let preflight = if current == 0 && min == 0 {
            Preflight::Disabled
        } else {
            calc::preflight(current, min.max(1), max)
        };
        let desired = match preflight {
            Preflight::Disabled => {
                conds.push(condition(
                    "AbleToScale",
                    true,
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale",
                ));
                let msg = if min == 0 {
                    "the target is scaled to zero; a request to its Service wakes it"
                } else {
                    calc::SCALING_DISABLED_MESSAGE
                };
                conds.push(condition("ScalingActive", false, "ScalingDisabled", msg));
                None
            }
            Preflight::Fixed { desired, reason } => {
                conds.push(condition(
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    "the HPA controller was able to update the target scale",
                ));
                conds.push(condition(
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    "the HPA was able to successfully calculate a replica count",
                ));
                conds.push(condition(
                    "ScalingLimited",
                    true,
                    if desired < current {
                        "TooManyReplicas"
                    } else {
                        "TooFewReplicas"
                    },
                    reason,
                ));
                Some((desired, reason.to_string()))
            }
            Preflight::Compute => {
                match self.compute(&hpa, current, &selector).await {
                    Err((reason, message)) => {
                        conds.push(condition(
                            "AbleToScale",
                            true,
                            "SucceededGetScale",
                            "the HPA controller was able to get the target's current scale",
                        ));
                        conds.push(condition("ScalingActive", false, &reason, &message));
                        super::events::record(
                            &self.client,
                            "horizontal-pod-autoscaler",
                            hpa.as_ref(),
                            true,
                            &reason,
                            &message,
                        )
                        .await;
                        None
                    }
                    Ok(computed) => {
                        status.current_metrics = Some(computed.statuses);
                        let d = {
                            let mut h = self.history.lock().expect("history");
                            let hist = h.entry(key.clone()).or_default();
                            calc::decide(
                                hist,
                                Instant::now(),
                                hpa.spec.behavior.as_ref(),
                                min.max(1),
                                max,
                                current,
                                computed.replicas,
                            )
                        };
                        let (able_reason, able_msg) = match d.stabilized {
                            Some(r) => (r, d.stabilized_message.to_string()),
                            None => (
                                "ReadyForNewScale",
                                "recommended size matches current size".to_string(),
                            ),
                        };
                        conds.push(condition("AbleToScale", true, able_reason, &able_msg));
                        conds.push(condition("ScalingActive", true, "ValidMetricFound", &format!("the HPA was able to successfully calculate a replica count from {}", computed.reason)));
                        conds.push(condition(
                            "ScalingLimited",
                            d.limited,
                            d.limited_reason,
                            &d.limited_message,
                        ));
                        let why = if d.desired > current {
                            format!("{} above target", computed.reason)
                        } else {
                            "All metrics below target".to_string()
                        };
                        Some((d.desired, why))
                    }
                }
            }
        };
        if let Some((desired, why)) = desired
            && desired != current
        {
            let patch = json!({"spec": {"replicas": desired}});
            self.raw("PATCH", &path, Some(patch)).await?;
            {
                let mut h = self.history.lock().expect("history");
                calc::record_scale(
                    h.entry(key.clone()).or_default(),
                    Instant::now(),
                    current,
                    desired,
                );
            }
            status.desired_replicas = desired;
            status.last_scale_time = Some(Time(jiff::Timestamp::now()));
            let message = format!("New size: {desired}; reason: {why}");
            super::events::record(
                &self.client,
                "horizontal-pod-autoscaler",
                hpa.as_ref(),
                false,
                "SuccessfulRescale",
                &message,
            )
            .await;
        }
        carry_times(old.as_ref(), &mut conds);
        status.conditions = Some(conds);
        write_status(&self.client, hpa.as_ref(), status).await?;
        Ok(Action::requeue(self.sync_period))
    }
}

/// Start the HorizontalPodAutoscaler controller (2 workers).
pub fn start(ctx: &mut crate::controllers::registration::Ctx<'_>) {
    let hpas = ctx.informer::<HorizontalPodAutoscaler>();
    let hc = Arc::new(Autoscalers {
        client: ctx.client.clone(),
        hpas: hpas.clone(),
        sync_period: ctx.settings.hpa_sync,
        history: Default::default(),
    });
    let q = Queue::new();
    hc.watch(&q);
    ctx.run(
        Controller::new(hc, q)
            .workers(2)
            .after_sync(vec![(&hpas).into()])
            .resync(all_keys(&hpas)),
    );
}
