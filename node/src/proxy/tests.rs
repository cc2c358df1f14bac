//! Unit tests of the proxy's sync loop over a recording nft ruleset: one
//! load per change, a failed load retried, counters summed across table
//! reloads, and the table removed when the proxy stops.

use serde_json::json;

use super::*;
use crate::fakes::{FakeRuleset, Fault, Journal};

fn cfg() -> RuleConfig {
    RuleConfig {
        table: "skiff_t1".into(),
        bridge: "skt0".into(),
        cluster_cidr: "10.88.0.0/16".parse().expect("cidr"),
        service_cidr: "10.96.0.0/16".parse().expect("cidr"),
        activator: None,
        api_relay: None,
        egress: false,
    }
}

fn proxy(nft: &FakeRuleset) -> Proxy {
    Proxy {
        cfg: cfg(),
        nft: Arc::new(nft.clone()),
        dns: None,
        host_ports: Default::default(),
        wakers: tokio::sync::watch::Sender::new(Default::default()),
    }
}

fn service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "d"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .expect("service")
}

fn slice() -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": "web-x", "namespace": "d",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"port": 8080}],
        "endpoints": [{"addresses": ["10.88.7.9"], "conditions": {"ready": true}}],
    }))
    .expect("slice")
}

async fn until(what: &str, ok: impl Fn() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn each_change_is_loaded_once_a_failed_load_is_retried_and_the_table_goes_at_the_end() {
    let journal = Journal::default();
    journal.arm(Fault::Once(0));
    let nft = FakeRuleset::new(journal.clone());
    let (services, mut w_services) = reflector::store::<Service>();
    let (slices, mut w_slices) = reflector::store::<EndpointSlice>();
    let (deployments, _w3) = reflector::store::<Deployment>();
    let (hpas, _w4) = reflector::store::<HorizontalPodAutoscaler>();
    let sources = Sources {
        services,
        slices,
        deployments,
        hpas,
    };
    let changed = Arc::new(Notify::new());
    let (views_tx, views) = watch::channel(Arc::new(Vec::new()));
    let p = proxy(&nft);
    let stats = crate::stats::Stats::new("n1", false);
    let (c, s) = (changed.clone(), stats.clone());
    let task = tokio::spawn(async move { p.sync_loop(sources, c, s, views_tx).await });

    w_services.apply_watcher_event(&watcher::Event::Apply(service()));
    changed.notify_one();
    until("the first load, after a failed one", || {
        nft.applied().len() == 1
    })
    .await;
    assert_eq!(journal.failed().len(), 1, "{:?}", journal.calls());
    assert_eq!(views.borrow().len(), 1, "the views are published");
    assert_eq!(
        nft.applied()[0],
        rules::render(&cfg(), &views.borrow(), &[])
    );

    // Nothing changed: nothing is loaded.
    changed.notify_one();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(nft.applied().len(), 1);

    w_slices.apply_watcher_event(&watcher::Event::Apply(slice()));
    changed.notify_one();
    until("the endpoint's load", || nft.applied().len() == 2).await;
    let second = nft.applied()[1].clone();
    assert!(
        second.contains("10.96.0.20") && second.contains("10.88.7.9"),
        "{second}"
    );

    task.abort();
    let _ = task.await;
    assert_eq!(
        nft.applied().last(),
        Some(&rules::remove("skiff_t1")),
        "the proxy removes its table when it stops"
    );
}

#[test]
fn connection_counts_add_up_across_table_reloads() {
    let nft = FakeRuleset::new(Journal::default());
    let p = proxy(&nft);
    let chain = |n: u64| {
        json!({"nftables": [{"rule": {"comment": "d/web",
            "expr": [{"counter": {"packets": n, "bytes": 0}}]}}]})
        .to_string()
    };
    let key = ("d".to_string(), "web".to_string());
    let mut counts = Counts::default();
    nft.set_chain(&chain(3));
    p.read_counts(&mut counts);
    nft.set_chain(&chain(5));
    p.read_counts(&mut counts);
    assert_eq!(counts.total[&key], 5);
    // A new table starts its counters from zero.
    counts.read.clear();
    nft.set_chain(&chain(2));
    p.read_counts(&mut counts);
    assert_eq!(counts.total[&key], 7);
    // A failed listing keeps what was counted.
    nft.journal.arm(Fault::Always("nft_list_chain"));
    p.read_counts(&mut counts);
    assert_eq!(counts.total[&key], 7);
}
