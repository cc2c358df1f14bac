//! Service IP and NodePort repair: on the leader, after every Service change
//! and on every resync, release allocation keys no Service holds any more
//! (Services that went without `delete`: finalizers, namespace deletion).
//!
//! **The one controller that works on the storage layer instead of the API:**
//! the allocation keys are the storage layer's own bookkeeping (Kubernetes
//! runs the same repair inside its registry), so the pass is
//! [`Objects::repair_service_allocations`]; the Services informer only says
//! when to run it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;

use crate::controllers::framework::{
    Action, Controller, ControllerError, Informer, Key, Queue, Reconciler, Result,
};
use crate::controllers::registration::Ctx;
use crate::storage::Objects;

/// The one key: a pass looks at every allocation.
fn pass_key() -> Key {
    Key::new("", "service-allocations")
}

/// The longest a leaked allocation may wait for a pass with no Service change.
const EVERY: Duration = Duration::from_secs(30);

pub struct ServiceIps {
    objects: Objects,
    services: Arc<Informer<Service>>,
}

impl Reconciler for ServiceIps {
    fn name(&self) -> &'static str {
        "service-ips"
    }

    async fn reconcile(&self, _key: &Key) -> Result<Action> {
        tracing::debug!(services = self.services.list("").len(), "repair pass");
        self.objects
            .repair_service_allocations()
            .await
            .map_err(|e| {
                ControllerError::Invalid(format!("service allocation repair: {}", e.message))
            })?;
        Ok(Action::requeue(EVERY))
    }
}

/// Start the repair controller (only where the storage layer is given).
pub fn start(ctx: &mut Ctx<'_>) {
    let services = ctx.informer::<Service>();
    let Some(objects) = ctx.settings.objects.clone() else {
        return;
    };
    let c = Arc::new(ServiceIps {
        objects,
        services: services.clone(),
    });
    let q = Queue::new();
    let queue = q.clone();
    services.on(move |_, _| queue.add(pass_key()));
    q.add(pass_key());
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![(&services).into()])
            .resync(|| vec![pass_key()]),
    );
}
