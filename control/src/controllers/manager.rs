//! The controller manager: while this server leads the Raft group it runs
//! every registered controller (see `registration`) over an in-process API
//! client; when leadership moves it stops them all, and the next leader starts
//! its own from fresh caches.
//!
//! **Controllers talk to the API exactly as any client does (the same router,
//! admission and validation), never to the store underneath it.**

use std::time::Duration;

use axum::Router;
use axum::http::{self, HeaderValue};
use kube::Client;
use tokio::task::JoinSet;

use super::registration::{Settings, start_all};
use crate::store::Store;

/// A client that sends requests straight into `router` as the cluster admin.
pub fn in_process_client(router: Router, token: &str) -> Client {
    let auth = HeaderValue::from_str(&format!("Bearer {token}")).expect("token is header-safe");
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut r: http::Request<kube::client::Body>| {
            r.headers_mut()
                .insert(http::header::AUTHORIZATION, auth.clone());
            r
        })
        .service(router);
    Client::new(svc, "default")
}

/// Run the controllers whenever this server leads.
pub async fn run_while_leader(store: Store, router: Router, token: String, settings: Settings) {
    loop {
        while store.status().role != "leader" {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!("leading: starting controllers");
        let mut tasks = JoinSet::new();
        let client = in_process_client(router.clone(), &token);
        for (name, kinds) in start_all(&mut tasks, &client, &settings) {
            tracing::debug!(controller = name, informers = ?kinds, "started");
        }
        while store.status().role == "leader" {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!("no longer leading: stopping controllers");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
