//! The ResourceQuota controller: each quota's `status.hard` mirrors its spec
//! and `status.used` is recomputed from what its namespace holds, after any
//! change of the quota or of a pod in its namespace and on every resync
//! (objects that went free quota: admission only ever adds).
//!
//! Usage is read through [`Objects::quota_usage`], the same arithmetic quota
//! admission applies; the status is written through the API.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use crate::controllers::framework::{
    Action, Controller, ControllerError, Informer, Key, Queue, Reconciler, Result, write_status,
};
use crate::controllers::registration::Ctx;
use crate::model::quota;
use crate::storage::Objects;

/// How often every quota is recounted with no change seen.
const EVERY: Duration = Duration::from_secs(15);

pub struct Quotas {
    client: kube::Client,
    objects: Objects,
    quotas: Arc<Informer<ResourceQuota>>,
}

impl Reconciler for Quotas {
    fn name(&self) -> &'static str {
        "resourcequota"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(rq) = self.quotas.get(key) else {
            return Ok(Action::await_change());
        };
        let spec = serde_json::to_value(rq.spec.clone().unwrap_or_default())
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        let used = self
            .objects
            .quota_usage(&key.ns, &spec)
            .await
            .map_err(|e| ControllerError::Invalid(format!("quota usage: {}", e.message)))?;
        let status = ResourceQuotaStatus {
            hard: rq.spec.as_ref().and_then(|s| s.hard.clone()),
            used: Some(
                used.iter()
                    .map(|(k, v)| (k.clone(), Quantity(quota::format(k, *v))))
                    .collect(),
            ),
        };
        tracing::debug!(quota = %rq.name_any(), ?used, "quota recounted");
        write_status(&self.client, rq.as_ref(), status).await?;
        Ok(Action::requeue(EVERY))
    }
}

/// Start the quota controller (only where the storage layer is given).
pub fn start(ctx: &mut Ctx<'_>) {
    let quotas = ctx.informer::<ResourceQuota>();
    let pods = ctx.informer::<Pod>();
    let Some(objects) = ctx.settings.objects.clone() else {
        return;
    };
    let c = Arc::new(Quotas {
        client: ctx.client.clone(),
        objects,
        quotas: quotas.clone(),
    });
    let q = Queue::new();
    let queue = q.clone();
    quotas.on(move |_, rq| {
        queue.add(Key::new(
            &rq.namespace().unwrap_or_default(),
            &rq.name_any(),
        ))
    });
    let queue = q.clone();
    let of_ns = quotas.clone();
    pods.on(move |_, pod| {
        let ns = pod.namespace().unwrap_or_default();
        for rq in of_ns.list(&ns) {
            queue.add(Key::new(&ns, &rq.name_any()));
        }
    });
    let all = quotas.clone();
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![(&quotas).into(), (&pods).into()])
            .resync(move || {
                all.list("")
                    .iter()
                    .map(|rq| Key::new(&rq.namespace().unwrap_or_default(), &rq.name_any()))
                    .collect()
            }),
    );
}
