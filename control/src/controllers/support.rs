//! Store-side loop helpers over `api::objects` (write options of a named
//! writer, listing a whole type, a pass after every change). No controller
//! uses them any more (controllers read informers and write through the
//! client); they serve the Service allocation repair loop (`api/services.rs`),
//! the metrics collector and server bootstrap, and belong with the storage
//! layer.

use std::time::Duration;

use serde_json::Value;

use crate::api::objects::{FieldValidation, Objects, WriteOptions};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::status::ApiResult;

/// Writes made by a controller named `manager`.
pub fn writer(manager: &str) -> WriteOptions {
    WriteOptions {
        field_validation: FieldValidation::Ignore,
        dry_run: false,
        manager: manager.into(),
        apply_fields: None,
    }
}

/// Every object of a kind, in all namespaces.
pub async fn list_all(o: &Objects, api_version: &str, kind: &str) -> ApiResult<Vec<Value>> {
    let Some(t) = o.registry.by_kind(api_version, kind).cloned() else {
        return Ok(Vec::new());
    };
    let (items, _, _) = o
        .list(
            &t,
            None,
            &LabelSelector::default(),
            &FieldSelector::default(),
            None,
            None,
        )
        .await?;
    Ok(items)
}

/// Wait until a key under one of `prefixes` changes after revision `from`, or
/// `period` passes.
pub async fn wait_for_change(o: &Objects, prefixes: &[&str], from: u64, period: Duration) {
    let mut watches: Vec<_> = prefixes
        .iter()
        .filter_map(|p| o.store.watch(p, from).ok())
        .collect();
    if watches.is_empty() {
        tokio::time::sleep(period).await;
        return;
    }
    let any = futures::future::select_all(watches.iter_mut().map(|w| {
        Box::pin(async move {
            let _ = w.next().await;
        })
    }));
    tokio::select! {
        _ = any => {},
        () = tokio::time::sleep(period) => {},
    }
}

/// Run `pass` whenever this server leads, after every change under `prefixes`
/// and at least every `period`.
pub async fn leader_loop<F, Fut>(
    o: Objects,
    name: &'static str,
    prefixes: &[&str],
    period: Duration,
    pass: F,
) where
    F: Fn(Objects) -> Fut,
    Fut: std::future::Future<Output = ApiResult<()>>,
{
    loop {
        // Changes made during the pass (its own included) start the next one.
        let from = o.store.status().applied;
        if o.store.status().role == "leader"
            && let Err(e) = pass(o.clone()).await
        {
            tracing::debug!(controller = name, error = %e.message, "pass failed");
        }
        wait_for_change(&o, prefixes, from, period).await;
    }
}
