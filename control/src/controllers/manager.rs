//! The controller manager: while this server leads the Raft group it runs the
//! shared informers and every workload controller over an in-process API
//! client; when leadership moves it stops them all, and the next leader starts
//! its own from fresh caches.
//!
//! **Controllers talk to the API exactly as any client does (the same router,
//! admission and validation), never to the store underneath it.**

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{self, HeaderValue};
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use tokio::task::JoinSet;

use super::cronjob::CronJobs;
use super::daemonset::DaemonSets;
use super::deployment::Deployments;
use super::endpoints::ServiceEndpoints;
use super::hpa::Autoscalers;
use super::job::Jobs;
use super::replicaset::ReplicaSets;
use super::runtime::{Expectations, Informer, Key, Kind, Queue, run};
use super::scaletozero::ScaleToZero;
use super::statefulset::StatefulSets;
use crate::store::Store;

/// How often every object is reconciled even when nothing changed.
const RESYNC: Duration = Duration::from_secs(30);

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
pub async fn run_while_leader(store: Store, router: Router, token: String, hpa_sync: Duration) {
    loop {
        while store.status().role != "leader" {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!("leading: starting controllers");
        let mut tasks = JoinSet::new();
        start(
            &mut tasks,
            in_process_client(router.clone(), &token),
            hpa_sync,
        );
        while store.status().role == "leader" {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!("no longer leading: stopping controllers");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// Spawn an informer's watch loop.
fn inform<K: Kind>(tasks: &mut JoinSet<()>, client: &Client) -> Arc<Informer<K>> {
    let inf = Informer::new(Api::<K>::all(client.clone()));
    tasks.spawn(inf.clone().run());
    inf
}

/// Resync keys: every object an informer holds.
fn all_keys<K: Kind>(inf: &Arc<Informer<K>>) -> impl Fn() -> Vec<Key> + Send + 'static {
    let inf = inf.clone();
    move || inf.list("").iter().map(|o| Key::of(o.as_ref())).collect()
}

fn start(tasks: &mut JoinSet<()>, client: Client, hpa_sync: Duration) {
    let pods = inform::<Pod>(tasks, &client);
    let sets = inform::<ReplicaSet>(tasks, &client);

    let rs = Arc::new(ReplicaSets {
        client: client.clone(),
        sets: sets.clone(),
        pods: pods.clone(),
        expectations: Expectations::default(),
    });
    let q = Queue::new();
    rs.watch(&q);
    spawn(
        tasks,
        rs,
        q,
        4,
        all_keys(&sets),
        vec![(&pods).into(), (&sets).into()],
    );

    let deployments = inform::<Deployment>(tasks, &client);
    let dc = Arc::new(Deployments {
        client: client.clone(),
        deployments: deployments.clone(),
        sets: sets.clone(),
        pods: pods.clone(),
    });
    let q = Queue::new();
    dc.watch(&q);
    spawn(
        tasks,
        dc,
        q,
        2,
        all_keys(&deployments),
        vec![(&pods).into(), (&sets).into(), (&deployments).into()],
    );

    let jobs = inform::<Job>(tasks, &client);
    let jc = Arc::new(Jobs {
        client: client.clone(),
        jobs: jobs.clone(),
        pods: pods.clone(),
        expectations: Expectations::default(),
    });
    let q = Queue::new();
    jc.watch(&q);
    spawn(
        tasks,
        jc,
        q,
        2,
        all_keys(&jobs),
        vec![(&pods).into(), (&jobs).into()],
    );

    let cronjobs = inform::<CronJob>(tasks, &client);
    let cc = Arc::new(CronJobs {
        client: client.clone(),
        cronjobs: cronjobs.clone(),
        jobs: jobs.clone(),
    });
    let q = Queue::new();
    cc.watch(&q);
    spawn(
        tasks,
        cc,
        q,
        1,
        all_keys(&cronjobs),
        vec![(&jobs).into(), (&cronjobs).into()],
    );

    let revisions = inform::<ControllerRevision>(tasks, &client);
    let nodes = inform::<Node>(tasks, &client);
    let daemons = inform::<DaemonSet>(tasks, &client);
    let dsc = Arc::new(DaemonSets {
        client: client.clone(),
        sets: daemons.clone(),
        nodes: nodes.clone(),
        pods: pods.clone(),
        revisions: revisions.clone(),
        expectations: Expectations::default(),
        failed: Default::default(),
    });
    let q = Queue::new();
    dsc.watch(&q);
    spawn(
        tasks,
        dsc,
        q,
        2,
        all_keys(&daemons),
        vec![
            (&pods).into(),
            (&nodes).into(),
            (&revisions).into(),
            (&daemons).into(),
        ],
    );

    let stateful = inform::<StatefulSet>(tasks, &client);
    let ssc = Arc::new(StatefulSets {
        client: client.clone(),
        sets: stateful.clone(),
        pods: pods.clone(),
        revisions: revisions.clone(),
        expectations: Expectations::default(),
    });
    let q = Queue::new();
    ssc.watch(&q);
    spawn(
        tasks,
        ssc,
        q,
        2,
        all_keys(&stateful),
        vec![(&pods).into(), (&revisions).into(), (&stateful).into()],
    );

    let services = inform::<Service>(tasks, &client);
    let endpoints = inform::<Endpoints>(tasks, &client);
    let slices = inform::<EndpointSlice>(tasks, &client);
    let ec = Arc::new(ServiceEndpoints {
        client: client.clone(),
        services: services.clone(),
        pods: pods.clone(),
        endpoints: endpoints.clone(),
        slices: slices.clone(),
    });
    let hpas = inform::<HorizontalPodAutoscaler>(tasks, &client);
    let stz = Arc::new(ScaleToZero {
        client: client.clone(),
        deployments: deployments.clone(),
        hpas: hpas.clone(),
        pods: pods.clone(),
        services: services.clone(),
    });
    let hc = Arc::new(Autoscalers {
        client: client.clone(),
        hpas: hpas.clone(),
        sync_period: hpa_sync,
        history: Default::default(),
    });
    let q = Queue::new();
    hc.watch(&q);
    spawn(tasks, hc, q, 2, all_keys(&hpas), vec![(&hpas).into()]);

    let q = Queue::new();
    stz.watch(&q);
    spawn(
        tasks,
        stz,
        q,
        2,
        all_keys(&deployments),
        vec![
            (&pods).into(),
            (&services).into(),
            (&hpas).into(),
            (&deployments).into(),
        ],
    );

    let q = Queue::new();
    ec.watch(&q);
    let keys = {
        let ec = ec.clone();
        move || ec.keys()
    };
    spawn(
        tasks,
        ec,
        q,
        2,
        keys,
        vec![
            (&pods).into(),
            (&services).into(),
            (&endpoints).into(),
            (&slices).into(),
        ],
    );
}

/// A cache a controller waits for before its first reconcile.
pub struct Ready(Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send>);

impl<K: Kind> From<&Arc<Informer<K>>> for Ready {
    fn from(i: &Arc<Informer<K>>) -> Ready {
        let i = i.clone();
        Ready(Box::new(move || {
            let i = i.clone();
            Box::pin(async move { i.synced().await })
        }))
    }
}

/// Start `r`'s workers once every cache in `ready` has synced.
fn spawn<R: super::runtime::Reconciler>(
    tasks: &mut JoinSet<()>,
    r: Arc<R>,
    q: Arc<Queue>,
    workers: usize,
    resync: impl Fn() -> Vec<Key> + Send + 'static,
    ready: Vec<Ready>,
) {
    tasks.spawn(async move {
        for c in ready {
            (c.0)().await;
        }
        tracing::debug!(controller = r.name(), "caches synced; starting workers");
        run(r, q, workers, resync, RESYNC).await;
    });
}
