//! The agent API's TLS: a serving certificate of the cluster CA, asked for
//! with a certificate signing request (the key never leaves the node) and
//! asked for again when the server says, and mutual TLS that admits only
//! callers with a client certificate of the same CA (the API servers).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tower::ServiceExt;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A serving certificate as the server issued it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    pub cert_chain: String,
    pub ca_cert: String,
    pub renew_after_seconds: u64,
    #[serde(skip)]
    pub key_pem: String,
}

/// Ask `base` (`https://host:port`, trusted by `http`) for a serving
/// certificate of node `node` at `ips`.
pub async fn request(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    node: &str,
    ips: &[std::net::IpAddr],
) -> Result<Issued, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| e.to_string())?;
    let mut query: Vec<(&str, String)> = vec![("node", node.to_string())];
    query.extend(ips.iter().map(|ip| ("ip", ip.to_string())));
    let resp = http
        .post(format!("{base}/skiff/v0/agent/serving-cert"))
        .query(&query)
        .bearer_auth(token)
        .body(csr)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!(
            "serving certificate: {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        ));
    }
    let mut issued: Issued = resp.json().await.map_err(|e| e.to_string())?;
    issued.key_pem = key.serialize_pem();
    Ok(issued)
}

fn certified(issued: &Issued) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut issued.cert_chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut issued.key_pem.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or("no private key")?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(certs, key)))
}

/// The serving certificate in use; replaced when renewed.
#[derive(Debug, Clone)]
pub struct Serving(Arc<RwLock<Arc<CertifiedKey>>>);

impl Serving {
    pub fn new(issued: &Issued) -> Result<Serving, String> {
        Ok(Serving(Arc::new(RwLock::new(certified(issued)?))))
    }

    pub fn replace(&self, issued: &Issued) -> Result<(), String> {
        *self.0.write().unwrap() = certified(issued)?;
        Ok(())
    }
}

impl ResolvesServerCert for Serving {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap().clone())
    }
}

/// Mutual TLS: `serving`'s certificate, and callers must present a client
/// certificate of the CA of `ca_pem`.
pub fn server_config(ca_pem: &str, serving: &Serving) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| e.to_string())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(serving.clone()));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serve `app` over TLS on `listener` until the future is dropped; a
/// client that does not complete the handshake is dropped.
pub async fn serve(listener: tokio::net::TcpListener, cfg: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "agent api accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "agent api: tls handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%remote, error = %e, "agent api connection ended");
            }
        });
    }
}
