//! The `Store` handle in-process on a real data dir: transactions, preconditions,
//! ranges, watches and restart.

use std::time::Duration;

use skiff_control::store::{
    ConflictKind, EventKind, Expect, Op, ReplicaConfig, Store, StoreConfig, StoreError, Txn,
};

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(dir: &std::path::Path, replica: ReplicaConfig) -> Store {
    let store = Store::start(
        StoreConfig {
            data_dir: dir.to_path_buf(),
            peer_addr: format!("127.0.0.1:{}", port()),
            peer_tls: skiff_control::store::PeerTls::default(),
            bootstrap: true,
            tick: Duration::from_millis(20),
            replica,
        },
        42,
    )
    .await
    .unwrap();
    for _ in 0..200 {
        if store.status().leader_id != 0 {
            return store;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader");
}

#[tokio::test]
async fn txn_is_all_or_nothing_and_preconditions_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), ReplicaConfig::default()).await;
    let r1 = s.write(Op::create("/a/1", b"one".to_vec())).await.unwrap();
    let err = s
        .write(Op::create("/a/1", b"again".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            kind: ConflictKind::AlreadyExists,
            ..
        }
    ));
    // Stale revision.
    let r2 = s
        .write(Op::update("/a/1", b"two".to_vec(), r1))
        .await
        .unwrap();
    let err = s
        .write(Op::update("/a/1", b"x".to_vec(), r1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            kind: ConflictKind::RevisionMismatch { expected, actual },
            ..
        } if expected == r1 && actual == r2
    ));
    // A txn whose second op fails writes nothing.
    let txn = Txn {
        ops: vec![
            Op::create("/a/2", b"new".to_vec()),
            Op::delete("/a/missing", None),
        ],
    };
    assert!(s.txn(txn).await.is_err());
    assert_eq!(s.get("/a/2").await.unwrap(), None);
    // A txn that holds applies every op at one revision.
    let out = s
        .txn(Txn {
            ops: vec![
                Op::create("/a/2", b"new".to_vec()),
                Op::Put {
                    key: "/a/1".into(),
                    value: b"three".to_vec(),
                    expect: Expect::Revision(r2),
                },
            ],
        })
        .await
        .unwrap();
    let a1 = s.get("/a/1").await.unwrap().unwrap();
    let a2 = s.get("/a/2").await.unwrap().unwrap();
    assert_eq!(
        (a1.mod_revision, a2.mod_revision),
        (out.revision, out.revision)
    );
    assert_eq!(a1.create_revision, r1);
    // Range reads are prefix-bounded and ordered, with a start key for paging.
    s.write(Op::create("/b/1", b"b".to_vec())).await.unwrap();
    let (page, _) = s.list("/a/", None, 1).await.unwrap();
    assert_eq!(page[0].key, "/a/1");
    let (rest, rev) = s.list("/a/", Some("/a/1\0"), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/a/2"]
    );
    assert!(rev >= out.revision);
    s.shutdown();
}

#[tokio::test]
async fn watch_replays_follows_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ReplicaConfig {
        watch_capacity: 8,
        ..ReplicaConfig::default()
    };
    let s = start(dir.path(), cfg).await;
    let first = s.write(Op::create("/w/0", b"0".to_vec())).await.unwrap();
    s.write(Op::create("/x/0", b"x".to_vec())).await.unwrap();
    s.write(Op::delete("/w/0", None)).await.unwrap();
    let mut w = s.watch("/w/", first - 1).unwrap();
    let e1 = w.next().await.unwrap();
    assert_eq!((e1.kind, e1.kv.key.as_str()), (EventKind::Put, "/w/0"));
    let e2 = w.next().await.unwrap();
    assert_eq!(e2.kind, EventKind::Delete);
    assert!(e2.revision > e1.revision);
    let live = s.write(Op::create("/w/1", b"1".to_vec())).await.unwrap();
    let e3 = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e3.revision, live);
    for i in 0..20 {
        s.write(Op::create(format!("/y/{i}"), vec![]))
            .await
            .unwrap();
    }
    assert!(matches!(
        s.watch("/w/", first),
        Err(StoreError::Expired { .. })
    ));
    s.shutdown();
}

#[tokio::test]
async fn restart_resumes_id_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), ReplicaConfig::default()).await;
    let id = s.id();
    for i in 0..100 {
        s.write(Op::create(format!("/r/{i:03}"), vec![b'v'; 64]))
            .await
            .unwrap();
    }
    s.shutdown();
    s.stopped().await;
    drop(s);
    let s = start(dir.path(), ReplicaConfig::default()).await;
    assert_eq!(s.id(), id);
    let (all, _) = s.list("/r/", None, usize::MAX).await.unwrap();
    assert_eq!(all.len(), 100);
    s.shutdown();
}
