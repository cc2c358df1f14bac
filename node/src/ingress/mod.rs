//! The Ingress router every node runs (k3s ships Traefik; Skiff builds it
//! in): it serves the Ingresses of Skiff's IngressClasses
//! (`skiff_common::ingress::served`) on the node's HTTP and HTTPS ports, with
//! host and path rules (`table.rs`), TLS from the Ingresses' Secrets chosen
//! by SNI (`tls.rs`), and requests forwarded straight to the Services' ready
//! endpoints (`serve.rs`), not through the ClusterIP.
//!
//! **A listener that cannot bind is logged and left off; the router never
//! stops the agent. The table only changes whole: a request sees one table.**

pub mod serve;
pub mod table;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::proxy::{ServiceView, follow};

/// Where the router listens (`None`: that listener is off).
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub node: String,
}

/// How often TLS Secrets are read again (a renewed certificate is served
/// within this).
const SECRETS_EVERY: Duration = Duration::from_secs(30);

/// The Ingresses this router serves.
fn served(ingresses: &Store<Ingress>, classes: &Store<IngressClass>) -> Vec<Ingress> {
    let classes: Vec<serde_json::Value> = classes
        .state()
        .iter()
        .filter_map(|c| serde_json::to_value(c.as_ref()).ok())
        .collect();
    ingresses
        .state()
        .iter()
        .filter(|i| {
            serde_json::to_value(i.as_ref())
                .is_ok_and(|v| skiff_common::ingress::served(&v, &classes))
        })
        .map(|i| (**i).clone())
        .collect()
}

/// The certificates of the served Ingresses' TLS Secrets; a Secret that
/// cannot be read or used is logged once per read and skipped.
async fn certs(client: &Client, ingresses: &[Ingress]) -> tls::Certs {
    let mut out = tls::Certs::default();
    let mut seen: BTreeMap<(String, String), Option<Arc<rustls::sign::CertifiedKey>>> =
        BTreeMap::new();
    for ing in ingresses {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        for t in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(name) = t.secret_name.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            let key = (ns.clone(), name.clone());
            if !seen.contains_key(&key) {
                let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
                let got = match api.get_opt(&name).await {
                    Ok(Some(s)) => {
                        let data = s.data.unwrap_or_default();
                        let field = |k: &str| data.get(k).map(|b| b.0.clone()).unwrap_or_default();
                        tls::certified(&field("tls.crt"), &field("tls.key"))
                            .map_err(|e| format!("secret {ns}/{name}: {e}"))
                    }
                    Ok(None) => Err(format!("secret {ns}/{name} not found")),
                    Err(e) => Err(format!("secret {ns}/{name}: {e}")),
                };
                let got = got
                    .inspect_err(|e| tracing::warn!(error = %e, "ingress TLS certificate"))
                    .ok();
                seen.insert(key.clone(), got);
            }
            if let Some(Some(k)) = seen.get(&key) {
                out.add(&t.hosts.clone().unwrap_or_default(), k.clone());
            }
        }
    }
    out
}

async fn listen(
    addr: SocketAddr,
    router: Arc<serve::Router>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "the Ingress router cannot listen here; this listener stays off");
            return std::future::pending().await;
        }
    };
    tracing::info!(%addr, tls = tls.is_some(), "Ingress router listening");
    let (scheme, port) = (if tls.is_some() { "https" } else { "http" }, addr.port());
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (router, tls) = (router.clone(), tls.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let router = router.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(router.handle(req, peer, scheme, port).await)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let served = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await
                    {
                        Ok(Ok(s)) => {
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                .await
                        }
                        _ => return,
                    }
                }
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(sock), svc)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::trace!(error = %e, "ingress connection");
            }
        });
    }
}

/// Run the router until the future is dropped.
pub async fn run(
    client: Client,
    cfg: RouterConfig,
    services: watch::Receiver<Arc<Vec<ServiceView>>>,
) {
    if cfg.http.is_none() && cfg.https.is_none() {
        return std::future::pending().await;
    }
    let (ingresses, w1) = reflector::store::<Ingress>();
    let (classes, w2) = reflector::store::<IngressClass>();
    let changed = Arc::new(Notify::new());
    let follow_ingresses = follow(Api::<Ingress>::all(client.clone()), w1, changed.clone());
    let follow_classes = follow(
        Api::<IngressClass>::all(client.clone()),
        w2,
        changed.clone(),
    );
    let (table_tx, table_rx) = watch::channel(Arc::new(table::Table::default()));
    let router = Arc::new(serve::Router::new(table_rx, services));
    let resolver = match tls::Resolver::new(&cfg.node) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::warn!(error = %e, "the Ingress router's own certificate");
            return std::future::pending().await;
        }
    };
    // The listeners run on a thread of their own with a single-threaded
    // runtime, as an event-loop proxy does: a request and its upstream
    // exchange never hop between threads.
    let (http, https) = (cfg.http, cfg.https);
    let (router2, resolver2) = (router.clone(), resolver.clone());
    // Dropped with this future: the thread's runtime then ends, and its
    // listeners and connections with it.
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = std::thread::Builder::new()
        .name("ingress".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "the Ingress router's runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let plain = async {
                    match http {
                        Some(a) => listen(a, router2.clone(), None).await,
                        None => std::future::pending().await,
                    }
                };
                let secure = async {
                    match https {
                        Some(a) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
                                tls::server_config(resolver2.clone()),
                            ));
                            listen(a, router2.clone(), Some(acceptor)).await
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = async { tokio::join!(plain, secure) } => {}
                    _ = stopped => {}
                }
            });
        });
    if let Err(e) = serving {
        tracing::warn!(error = %e, "the Ingress router's thread");
        return std::future::pending().await;
    }
    let sync = async {
        let mut last_keys: Vec<String> = Vec::new();
        let mut secrets_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(SECRETS_EVERY) => {}
            }
            // Let a burst of events land first.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let served = served(&ingresses, &classes);
            let table = table::Table::build(&served);
            tracing::debug!(ingresses = table.ingresses.len(), "ingress table");
            let keys: Vec<String> = served
                .iter()
                .map(|i| {
                    format!(
                        "{}/{}@{}",
                        i.metadata.namespace.clone().unwrap_or_default(),
                        i.metadata.name.clone().unwrap_or_default(),
                        i.metadata.resource_version.clone().unwrap_or_default()
                    )
                })
                .collect();
            table_tx.send_replace(Arc::new(table));
            if keys != last_keys || secrets_at.elapsed() >= SECRETS_EVERY {
                resolver.set(certs(&client, &served).await);
                secrets_at = tokio::time::Instant::now();
                last_keys = keys;
            }
        }
    };
    tokio::select! {
        () = follow_ingresses => {},
        () = follow_classes => {},
        () = sync => {},
    }
}
