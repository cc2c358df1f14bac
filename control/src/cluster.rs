//! The control plane in one process, without sockets: a one-voter store in a
//! data dir, the API's router, the controllers on the registration table, and
//! a `kube::Client` that sends requests straight into the router. This is the
//! in-process test tier (`control/tests/cluster.rs`): controller and API
//! behaviour with no server process, no agent and no root.
//!
//! **The same router, admission and controllers as `skiff server`; only the
//! listeners (TLS, the Raft peer port's clients) and the node agent are
//! missing.**

use std::path::Path;
use std::time::Duration;

use axum::Router;
use kube::Client;
use tokio::task::JoinSet;

use crate::api::{self, ApiState};
use crate::controllers::manager::{in_process_client, run_while_leader};
use crate::controllers::registration::Settings;
use crate::server::{ServerError, ensure_defaults, random_token};
use crate::storage::ServiceRanges;
use crate::store::{ReplicaConfig, Store, StoreConfig};

/// A running in-process control plane; stopped when dropped.
pub struct InProcess {
    pub store: Store,
    pub router: Router,
    /// The cluster admin, through the router.
    pub client: Client,
    tasks: JoinSet<()>,
}

impl InProcess {
    /// Start on `data_dir` (created if missing) with the controllers'
    /// `settings`; returns once the store leads and the default objects
    /// (namespaces, RuntimeClasses) exist.
    pub async fn start(data_dir: &Path, settings: Settings) -> Result<InProcess, ServerError> {
        // The store listens on a peer port even alone: take a free one.
        let peer_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| ServerError::Bootstrap(format!("peer port: {e}")))?
            .to_string();
        let store = Store::start(
            StoreConfig {
                data_dir: data_dir.to_path_buf(),
                peer_addr,
                peer_tls: crate::store::PeerTls::default(),
                bootstrap: true,
                tick: Duration::from_millis(20),
                replica: ReplicaConfig::default(),
            },
            1,
        )
        .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.status().role != "leader" {
            if tokio::time::Instant::now() > deadline {
                return Err(ServerError::Bootstrap("the store elected no leader".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let admin = random_token(48);
        let mut state = ApiState::new(
            store.clone(),
            random_token(32),
            admin.clone(),
            "127.0.0.1:0".into(),
            crate::storage::Encryption::default(),
        );
        state.authn = state
            .authn
            .clone()
            .with_accounts(crate::server::account_tokens(&store, &state.rest.objects).await?);
        ensure_defaults(&state, &settings.pod_cidrs, &ServiceRanges::default()).await;
        state.policy.start(state.rest.objects.clone()).await;
        state.nodes.start(state.rest.objects.clone()).await;
        let settings = Settings {
            objects: Some(state.rest.objects.clone()),
            ..settings
        };
        let router = api::router(state);
        let client = in_process_client(router.clone(), &admin);
        let mut tasks = JoinSet::new();
        tasks.spawn(run_while_leader(
            store.clone(),
            router.clone(),
            admin,
            settings,
        ));
        Ok(InProcess {
            store,
            router,
            client,
            tasks,
        })
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.tasks.abort_all();
        self.store.shutdown();
    }
}
