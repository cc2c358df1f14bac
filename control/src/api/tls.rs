//! The cluster CA, per-server serving certificates (rcgen) and the HTTPS listener
//! (rustls with the ring provider, HTTP/1.1 and HTTP/2 through hyper).
//!
//! **The CA is created once per cluster and kept in the replicated store; every
//! server signs its own serving certificate with it, so one CA bundle in a
//! kubeconfig trusts every server.**

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Errors of certificate handling and the TLS listener.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generate {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("read pem: {0}")]
    Pem(String),
}

/// The cluster CA as stored in the replicated store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

/// The CA's parameters; the same every time, so a server can rebuild the issuer
/// from the stored key.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("ca params"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "skiff-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

impl ClusterCa {
    /// A new self-signed cluster CA.
    pub fn generate() -> Result<ClusterCa, TlsError> {
        let key = KeyPair::generate().map_err(rcgen_err("ca key"))?;
        let cert = ca_params()?
            .self_signed(&key)
            .map_err(rcgen_err("ca certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A serving certificate for `hosts` (DNS names or IPs) signed by this CA.
    /// Returns (certificate chain PEM, key PEM).
    pub fn serving_cert(&self, hosts: &[String]) -> Result<(String, String), TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(rcgen_err("parse ca key"))?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let key = KeyPair::generate().map_err(rcgen_err("serving key"))?;
        let mut params =
            CertificateParams::new(hosts.to_vec()).map_err(rcgen_err("serving params"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "skiff-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(rcgen_err("serving certificate"))?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }
}

/// The names a server's certificate covers: localhost, loopback, the in-cluster
/// names of the API (`kubernetes`, ..., `kubernetes.default.svc.cluster.local`,
/// as Kubernetes has them: agents may reach any server by such a fixed name),
/// its API host unless unspecified, and `extra` (`--tls-san`, the node IP).
pub fn serving_hosts(api_addr: &str, extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    let mut add = |h: String| {
        if !h.is_empty() && !hosts.contains(&h) {
            hosts.push(h);
        }
    };
    if let Ok(sa) = api_addr.parse::<std::net::SocketAddr>() {
        let ip: IpAddr = sa.ip();
        if !ip.is_unspecified() {
            add(ip.to_string());
        }
    }
    for h in extra {
        // An IP in any spelling ("::0001") is stored in its canonical form.
        let h = h.trim();
        add(h
            .parse::<IpAddr>()
            .map_or_else(|_| h.to_string(), |ip| ip.to_string()));
    }
    hosts
}

/// Install the ring crypto provider once per process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A rustls server configuration for the given PEM chain and key (h2 and http/1.1).
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let certs: Vec<_> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| TlsError::Pem(e.to_string()))?
        .ok_or_else(|| TlsError::Pem("no private key".into()))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serve `app` over TLS on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, cfg: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "api accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    // The audit log records the client's address.
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(remote));
                    app.clone().oneshot(req)
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%remote, error = %e, "api connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rustls client that trusts only the CA of `ca_pem`.
    fn client_trusting(ca_pem: &str) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    /// Run a TLS handshake in memory between `client` (for `name`) and
    /// `server`, then send "ping" through it; the error of either side.
    fn handshake(
        client: Arc<rustls::ClientConfig>,
        name: &str,
        server: Arc<rustls::ServerConfig>,
    ) -> Result<(), rustls::Error> {
        use std::io::{Read, Write};
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(client, name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        c.writer().write_all(b"ping").unwrap();
        for _ in 0..20 {
            if !(c.is_handshaking() || s.is_handshaking() || c.wants_write()) {
                break;
            }
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
        }
        let mut got = [0u8; 4];
        s.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        Ok(())
    }

    /// A client that trusts only the cluster CA completes a handshake with
    /// the serving certificate (in memory), for the API's address and name;
    /// a client of another CA refuses it.
    #[test]
    fn ca_signs_a_serving_cert_that_rustls_accepts() {
        let ca = ClusterCa::generate().unwrap();
        let (chain, key) = ca
            .serving_cert(&serving_hosts("127.0.0.1:6443", &[]))
            .unwrap();
        assert!(chain.matches("BEGIN CERTIFICATE").count() == 2);
        let server = server_config(&chain, &key).unwrap();
        for name in ["127.0.0.1", "kubernetes.default.svc.cluster.local"] {
            handshake(client_trusting(&ca.cert_pem), name, server.clone()).unwrap();
        }
        let other = ClusterCa::generate().unwrap();
        let refused = handshake(client_trusting(&other.cert_pem), "127.0.0.1", server);
        assert!(
            matches!(refused, Err(rustls::Error::InvalidCertificate(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn serving_hosts_cover_fixed_names_the_api_host_and_extras() {
        let h = serving_hosts(
            "0.0.0.0:6443",
            &["edge.example".into(), "10.0.0.5".into(), "localhost".into()],
        );
        for want in [
            "localhost",
            "127.0.0.1",
            "kubernetes.default.svc.cluster.local",
            "edge.example",
            "10.0.0.5",
        ] {
            assert!(h.contains(&want.to_string()), "{want} in {h:?}");
        }
        assert!(!h.contains(&"0.0.0.0".to_string()), "{h:?}");
        assert_eq!(h.iter().filter(|x| *x == "localhost").count(), 1);
        let h = serving_hosts("192.168.1.4:6443", &["::0001".into()]);
        assert!(h.contains(&"192.168.1.4".to_string()), "{h:?}");
        assert_eq!(h.iter().filter(|x| *x == "::1").count(), 1, "{h:?}");
    }
}
