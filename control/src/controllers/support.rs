//! What every controller loop shares: the write options of a controller, listing
//! a whole type, a string field, and waiting for the next change.

use std::time::Duration;

use serde_json::Value;

use crate::model::status::ApiResult;
use crate::storage::{FieldValidation, Objects, WriteOptions};

/// Writes made by a controller named `manager`.
pub fn writer(manager: &str) -> WriteOptions {
    WriteOptions {
        field_validation: FieldValidation::Ignore,
        dry_run: false,
        manager: manager.into(),
        apply_fields: None,
    }
}

/// A string field of a JSON object ("" when absent).
pub fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// Every object of a kind, in all namespaces.
pub async fn list_all(o: &Objects, api_version: &str, kind: &str) -> ApiResult<Vec<Value>> {
    o.list_all(api_version, kind).await
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
