//! The API servers an agent talks to: the one it joined through, then every
//! server of the cluster as published in ConfigMap `kube-system/skiff-apiservers`
//! (kept current while the agent runs, and on disk for its next start). The
//! agent's one `kube::Client` dials through a connector that tries the server
//! that answered last first and moves on to the next when it does not answer,
//! under the fixed name `kubernetes.default.svc` that every server's
//! certificate carries.
//!
//! **An unreachable API server never ends the agent: requests fail, callers
//! retry, and the next connection goes to another server.**

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;

/// The name agents give the API in URLs: every server's certificate covers it.
pub const API_NAME: &str = "kubernetes.default.svc";

/// How long one server may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The known API servers (`HOST:PORT`), in the order they are tried.
#[derive(Clone)]
pub struct Servers {
    list: Arc<RwLock<Vec<String>>>,
    /// Index of the server that answered last.
    current: Arc<AtomicUsize>,
    file: Option<PathBuf>,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.all()).finish()
    }
}

/// `HOST:PORT` of a server URL (`https://HOST:PORT/...`); 443 by default.
pub fn authority(url: &str) -> String {
    let rest = url
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = rest.split('/').next().unwrap_or(rest);
    if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:443")
    }
}

impl Servers {
    /// `first` (the server given on the command line) and those remembered in
    /// `file` from an earlier run.
    pub fn load(first: &str, file: Option<PathBuf>) -> Servers {
        let mut list = vec![authority(first)];
        if let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
            for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if !list.iter().any(|s| s == l) {
                    list.push(l.to_string());
                }
            }
        }
        Servers {
            list: Arc::new(RwLock::new(list)),
            current: Arc::default(),
            file,
        }
    }

    pub fn all(&self) -> Vec<String> {
        self.list.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// The server that answered last (`HOST:PORT`).
    pub fn current(&self) -> String {
        let all = self.all();
        let i = self.current.load(Ordering::Relaxed);
        all.get(i % all.len().max(1)).cloned().unwrap_or_default()
    }

    /// Add the servers `found` (the cluster's current list) to those known,
    /// keeping the order of the known ones, and remember them on disk.
    pub fn learn(&self, found: impl IntoIterator<Item = String>) {
        let Ok(mut list) = self.list.write() else {
            return;
        };
        let before = list.len();
        for s in found {
            if !s.is_empty() && !list.contains(&s) {
                list.push(s);
            }
        }
        if list.len() != before {
            tracing::info!(servers = ?*list, "api servers known");
            if let Some(f) = &self.file {
                let _ = std::fs::write(f, list.join("\n") + "\n");
            }
        }
    }

    /// Connect to the server that answered last, else to the others in turn.
    pub async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let all = self.all();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = std::io::Error::other("no api server is known");
        for k in 0..all.len() {
            let i = (start + k) % all.len();
            let addr = &all[i];
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => {
                    if i != start % all.len() {
                        tracing::info!(server = %addr, "api server changed");
                    }
                    self.current.store(i, Ordering::Relaxed);
                    let _ = s.set_nodelay(true);
                    notice_silence(&s);
                    return Ok(s);
                }
                Ok(Err(e)) => last = std::io::Error::new(e.kind(), format!("{addr}: {e}")),
                Err(_) => {
                    last = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{addr}: connect timed out"),
                    )
                }
            }
        }
        Err(last)
    }
}

/// Make a connection fail once its server falls silent (a cut link drops
/// packets without a word): keepalive probes after 10 s idle, every 5 s,
/// three unanswered end it; data unacknowledged for 20 s ends it too. A
/// watch on it then ends, and its caller lists again (from the cache, when
/// no server answers).
fn notice_silence(s: &tokio::net::TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let set = [
        setsockopt(s, sockopt::KeepAlive, &true),
        setsockopt(s, sockopt::TcpKeepIdle, &10),
        setsockopt(s, sockopt::TcpKeepInterval, &5),
        setsockopt(s, sockopt::TcpKeepCount, &3),
        setsockopt(s, sockopt::TcpUserTimeout, &20_000),
    ];
    if let Some(Err(e)) = set.into_iter().find(Result::is_err) {
        tracing::debug!(error = %e, "cannot set keepalive on an api server connection");
    }
}

/// A connector (for hyper's client) that dials a known server, whatever the
/// request's URI says.
#[derive(Clone)]
pub struct Connector(pub Servers);

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let servers = self.0.clone();
        Box::pin(async move { servers.connect().await.map(TokioIo::new) })
    }
}

/// A client for the API with the cluster CA and the agent's token, that fails
/// over between `servers` and answers reads from `cache` while none answers.
pub async fn client(
    servers: &Servers,
    ca_pem: &str,
    token: &str,
    cache: &super::cache::Cache,
) -> Result<Client, String> {
    use kube::client::ConfigExt;
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "skiff",
        "clusters": [{"name": "skiff", "cluster": {"server": format!("https://{API_NAME}"),
            "certificate-authority-data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca_pem.as_bytes())}}],
        "users": [{"name": "agent", "user": {"token": token}}],
        "contexts": [{"name": "skiff", "context": {"cluster": "skiff", "user": "agent"}}],
    });
    let kc: Kubeconfig = serde_json::from_value(kubeconfig).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let https = config
        .rustls_https_connector_with_connector(Connector(servers.clone()))
        .map_err(|e| e.to_string())?;
    let hyper: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(super::cache::CacheLayer(cache.clone()))
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(|e| e.to_string())?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

/// `server` (`HOST:PORT`) under the name every server's certificate covers.
pub fn named(server: &str) -> String {
    let port = server.rsplit_once(':').map_or("443", |(_, p)| p);
    format!("{API_NAME}:{port}")
}

/// An HTTPS client that trusts only `ca_pem` and reaches `server` under
/// [`API_NAME`] (see [`named`]): the server's certificate is checked
/// whatever address the agent was given.
pub async fn https_trusting(ca_pem: &str, server: &str) -> Result<reqwest::Client, String> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let addr = tokio::net::lookup_host(server)
        .await
        .map_err(|e| format!("{server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server}: no address"))?;
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve(API_NAME, addr)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// The servers published in `kube-system/skiff-apiservers`.
pub fn published(cm: &ConfigMap) -> Vec<String> {
    let data: BTreeMap<String, String> = cm.data.clone().unwrap_or_default();
    data.into_values().map(|v| authority(&v)).collect()
}

/// Keep learning the cluster's API servers (every 30 s) while the agent runs.
pub async fn follow(client: Client, servers: Servers) {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "kube-system");
    loop {
        match api.get_opt("skiff-apiservers").await {
            Ok(Some(cm)) => servers.learn(published(&cm)),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the api servers"),
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for (url, want) in [
            ("https://127.0.0.1:6443", "127.0.0.1:6443"),
            ("https://10.0.0.1:7443/", "10.0.0.1:7443"),
            ("https://api.example", "api.example:443"),
            ("127.0.0.1:6443", "127.0.0.1:6443"),
        ] {
            assert_eq!(authority(url), want, "{url}");
        }
    }

    #[test]
    fn servers_are_learned_and_remembered() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("servers");
        let s = Servers::load("https://127.0.0.1:1", Some(file.clone()));
        s.learn(["127.0.0.1:2".to_string(), "127.0.0.1:1".to_string()]);
        assert_eq!(s.all(), vec!["127.0.0.1:1", "127.0.0.1:2"]);
        let again = Servers::load("https://127.0.0.1:3", Some(file));
        assert_eq!(
            again.all(),
            vec!["127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2"]
        );
    }

    #[tokio::test]
    async fn the_connector_moves_to_a_server_that_answers() {
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let down_addr = down.local_addr().unwrap().to_string();
        drop(down);
        let s = Servers::load(&down_addr, None);
        s.learn([up.local_addr().unwrap().to_string()]);
        s.connect().await.unwrap();
        assert_eq!(s.current(), up.local_addr().unwrap().to_string());
    }
}
