//! Service IP and NodePort repair: on the leader, after every Service change
//! and at least every 30 s, release allocation keys no Service holds any more
//! (Services that went without `delete`: finalizers, namespace deletion).

use std::time::Duration;

use crate::storage::Objects;

/// Run the repair pass whenever this server leads.
pub async fn run(o: Objects) {
    super::support::leader_loop(
        o,
        "service-allocations",
        &["/core/services/"],
        Duration::from_secs(30),
        |o| async move { o.repair_service_allocations().await },
    )
    .await;
}
