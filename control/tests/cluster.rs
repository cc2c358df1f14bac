//! The in-process tier: controller and API behaviour against a whole control
//! plane in this test process (store, router, controllers, an in-process
//! client), with no server process, no node agent and no root. Nodes are API
//! objects the test writes, as an agent would.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_control::cluster::InProcess;
use skiff_control::controllers::registration::Settings;

/// Poll `f` until it gives a value, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const WAIT: Duration = Duration::from_secs(30);

async fn cluster(dir: &std::path::Path) -> InProcess {
    InProcess::start(dir, Settings::default())
        .await
        .expect("in-process control plane starts")
}

/// A Ready node with room for pods, as an agent registers it.
async fn ready_node(c: &InProcess, name: &str) {
    let nodes: Api<Node> = Api::all(c.client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "addresses": [{"type": "InternalIP", "address": "10.87.200.1"}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "acc/hello:v1",
                    "ports": [{"containerPort": 8080}]}]},
            },
        },
    }))
    .unwrap()
}

async fn pods_of(c: &InProcess, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(c.client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_makes_a_replicaset_whose_pods_the_scheduler_binds() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    ready_node(&c, "n1").await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    // The Deployment controller makes a ReplicaSet it owns.
    let rs = eventually(WAIT, || async {
        let sets = Api::<ReplicaSet>::namespaced(c.client.clone(), "default")
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        sets.items.into_iter().next()
    })
    .await
    .expect("a ReplicaSet for the Deployment");
    let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(owner.controller, Some(true));
    // The ReplicaSet controller makes two pods; the scheduler binds both to
    // the only node.
    let pods = eventually(WAIT, || async {
        let pods = pods_of(&c, "web").await;
        let bound = pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("n1"))
            .count();
        (pods.len() == 2 && bound == 2).then_some(pods)
    })
    .await
    .expect("two pods bound to n1");
    for p in &pods {
        let rs_owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(rs_owner.name, rs.metadata.name.clone().unwrap());
        let scheduled = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .map(|c| c.status.clone());
        assert_eq!(scheduled.as_deref(), Some("True"), "{:?}", p.status);
    }
    // Scaled down, one pod goes.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    eventually(WAIT, || async {
        let live = pods_of(&c, "web")
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        (live == 1).then_some(())
    })
    .await
    .expect("scaled down to one pod");
    // Deleted in the background, its ReplicaSet goes with it (the garbage
    // collector follows ownerReferences).
    deploys
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    eventually(WAIT, || async {
        let sets = Api::<ReplicaSet>::namespaced(c.client.clone(), "default")
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        sets.items.is_empty().then_some(())
    })
    .await
    .expect("the ReplicaSet is collected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fits_no_node_stays_pending_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    ready_node(&c, "small").await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "huge"},
        "spec": {"containers": [{"name": "c", "image": "acc/hello:v1",
            "resources": {"requests": {"cpu": "64"}}}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let message = eventually(WAIT, || async {
        let p = pods.get("huge").await.ok()?;
        let cond = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        cond.message
    })
    .await
    .expect("an Unschedulable condition");
    assert!(message.contains("Insufficient cpu"), "{message}");
    let p = pods.get("huge").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_addresses_and_endpoints_follow_ready_pods() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    ready_node(&c, "n1").await;
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let created = services.create(&PostParams::default(), &svc).await.unwrap();
    let ip = created.spec.unwrap().cluster_ip.expect("a ClusterIP");
    assert!(ip.starts_with("10.96."), "{ip}");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "acc/hello:v1",
            "ports": [{"containerPort": 8080}]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // The agent's part, written by hand: the pod runs and is Ready.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": "Running", "podIP": "10.88.7.9", "podIPs": [{"ip": "10.88.7.9"}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
    }});
    pods.patch_status("web-1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    eventually(WAIT, || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?;
        list.items
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .any(|e| e.addresses.iter().any(|a| a == "10.88.7.9"))
            .then_some(())
    })
    .await
    .expect("the ready pod's address in the Service's EndpointSlice");
    // Deleting the Service gives its address back: another may take it.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let again: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "again"},
        "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
    }))
    .unwrap();
    let taken = eventually(WAIT, || async {
        services.create(&PostParams::default(), &again).await.ok()
    })
    .await
    .expect("the released ClusterIP can be taken again");
    assert_eq!(taken.spec.unwrap().cluster_ip, Some(ip));
}

/// Metadata-only reads, as client-go's and kube's metadata informers make
/// them (`as=PartialObjectMetadata` and `as=PartialObjectMetadataList`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_get_list_and_watch() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{WatchEvent, WatchParams};
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path()).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "big", "labels": {"app": "m"}},
        "data": {"payload": "x".repeat(10_000)},
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();

    let one = cms.get_metadata("big").await.unwrap();
    assert_eq!(
        one.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(one.metadata.labels.unwrap()["app"], "m");

    let list = cms
        .list_metadata(&ListParams::default().labels("app=m"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let rv = list.metadata.resource_version.clone().unwrap();
    // What came back is metadata only: no data, far smaller than the object.
    let raw = serde_json::to_string(&list.items[0]).unwrap();
    assert!(!raw.contains("xxxxxxxx") && raw.len() < 2_000, "{raw}");

    let mut events = cms
        .watch_metadata(&WatchParams::default().labels("app=m"), &rv)
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "big",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"seen": "yes"}}})),
    )
    .await
    .unwrap();
    let ev = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("a watch event")
        .expect("the stream goes on")
        .expect("a decodable event");
    match ev {
        WatchEvent::Modified(m) => {
            assert!(
                !serde_json::to_string(&m.metadata)
                    .unwrap()
                    .contains("xxxxxxxx")
            );
            assert_eq!(m.metadata.annotations.unwrap()["seen"], "yes");
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
}
