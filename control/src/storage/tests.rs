//! The storage layer against a real one-voter store in a temporary data dir:
//! the generic verbs, and each kind's strategy hooks.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::model::meta::finalizers_of;
use crate::store::{Op, ReplicaConfig, StoreConfig};

struct Fixture {
    o: Objects,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let store = crate::store::Store::start(
        StoreConfig {
            data_dir: dir.path().to_path_buf(),
            peer_addr: format!("127.0.0.1:{port}"),
            peer_tls: crate::store::PeerTls::default(),
            bootstrap: true,
            tick: Duration::from_millis(20),
            replica: ReplicaConfig::default(),
        },
        1,
    )
    .await
    .expect("store starts");
    for _ in 0..300 {
        if store.status().leader_id != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(store.status().leader_id, 0, "no leader");
    let mut o = Objects::new(store);
    o.services = Arc::new(ServiceRanges::parse("10.96.0.0/24", "30000-30004").expect("ranges"));
    let f = Fixture { o, _dir: dir };
    f.create(
        "v1",
        "Namespace",
        None,
        json!({"metadata": {"name": "default"}}),
    )
    .await
    .expect("namespace default");
    f
}

fn wo(manager: &str) -> WriteOptions {
    WriteOptions {
        field_validation: FieldValidation::Strict,
        dry_run: false,
        manager: manager.into(),
        apply_fields: None,
    }
}

impl Fixture {
    fn t(&self, api_version: &str, kind: &str) -> ResourceType {
        self.o
            .registry
            .by_kind(api_version, kind)
            .cloned()
            .expect("a served kind")
    }

    async fn create(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        obj: Value,
    ) -> ApiResult<Value> {
        let t = self.t(api_version, kind);
        Ok(self.o.create(&t, ns, obj, &wo("test")).await?.object)
    }

    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        self.o.get(&self.t(api_version, kind), ns, name).await
    }

    async fn update(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        obj: Value,
        sub: Option<&str>,
    ) -> ApiResult<Value> {
        let t = self.t(api_version, kind);
        let name = crate::model::meta::name_of(&obj);
        Ok(self
            .o
            .update(&t, ns, &name, obj, sub, &wo("test"))
            .await?
            .object)
    }

    async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        opts: DeleteOptions,
    ) -> ApiResult<Value> {
        self.o
            .delete(&self.t(api_version, kind), ns, name, &opts)
            .await
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        let (kvs, _) = self
            .o
            .store
            .list(prefix, None, usize::MAX)
            .await
            .expect("list");
        kvs.into_iter().map(|kv| kv.key).collect()
    }
}

async fn next(w: &mut ObjectWatch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("an event")
        .expect("no error")
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

#[tokio::test]
async fn create_get_update_list_delete() {
    let f = fixture().await;
    let cm = f
        .create(
            "v1",
            "ConfigMap",
            Some("default"),
            json!({"metadata": {"name": "a", "labels": {"app": "x"}}, "data": {"k": "v"}}),
        )
        .await
        .unwrap();
    assert_eq!(s(&cm, "/metadata/namespace"), "default");
    assert_eq!(s(&cm, "/kind"), "ConfigMap");
    assert!(!s(&cm, "/metadata/uid").is_empty());
    assert!(!s(&cm, "/metadata/creationTimestamp").is_empty());
    assert_eq!(s(&cm, "/metadata/managedFields/0/manager"), "test");
    let rv1 = s(&cm, "/metadata/resourceVersion").to_string();
    let got = f
        .get("v1", "ConfigMap", Some("default"), "a")
        .await
        .unwrap();
    assert_eq!(got, cm);
    // Creating it again is AlreadyExists; a namespace that does not exist is NotFound.
    let e = f
        .create(
            "v1",
            "ConfigMap",
            Some("default"),
            json!({"metadata": {"name": "a"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason, "AlreadyExists");
    let e = f
        .create(
            "v1",
            "ConfigMap",
            Some("nowhere"),
            json!({"metadata": {"name": "a"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (StatusCode::NOT_FOUND, "namespaces \"nowhere\" not found")
    );
    // Update: uid and creationTimestamp stay whatever the client sends.
    let mut changed = got.clone();
    changed["data"]["k"] = json!("w");
    changed["metadata"]["uid"] = json!("forged");
    let updated = f
        .update("v1", "ConfigMap", Some("default"), changed.clone(), None)
        .await
        .unwrap();
    assert_eq!(s(&updated, "/data/k"), "w");
    assert_eq!(s(&updated, "/metadata/uid"), s(&cm, "/metadata/uid"));
    assert_ne!(s(&updated, "/metadata/resourceVersion"), rv1);
    // The old resourceVersion is a conflict now.
    let e = f
        .update("v1", "ConfigMap", Some("default"), changed, None)
        .await
        .unwrap_err();
    assert_eq!(e.reason, "Conflict");
    // List with a label selector.
    f.create(
        "v1",
        "ConfigMap",
        Some("default"),
        json!({"metadata": {"name": "b"}}),
    )
    .await
    .unwrap();
    let t = f.t("v1", "ConfigMap");
    let sel = crate::model::selector::LabelSelector::parse("app=x").unwrap();
    let (items, rev, cont) =
        f.o.list(
            &t,
            Some("default"),
            &sel,
            &FieldSelector::default(),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        items
            .iter()
            .map(crate::model::meta::name_of)
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert!(
        rev >= s(&updated, "/metadata/resourceVersion")
            .parse::<u64>()
            .unwrap()
    );
    assert!(cont.is_none());
    // Paging.
    let all = LabelSelector::default();
    let (page, _, cont) =
        f.o.list(
            &t,
            Some("default"),
            &all,
            &FieldSelector::default(),
            Some(1),
            None,
        )
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let (rest, _, end) =
        f.o.list(
            &t,
            Some("default"),
            &all,
            &FieldSelector::default(),
            None,
            cont.as_deref(),
        )
        .await
        .unwrap();
    assert_eq!((rest.len(), end), (1, None));
    assert_ne!(page[0], rest[0]);
    // Delete.
    f.delete(
        "v1",
        "ConfigMap",
        Some("default"),
        "a",
        DeleteOptions::default(),
    )
    .await
    .unwrap();
    let e = f
        .get("v1", "ConfigMap", Some("default"), "a")
        .await
        .unwrap_err();
    assert_eq!(e.code, StatusCode::NOT_FOUND);
    assert_eq!(f.o.list_all("v1", "ConfigMap").await.unwrap().len(), 1);
}

#[tokio::test]
async fn updates_without_a_resource_version_never_conflict() {
    let f = std::sync::Arc::new(fixture().await);
    f.create(
        "v1",
        "ConfigMap",
        Some("default"),
        json!({"metadata": {"name": "hot"}, "data": {"n": "0"}}),
    )
    .await
    .unwrap();
    // Many unconditional updates at once: each reads, then commits against
    // what it read; the losers of each race try again instead of answering
    // 409, as Kubernetes' GuaranteedUpdate does.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move {
                f.update(
                    "v1",
                    "ConfigMap",
                    Some("default"),
                    json!({"metadata": {"name": "hot"}, "data": {"n": i.to_string()}}),
                    None,
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await
            .unwrap()
            .expect("an unconditional update is never a conflict");
    }
}

#[tokio::test]
async fn admission_is_strict_and_names_follow_the_kind() {
    let f = fixture().await;
    let e = f
        .create(
            "v1",
            "ConfigMap",
            Some("default"),
            json!({"metadata": {"name": "a"}, "bogus": 1}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "strict decoding error: unknown field \"bogus\""
        )
    );
    // Services are DNS-1035 labels, ConfigMaps DNS-1123 subdomains, RBAC path segments.
    let svc = json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}});
    let e = f
        .create("v1", "Service", Some("default"), svc)
        .await
        .unwrap_err();
    assert_eq!(e.reason, "Invalid");
    f.create(
        "v1",
        "ConfigMap",
        Some("default"),
        json!({"metadata": {"name": "1cm"}}),
    )
    .await
    .unwrap();
    f.create(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        None,
        json!({"metadata": {"name": "system:x"}}),
    )
    .await
    .unwrap();
    let e = f
        .create(
            "v1",
            "Namespace",
            None,
            json!({"metadata": {"name": "a.b"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason, "Invalid");
    // ConfigMaps and Secrets hold at most 1 MiB.
    let big = "x".repeat(strategy::MAX_DATA);
    let e = f
        .create(
            "v1",
            "ConfigMap",
            Some("default"),
            json!({"metadata": {"name": "big"}, "data": {"k": big}}),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("Too long"), "{}", e.message);
    // Dry run admits and answers but stores nothing.
    let t = f.t("v1", "ConfigMap");
    let dry = WriteOptions {
        dry_run: true,
        ..wo("test")
    };
    let w =
        f.o.create(
            &t,
            Some("default"),
            json!({"metadata": {"name": "dry"}}),
            &dry,
        )
        .await
        .unwrap();
    assert!(w.created);
    assert!(
        f.get("v1", "ConfigMap", Some("default"), "dry")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn pod_status_and_spec_are_written_apart() {
    let f = fixture().await;
    let pod = json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running"}});
    let created = f.create("v1", "Pod", Some("default"), pod).await.unwrap();
    // A new pod starts from its default status, whatever the client sent.
    assert_ne!(s(&created, "/status/phase"), "Running");
    assert_eq!(created.pointer("/metadata/generation"), Some(&json!(1)));
    let mut st = created.clone();
    st["status"] = json!({"phase": "Running"});
    st["spec"]["activeDeadlineSeconds"] = json!(5);
    let after = f
        .update("v1", "Pod", Some("default"), st, Some("status"))
        .await
        .unwrap();
    assert_eq!(s(&after, "/status/phase"), "Running");
    assert!(
        after.pointer("/spec/activeDeadlineSeconds").is_none(),
        "a status write changed the spec"
    );
    assert_eq!(after.pointer("/metadata/generation"), Some(&json!(1)));
    let mut spec = after.clone();
    spec["status"] = json!({"phase": "Failed"});
    spec["spec"]["activeDeadlineSeconds"] = json!(5);
    let after = f
        .update("v1", "Pod", Some("default"), spec, None)
        .await
        .unwrap();
    assert_eq!(
        s(&after, "/status/phase"),
        "Running",
        "a spec write changed the status"
    );
    assert_eq!(
        after.pointer("/spec/activeDeadlineSeconds"),
        Some(&json!(5))
    );
    assert_eq!(after.pointer("/metadata/generation"), Some(&json!(2)));
}

#[tokio::test]
async fn pods_bind_and_delete_gracefully() {
    let f = fixture().await;
    f.create("v1", "Node", None, json!({"metadata": {"name": "n1"}}))
        .await
        .unwrap();
    let pod = |name: &str| json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    f.create("v1", "Pod", Some("default"), pod("p"))
        .await
        .unwrap();
    let bound = f.o.bind("default", "p", "n1").await.unwrap();
    assert_eq!(s(&bound, "/spec/nodeName"), "n1");
    assert_eq!(s(&bound, "/status/conditions/0/type"), "PodScheduled");
    let e = f.o.bind("default", "p", "n2").await.unwrap_err();
    assert_eq!(e.code, StatusCode::CONFLICT);
    // On a node that exists: marked with the grace period and kept.
    let marked = f
        .delete("v1", "Pod", Some("default"), "p", DeleteOptions::default())
        .await
        .unwrap();
    assert!(!s(&marked, "/metadata/deletionTimestamp").is_empty());
    assert_eq!(
        marked.pointer("/metadata/deletionGracePeriodSeconds"),
        Some(&json!(30))
    );
    f.get("v1", "Pod", Some("default"), "p").await.unwrap();
    // The agent's delete with grace 0 removes it.
    let now = DeleteOptions {
        grace: Some(0),
        ..DeleteOptions::default()
    };
    f.delete("v1", "Pod", Some("default"), "p", now)
        .await
        .unwrap();
    assert!(f.get("v1", "Pod", Some("default"), "p").await.is_err());
    // An unbound pod goes at once; propagation adds no finalizer to pods.
    f.create("v1", "Pod", Some("default"), pod("q"))
        .await
        .unwrap();
    let orphan = DeleteOptions {
        propagation: Some(Propagation::Orphan),
        ..DeleteOptions::default()
    };
    f.delete("v1", "Pod", Some("default"), "q", orphan)
        .await
        .unwrap();
    assert!(f.get("v1", "Pod", Some("default"), "q").await.is_err());
    // A pod with a finalizer is held with grace 0 and goes with its last finalizer.
    let mut held = pod("r");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    f.create("v1", "Pod", Some("default"), held).await.unwrap();
    let marked = f
        .delete("v1", "Pod", Some("default"), "r", DeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        marked.pointer("/metadata/deletionGracePeriodSeconds"),
        Some(&json!(0))
    );
    let mut released = f.get("v1", "Pod", Some("default"), "r").await.unwrap();
    released["metadata"]["finalizers"] = json!([]);
    f.update("v1", "Pod", Some("default"), released, None)
        .await
        .unwrap();
    assert!(f.get("v1", "Pod", Some("default"), "r").await.is_err());
}

#[tokio::test]
async fn finalizers_and_propagation_hold_a_delete() {
    let f = fixture().await;
    f.create(
        "v1",
        "ConfigMap",
        Some("default"),
        json!({"metadata": {"name": "a"}}),
    )
    .await
    .unwrap();
    let orphan = DeleteOptions {
        propagation: Some(Propagation::Orphan),
        ..DeleteOptions::default()
    };
    let held = f
        .delete("v1", "ConfigMap", Some("default"), "a", orphan)
        .await
        .unwrap();
    assert_eq!(finalizers_of(&held), [ORPHAN_FINALIZER]);
    assert_eq!(
        held.pointer("/metadata/deletionGracePeriodSeconds"),
        Some(&json!(0))
    );
    // No new finalizer while deleting.
    let mut more = f
        .get("v1", "ConfigMap", Some("default"), "a")
        .await
        .unwrap();
    more["metadata"]["finalizers"] = json!([ORPHAN_FINALIZER, "example.com/other"]);
    let e = f
        .update("v1", "ConfigMap", Some("default"), more, None)
        .await
        .unwrap_err();
    assert!(e.message.contains("no new finalizers"), "{}", e.message);
    // Removing the last finalizer completes the delete.
    let mut done = f
        .get("v1", "ConfigMap", Some("default"), "a")
        .await
        .unwrap();
    done["metadata"]["finalizers"] = json!([]);
    f.update("v1", "ConfigMap", Some("default"), done, None)
        .await
        .unwrap();
    assert!(
        f.get("v1", "ConfigMap", Some("default"), "a")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn jobs_select_their_pods_by_uid() {
    let f = fixture().await;
    let template =
        json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}});
    let job = f
        .create(
            "batch/v1",
            "Job",
            Some("default"),
            json!({"metadata": {"name": "j"}, "spec": {"template": template}}),
        )
        .await
        .unwrap();
    let uid = s(&job, "/metadata/uid");
    assert_eq!(
        s(
            &job,
            "/spec/selector/matchLabels/batch.kubernetes.io~1controller-uid"
        ),
        uid
    );
    assert_eq!(s(&job, "/spec/template/metadata/labels/job-name"), "j");
    assert_eq!(
        s(&job, "/spec/template/metadata/labels/controller-uid"),
        uid
    );
    // A manual selector stays as given.
    let mut manual = template.clone();
    manual["metadata"] = json!({"labels": {"app": "m"}});
    let job = f
        .create(
            "batch/v1",
            "Job",
            Some("default"),
            json!({"metadata": {"name": "m"}, "spec": {"manualSelector": true,
                "selector": {"matchLabels": {"app": "m"}}, "template": manual}}),
        )
        .await
        .unwrap();
    assert_eq!(
        job.pointer("/spec/selector"),
        Some(&json!({"matchLabels": {"app": "m"}}))
    );
    assert!(
        job.pointer("/spec/template/metadata/labels/job-name")
            .is_none()
    );
}

#[tokio::test]
async fn services_allocate_and_release_addresses() {
    let f = fixture().await;
    let svc = |name: &str, spec: Value| json!({"metadata": {"name": name}, "spec": spec});
    let a = f
        .create(
            "v1",
            "Service",
            Some("default"),
            svc("a", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    let ip = s(&a, "/spec/clusterIP").to_string();
    assert!(
        ip.starts_with("10.96.0.") && ip != "10.96.0.0" && ip != "10.96.0.255",
        "{ip}"
    );
    assert_eq!(a.pointer("/spec/clusterIPs"), Some(&json!([ip])));
    let port = a
        .pointer("/spec/ports/0/nodePort")
        .and_then(Value::as_u64)
        .unwrap();
    assert!((30000..=30004).contains(&port));
    let ip_key = format!("/skiff/alloc/clusterip/{ip}");
    let port_key = format!("/skiff/alloc/nodeport/{port}");
    assert_eq!(
        f.keys("/skiff/alloc/").await,
        [ip_key.clone(), port_key.clone()]
    );
    let owner = f.o.store.get(&ip_key).await.unwrap().unwrap().value;
    assert_eq!(owner, b"default/a");
    // The same address again is refused; an update keeps it and may not change it.
    let e = f
        .create(
            "v1",
            "Service",
            Some("default"),
            svc("b", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("already allocated"), "{}", e.message);
    let mut kept = a.clone();
    kept["spec"]["clusterIP"] = json!("");
    kept["spec"]["clusterIPs"] = json!([]);
    let kept = f
        .update("v1", "Service", Some("default"), kept, None)
        .await
        .unwrap();
    assert_eq!(s(&kept, "/spec/clusterIP"), ip);
    let mut moved = kept.clone();
    moved["spec"]["clusterIP"] = json!("10.96.0.9");
    moved["spec"]["clusterIPs"] = json!(["10.96.0.9"]);
    let e = f
        .update("v1", "Service", Some("default"), moved, None)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("may not change once set"),
        "{}",
        e.message
    );
    // Out of range.
    let e = f
        .create(
            "v1",
            "Service",
            Some("default"),
            svc(
                "c",
                json!({"clusterIP": "10.97.0.1", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .unwrap_err();
    assert!(
        e.message.contains("not in the valid range"),
        "{}",
        e.message
    );
    // Delete releases both keys with the Service.
    f.delete(
        "v1",
        "Service",
        Some("default"),
        "a",
        DeleteOptions::default(),
    )
    .await
    .unwrap();
    assert!(f.keys("/skiff/alloc/").await.is_empty());
    // A key no Service holds (its Service went without a delete) is repaired away.
    let d = f
        .create(
            "v1",
            "Service",
            Some("default"),
            svc("d", json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    f.o.store
        .write(Op::create(
            "/skiff/alloc/clusterip/10.96.0.77",
            b"default/gone".to_vec(),
        ))
        .await
        .unwrap();
    f.o.repair_service_allocations().await.unwrap();
    assert_eq!(
        f.keys("/skiff/alloc/").await,
        [format!(
            "/skiff/alloc/clusterip/{}",
            s(&d, "/spec/clusterIP")
        )]
    );
}

#[tokio::test]
async fn namespaces_take_their_contents_along() {
    let f = fixture().await;
    f.create(
        "v1",
        "Namespace",
        None,
        json!({"metadata": {"name": "team"}}),
    )
    .await
    .unwrap();
    f.create(
        "v1",
        "ConfigMap",
        Some("team"),
        json!({"metadata": {"name": "a"}}),
    )
    .await
    .unwrap();
    f.create(
        "v1",
        "Service",
        Some("team"),
        json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await
    .unwrap();
    f.delete("v1", "Namespace", None, "team", DeleteOptions::default())
        .await
        .unwrap();
    assert!(f.get("v1", "Namespace", None, "team").await.is_err());
    assert!(f.keys("/core/configmaps/team/").await.is_empty());
    assert!(f.keys("/core/services/team/").await.is_empty());
    // A terminating namespace takes nothing new.
    f.create(
        "v1",
        "Namespace",
        None,
        json!({"metadata": {"name": "closing"}}),
    )
    .await
    .unwrap();
    let mut ns = f.get("v1", "Namespace", None, "closing").await.unwrap();
    ns["status"] = json!({"phase": "Terminating"});
    f.update("v1", "Namespace", None, ns, Some("status"))
        .await
        .unwrap();
    let e = f
        .create(
            "v1",
            "ConfigMap",
            Some("closing"),
            json!({"metadata": {"name": "a"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn watches_follow_the_selectors() {
    let f = fixture().await;
    let t = f.t("v1", "ConfigMap");
    let from = f.o.store.status().applied;
    let mut w =
        f.o.watch(
            &t,
            Some("default"),
            LabelSelector::parse("app=x").unwrap(),
            FieldSelector::default(),
            from,
        )
        .unwrap();
    let cm = f
        .create(
            "v1",
            "ConfigMap",
            Some("default"),
            json!({"metadata": {"name": "a", "labels": {"app": "x"}}}),
        )
        .await
        .unwrap();
    f.create(
        "v1",
        "ConfigMap",
        Some("default"),
        json!({"metadata": {"name": "other"}}),
    )
    .await
    .unwrap();
    let mut relabelled = cm.clone();
    relabelled["metadata"]["labels"]["app"] = json!("y");
    f.update("v1", "ConfigMap", Some("default"), relabelled, None)
        .await
        .unwrap();
    f.delete(
        "v1",
        "ConfigMap",
        Some("default"),
        "a",
        DeleteOptions::default(),
    )
    .await
    .unwrap();
    let ev = next(&mut w).await;
    assert_eq!(
        (
            ev.kind(),
            crate::model::meta::name_of(&ev.clone().into_object())
        ),
        ("ADDED", "a".into())
    );
    // "other" never matched; the relabelled one leaves the selection.
    let ev = next(&mut w).await;
    assert_eq!(ev.kind(), "DELETED");
    assert_eq!(s(&ev.into_object(), "/metadata/labels/app"), "y");
    assert!(w.revision() > from);
    // Its real delete does not match any more: nothing further.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), w.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn delete_collection_deletes_what_matches() {
    let f = fixture().await;
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        f.create(
            "v1",
            "ConfigMap",
            Some("default"),
            json!({"metadata": {"name": name, "labels": {"app": app}}}),
        )
        .await
        .unwrap();
    }
    let t = f.t("v1", "ConfigMap");
    let (deleted, _) =
        f.o.delete_collection(
            &t,
            Some("default"),
            &LabelSelector::parse("app=x").unwrap(),
            &FieldSelector::default(),
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(deleted.len(), 2);
    let left: Vec<String> =
        f.o.list_all("v1", "ConfigMap")
            .await
            .unwrap()
            .iter()
            .map(crate::model::meta::name_of)
            .collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_races_other_writes_is_retried_and_preconditions_still_hold() {
    let f = fixture().await;
    let t = f.t("v1", "ConfigMap");
    for i in 0..20 {
        let name = format!("busy-{i}");
        let cm = f
            .create(
                "v1",
                "ConfigMap",
                Some("default"),
                json!({"metadata": {"name": name}, "data": {"n": "0"}}),
            )
            .await
            .unwrap();
        // A writer that keeps changing the object (as a controller writing
        // status does) until it is gone.
        let (o, wt, wname) = (f.o.clone(), t.clone(), name.clone());
        let writer = tokio::spawn(async move {
            for n in 1.. {
                let obj = json!({"metadata": {"name": wname}, "data": {"n": n.to_string()}});
                match o
                    .update(&wt, Some("default"), &wname, obj, None, &wo("writer"))
                    .await
                {
                    Err(e) if e.code == StatusCode::NOT_FOUND => return n,
                    _ => tokio::task::yield_now().await,
                }
            }
            unreachable!()
        });
        // The writer is under way (seen, not slept for: on a loaded machine
        // a sleep does not make it run).
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let now = f.o.get(&t, Some("default"), &name).await.unwrap();
                if s(&now, "/data/n") != "0" {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the writer writes");
        // A stale uid is a conflict no retry fixes, and deletes nothing.
        let e = f
            .delete(
                "v1",
                "ConfigMap",
                Some("default"),
                &name,
                DeleteOptions {
                    uid: Some("not-its-uid".into()),
                    ..DeleteOptions::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, StatusCode::CONFLICT);
        assert!(
            e.message
                .contains("Precondition failed: UID in precondition"),
            "{}",
            e.message
        );
        // Without preconditions a delete never loses to the writer.
        f.delete(
            "v1",
            "ConfigMap",
            Some("default"),
            &name,
            DeleteOptions {
                uid: Some(s(&cm, "/metadata/uid").to_string()),
                ..DeleteOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("delete {name}: {}", e.message));
        let writes = tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the writer sees the object gone")
            .unwrap();
        assert!(writes > 1, "the writer wrote while the delete ran");
    }
}
