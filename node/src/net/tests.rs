//! Unit tests of the pod network over the recording host: the node's routes
//! before anything else, attach and detach, adoption, undo after a failed
//! step, and the warm pool.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::fakes::{FakeNet, Fault, Journal};

fn cfg(dir: &std::path::Path, node_cidr: &str) -> NetConfig {
    NetConfig {
        bridge: "skt0".into(),
        node_cidr: node_cidr.parse().expect("cidr"),
        cluster_cidr: "10.88.0.0/16".parse().expect("cidr"),
        service_cidr: "10.96.0.0/16".parse().expect("cidr"),
        state_dir: dir.join("ipam"),
        netns_prefix: "sktest-".into(),
    }
}

async fn network(fake: &FakeNet, dir: &std::path::Path) -> PodNetwork {
    PodNetwork::prepare_on(cfg(dir, "10.88.7.0/24"), Arc::new(fake.clone()))
        .await
        .expect("pod network")
}

#[tokio::test]
async fn the_node_is_fenced_off_before_the_bridge_comes_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeNet::new(Journal::default());
    network(&fake, dir.path()).await;
    assert_eq!(
        fake.journal.calls(),
        vec![
            "unreachable_route 10.88.0.0/16",
            "unreachable_route 10.96.0.0/16",
            "local_route 10.96.0.0/16",
            "bridge skt0 10.88.7.1/24",
        ]
    );
    let outside = PodNetwork::prepare_on(
        cfg(dir.path(), "10.89.0.0/24"),
        Arc::new(FakeNet::new(Journal::default())),
    )
    .await;
    assert!(matches!(outside, Err(NetError::Config(_))));
}

#[tokio::test]
async fn attach_plumbs_a_namespace_adoption_reuses_it_and_detach_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeNet::new(Journal::default());
    let net = network(&fake, dir.path()).await;
    let a = net.attach("u1").await.expect("attach");
    assert_eq!(a.ip, Ipv4Addr::new(10, 88, 7, 2));
    assert_eq!(a.netns, netns::path("sktest-10-88-7-2"));
    assert_eq!(fake.pod_leftovers("skt0").len(), 2, "{:?}", fake.state());
    assert_eq!(net.recorded(), vec!["u1".to_string()]);

    // An agent restart: a new network on the same records adopts the pod.
    let calls = fake.journal.calls().len();
    let again = network(&fake, dir.path()).await;
    assert_eq!(again.attach("u1").await.expect("adopt"), a);
    let after = &fake.journal.calls()[calls..];
    assert!(
        !after.iter().any(|c| c.starts_with("add_veth")),
        "nothing rebuilt: {after:?}"
    );

    again.detach("u1").await.expect("detach");
    assert_eq!(fake.pod_leftovers("skt0"), Vec::<String>::new());
    assert!(again.recorded().is_empty());
    // Detaching what is gone is fine.
    again.detach("u1").await.expect("detach again");
}

#[tokio::test]
async fn a_failed_step_undoes_what_attach_made() {
    for op in [
        "forget_neighbour",
        "create_netns",
        "add_veth",
        "configure_pod",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeNet::new(Journal::default());
        let net = network(&fake, dir.path()).await;
        fake.journal.arm(Fault::Always(op));
        assert!(net.attach("u1").await.is_err(), "{op}");
        assert_eq!(fake.pod_leftovers("skt0"), Vec::<String>::new(), "{op}");
        assert!(net.recorded().is_empty(), "{op}: the address is released");
        // The next attempt, with the host healthy, succeeds.
        fake.journal.arm(Fault::None);
        net.attach("u1").await.expect("attach");
        net.detach("u1").await.expect("detach");
        assert_eq!(fake.pod_leftovers("skt0"), Vec::<String>::new(), "{op}");
    }
}

#[tokio::test]
async fn a_pod_takes_a_warm_namespace_without_building_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeNet::new(Journal::default());
    let net = network(&fake, dir.path()).await;
    let warm = tokio::spawn(net.clone().keep_warm(2));
    tokio::time::timeout(Duration::from_secs(5), async {
        while net.warm_paths().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("two warm namespaces");
    let paths = net.warm_paths();
    let calls = fake.journal.calls().len();
    let a = net.attach("u1").await.expect("attach");
    assert!(paths.contains(&a.netns), "{a:?} from {paths:?}");
    assert_eq!(
        fake.journal.calls().len(),
        calls,
        "no host call to claim it"
    );
    assert_eq!(net.recorded(), vec!["u1".to_string()]);
    warm.abort();
    let _ = warm.await;
    net.detach("u1").await.expect("detach");
    assert_eq!(
        net.known_netns().len(),
        1,
        "one warm namespace left on record"
    );
}

/// A reply lost on the netlink socket: the step that never hears back fails
/// after [`HOST_DEADLINE`] instead of holding the pod in ContainerCreating,
/// what it made is undone, and the next attempt succeeds.
#[tokio::test(start_paused = true)]
async fn a_host_call_that_never_answers_fails_the_attach_in_time() {
    for op in [
        "forget_neighbour",
        "add_veth",
        "configure_pod",
        "delete_link",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeNet::new(Journal::default());
        let net = network(&fake, dir.path()).await;
        if op == "delete_link" {
            // Lost on the way out: detach fails in time, a retry finishes it.
            net.attach("u1").await.expect("attach");
            fake.journal.arm(Fault::HangOnce(op));
            let err = net.detach("u1").await.expect_err("no answer");
            assert!(matches!(err, NetError::NoAnswer { .. }), "{op}: {err}");
            net.detach("u1").await.expect("detach again");
        } else {
            fake.journal.arm(Fault::HangOnce(op));
            let started = tokio::time::Instant::now();
            let err = net.attach("u1").await.expect_err("no answer");
            assert!(matches!(err, NetError::NoAnswer { .. }), "{op}: {err}");
            assert!(err.to_string().contains("no answer"), "{err}");
            assert!(started.elapsed() >= HOST_DEADLINE, "{op}");
            assert_eq!(fake.journal.failed(), vec![format!("{op} (no answer)")]);
            assert_eq!(fake.pod_leftovers("skt0"), Vec::<String>::new(), "{op}");
            assert!(net.recorded().is_empty(), "{op}: the address is released");
            net.attach("u1").await.expect("attach");
            net.detach("u1").await.expect("detach");
        }
        assert_eq!(fake.pod_leftovers("skt0"), Vec::<String>::new(), "{op}");
        assert!(net.recorded().is_empty(), "{op}");
    }
}
