//! Scale to zero: a Deployment with the `skiff.dev/scale-to-zero-after`
//! annotation, or the target of a HorizontalPodAutoscaler with `minReplicas:
//! 0`, is scaled to 0 replicas once it has been idle for its window: no pod
//! served a request (the agents' per-pod figures) and no Service in front of
//! it got a new connection (the nodes' proxies count them). Waking it again is
//! the node activator's job.
//!
//! **Only this controller scales a Deployment to zero, and only when every pod
//! is Ready and reports being idle for the whole window: a starting pod, a pod
//! without figures yet or a request in flight keeps it up.**

use crate::controllers::registration::all_keys;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use skiff_common::scale::{SCALE_TO_ZERO_AFTER, parse_duration};

use crate::controllers::framework::{
    Action, Controller, Informer, Key, Queue, Reconciler, Result, enqueue_self,
};
use crate::controllers::metricsapi;
use crate::controllers::podutil::{ready, selects, terminating};

/// The idle window of an HPA with `minReplicas: 0` and no annotation on its
/// Deployment: its scale-down stabilisation window, by default (as
/// Kubernetes') five minutes.
const HPA_DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Longest between two looks at an idle candidate.
const RECHECK_MAX: Duration = Duration::from_secs(5);

pub struct ScaleToZero {
    pub client: kube::Client,
    pub deployments: Arc<Informer<Deployment>>,
    pub hpas: Arc<Informer<HorizontalPodAutoscaler>>,
    pub pods: Arc<Informer<Pod>>,
    pub services: Arc<Informer<Service>>,
}

/// The idle window of `d`, if it scales to zero.
pub fn idle_window(d: &Deployment, hpas: &[Arc<HorizontalPodAutoscaler>]) -> Option<Duration> {
    if let Some(w) = d
        .annotations()
        .get(SCALE_TO_ZERO_AFTER)
        .and_then(|v| parse_duration(v).ok())
    {
        return Some(w);
    }
    let hpa = hpas.iter().find(|h| {
        h.spec.min_replicas == Some(0)
            && h.spec.scale_target_ref.kind == "Deployment"
            && h.spec.scale_target_ref.name == d.name_any()
    })?;
    Some(
        hpa.spec
            .behavior
            .as_ref()
            .and_then(|b| b.scale_down.as_ref())
            .and_then(|s| s.stabilization_window_seconds)
            .map_or(HPA_DEFAULT_WINDOW, |s| Duration::from_secs(s.max(0) as u64)),
    )
}

impl ScaleToZero {
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.deployments.on(enqueue_self(queue));
        let q = queue.clone();
        self.hpas.on(move |_, h| {
            let ns = h.namespace().unwrap_or_default();
            q.add(Key::new(&ns, &h.spec.scale_target_ref.name));
        });
    }

    /// How long the Deployment's pods and Services have been idle (`None`:
    /// not idle, or not known to be).
    async fn idle_for(&self, d: &Deployment) -> Result<Option<Duration>> {
        let ns = d.namespace().unwrap_or_default();
        let sel = &d.spec.selector;
        let pods: Vec<_> = self
            .pods
            .list(&ns)
            .into_iter()
            .filter(|p| selects(sel, p.labels()) && !terminating(p.as_ref()))
            .collect();
        if pods.is_empty() || pods.iter().any(|p| !ready(p)) {
            return Ok(None);
        }
        let selector = metricsapi::selector_string(sel);
        let idle = metricsapi::pod_metric(&self.client, &ns, &selector, "idle_seconds").await?;
        let mut least = f64::INFINITY;
        for p in &pods {
            match idle.get(&p.name_any()) {
                Some(s) => least = least.min(*s),
                None => return Ok(None),
            }
        }
        let labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        for svc in self.services.list(&ns) {
            let Some(svc_sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                continue;
            };
            if svc_sel.is_empty() || !svc_sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            if let Some(s) =
                metricsapi::service_metric(&self.client, &ns, &svc.name_any(), "idle_seconds")
                    .await?
            {
                least = least.min(s);
            }
        }
        Ok(least
            .is_finite()
            .then(|| Duration::from_secs_f64(least.max(0.0))))
    }
}

impl Reconciler for ScaleToZero {
    fn name(&self) -> &'static str {
        "scale-to-zero"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(Action::await_change());
        };
        let Some(window) = idle_window(&d, &self.hpas.list(&key.ns)) else {
            return Ok(Action::await_change());
        };
        if d.spec.replicas == Some(0) || d.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let idle = self.idle_for(&d).await?;
        match idle {
            Some(idle) if idle >= window => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.ns);
                let patch = serde_json::json!({"spec": {"replicas": 0}});
                api.patch_scale(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                let message = format!(
                    "Scaled to zero after {:.1}s without requests (window {:?})",
                    idle.as_secs_f64(),
                    window
                );
                crate::controllers::events::record(
                    &self.client,
                    "scale-to-zero",
                    d.as_ref(),
                    false,
                    "ScaledToZero",
                    &message,
                )
                .await;
                Ok(Action::await_change())
            }
            Some(idle) => Ok(Action::requeue(
                (window - idle).clamp(Duration::from_millis(500), RECHECK_MAX),
            )),
            None => Ok(Action::requeue(Duration::from_secs(1))),
        }
    }
}

/// Start the scale-to-zero controller (2 workers).
pub fn start(ctx: &mut crate::controllers::registration::Ctx<'_>) {
    let pods = ctx.informer::<Pod>();
    let services = ctx.informer::<Service>();
    let hpas = ctx.informer::<HorizontalPodAutoscaler>();
    let deployments = ctx.informer::<Deployment>();
    let stz = Arc::new(ScaleToZero {
        client: ctx.client.clone(),
        deployments: deployments.clone(),
        hpas: hpas.clone(),
        pods: pods.clone(),
        services: services.clone(),
    });
    let q = Queue::new();
    stz.watch(&q);
    ctx.run(
        Controller::new(stz, q)
            .workers(2)
            .after_sync(vec![
                (&pods).into(),
                (&services).into(),
                (&hpas).into(),
                (&deployments).into(),
            ])
            .resync(all_keys(&deployments)),
    );
}
