//! The Service proxy of a node, in the kernel: it watches Services and
//! EndpointSlices and keeps the node's nftables table (`skiff_<node>`) equal to
//! them — ClusterIP, NodePort and LoadBalancer addresses DNAT to ready
//! endpoints (TCP and UDP, random or ClientIP-sticky), as kube-proxy's nftables
//! mode does. It also feeds the cluster DNS the same snapshot.
//!
//! **The table is installed (empty of Services, with the forward guard) before
//! IPv4 forwarding is switched on and before any pod starts, and removed when
//! the proxy stops.**

pub mod hostports;
pub mod nft;
pub mod rules;
#[cfg(test)]
mod tests;
pub mod wake;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

pub use nft::{NftCli, Ruleset};
pub use rules::{RuleConfig, ServiceView};

/// Errors of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("nft: {0}")]
    Nft(String),
    #[error("enable forwarding: {0}")]
    Forwarding(std::io::Error),
}

/// The node's Service proxy.
pub struct Proxy {
    cfg: RuleConfig,
    nft: Arc<dyn Ruleset>,
    dns: Option<crate::dns::ClusterDns>,
    /// The node's pods' `hostPort`s.
    host_ports: Arc<hostports::HostPorts>,
    /// The scale-to-zero Deployments as last seen (the activator's).
    wakers: watch::Sender<Arc<wake::Wakers>>,
}

/// The table name of a node (nft names take letters, digits and `_`).
pub fn table_name(node: &str) -> String {
    let clean: String = node
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("skiff_{clean}")
}

impl Proxy {
    /// Install the base table (no Services yet), then switch on forwarding.
    pub fn start(
        cfg: RuleConfig,
        nft: Arc<dyn Ruleset>,
        dns: Option<crate::dns::ClusterDns>,
        host_ports: Arc<hostports::HostPorts>,
    ) -> Result<Proxy, ProxyError> {
        nft.apply(&rules::render(&cfg, &[], &[]))?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(ProxyError::Forwarding)?;
        Ok(Proxy {
            cfg,
            nft,
            dns,
            host_ports,
            wakers: watch::Sender::new(Arc::default()),
        })
    }

    /// The scale-to-zero Deployments, as the proxy last saw them.
    pub fn wakers(&self) -> watch::Receiver<Arc<wake::Wakers>> {
        self.wakers.subscribe()
    }

    /// Follow Services, EndpointSlices, Deployments and
    /// HorizontalPodAutoscalers until the future is dropped; each change
    /// reprograms the table (changes arriving together share one sync) and
    /// publishes the views on `views`. Connection counts go to `stats`.
    pub async fn run(
        self,
        client: Client,
        stats: Arc<crate::stats::Stats>,
        views: watch::Sender<Arc<Vec<ServiceView>>>,
    ) {
        let (services, w1) = reflector::store::<Service>();
        let (slices, w2) = reflector::store::<EndpointSlice>();
        let (deployments, w3) = reflector::store::<Deployment>();
        let (hpas, w4) = reflector::store::<HorizontalPodAutoscaler>();
        let changed = Arc::new(Notify::new());
        let follow_services = follow(Api::<Service>::all(client.clone()), w1, changed.clone());
        let follow_slices = follow(
            Api::<EndpointSlice>::all(client.clone()),
            w2,
            changed.clone(),
        );
        let follow_deployments =
            follow(Api::<Deployment>::all(client.clone()), w3, changed.clone());
        let follow_hpas = follow(
            Api::<HorizontalPodAutoscaler>::all(client),
            w4,
            changed.clone(),
        );
        let sources = Sources {
            services,
            slices,
            deployments,
            hpas,
        };
        let sync = self.sync_loop(sources, changed, stats, views);
        tokio::select! {
            () = follow_services => {},
            () = follow_slices => {},
            () = follow_deployments => {},
            () = follow_hpas => {},
            () = sync => {},
        }
    }

    /// Add the connections counted since the last read to `totals` (the
    /// table's counters start from zero after every sync).
    fn read_counts(&self, totals: &mut Counts) {
        let Ok(json) = self.nft.list_chain(&self.cfg.table, "services") else {
            return;
        };
        let now = rules::connection_counts(&json);
        for (k, n) in &now {
            let seen = totals.read.get(k).copied().unwrap_or(0);
            *totals.total.entry(k.clone()).or_default() += n.saturating_sub(seen);
        }
        totals.total.retain(|k, _| now.contains_key(k));
        totals.read = now;
    }

    async fn sync_loop(
        &self,
        src: Sources,
        changed: Arc<Notify>,
        stats: Arc<crate::stats::Stats>,
        publish: watch::Sender<Arc<Vec<ServiceView>>>,
    ) {
        let mut last = String::new();
        let mut counts = Counts::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = self.host_ports.changed() => {}
                _ = tick.tick() => {
                    self.read_counts(&mut counts);
                    stats.count_connections(&counts.total);
                    continue;
                }
            }
            // Let a burst of events land before syncing.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let svcs: Vec<Service> = src.services.state().iter().map(|s| (**s).clone()).collect();
            let sls: Vec<EndpointSlice> =
                src.slices.state().iter().map(|s| (**s).clone()).collect();
            let deps: Vec<Deployment> = src
                .deployments
                .state()
                .iter()
                .map(|s| (**s).clone())
                .collect();
            let hpas: Vec<HorizontalPodAutoscaler> =
                src.hpas.state().iter().map(|s| (**s).clone()).collect();
            if let Some(dns) = &self.dns {
                dns.update(crate::dns::Records::build(
                    crate::agent::CLUSTER_DOMAIN,
                    &svcs,
                    &sls,
                ));
            }
            let wakers = Arc::new(wake::Wakers::build(&deps, &hpas));
            let mut views = rules::views(&svcs, &sls, &wakers);
            self.wakers.send_replace(wakers);
            if let Some(relay) = self.cfg.api_relay {
                rules::relay_api(&mut views, relay);
            }
            let script = rules::render(&self.cfg, &views, &self.host_ports.rules());
            if script == last {
                publish.send_replace(Arc::new(views));
                continue;
            }
            // The counters restart with the new table: take what they hold.
            self.read_counts(&mut counts);
            let t = Instant::now();
            let (nft, text) = (self.nft.clone(), script.clone());
            let applied = tokio::task::spawn_blocking(move || nft.apply(&text))
                .await
                .unwrap_or_else(|e| Err(ProxyError::Nft(e.to_string())));
            // The views are published once the rules carry them (a pod
            // waiting to be unrouted before it stops reads them).
            match applied {
                Ok(()) => {
                    tracing::debug!(
                        services = svcs.len(),
                        took_ms = t.elapsed().as_secs_f64() * 1e3,
                        "rules synced"
                    );
                    last = script;
                    counts.read.clear();
                    publish.send_replace(Arc::new(views));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "proxy sync failed; retrying");
                    publish.send_replace(Arc::new(views));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    changed.notify_one();
                }
            }
        }
    }
}

/// The caches the proxy renders from.
struct Sources {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    deployments: Store<Deployment>,
    hpas: Store<HorizontalPodAutoscaler>,
}

/// Connections per Service: the totals since the proxy started and what the
/// current table's counters held at the last read.
#[derive(Default)]
struct Counts {
    total: BTreeMap<(String, String), u64>,
    read: BTreeMap<(String, String), u64>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Err(e) = self.nft.apply(&rules::remove(&self.cfg.table)) {
            tracing::warn!(error = %e, "removing the proxy's table");
        }
    }
}

/// Keep `writer`'s cache equal to the objects of `api`, waking `changed` on
/// every event (the watcher re-lists after errors, with back-off).
pub(crate) async fn follow<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::debug!(error = %e, "proxy watch"),
        }
    }
}
