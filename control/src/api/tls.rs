//! The HTTPS listener (rustls with the ring provider, HTTP/1.1 and HTTP/2
//! through hyper), with the serving certificate from a [`CertSlot`] that is
//! renewed in place and optional client certificates of the cluster CA.
//!
//! **Every server signs its own serving certificate with the cluster CA
//! (`pki`), so one CA bundle in a kubeconfig trusts every server.**

use std::sync::Arc;

use axum::Router;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::pki::{self, CertSlot, PkiError};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A user named by a client certificate of the cluster CA (CN = user,
/// O = groups), put in the request's extensions by [`serve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertUser {
    pub name: String,
    pub groups: Vec<String>,
}

/// Install the ring crypto provider once per process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The API's rustls configuration: `slot`'s certificate (renewed in place),
/// h2 and http/1.1, and client certificates of the CA of `ca_pem` accepted
/// but not required (bearer tokens are the other way in).
pub fn server_config(slot: &CertSlot, ca_pem: &str) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        pki::roots(ca_pem)?,
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| PkiError::Parse(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(slot.clone()));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The user a verified client certificate names, if the client sent one.
fn client_cert_user(conn: &rustls::ServerConnection) -> Option<ClientCertUser> {
    let leaf = conn.peer_certificates()?.first()?;
    let info = pki::CertInfo::from_der(leaf).ok()?;
    Some(ClientCertUser {
        name: info.common_name.filter(|n| !n.is_empty())?,
        groups: info.organizations,
    })
}

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an HTTP/1 client has to send a request's headers, counted from
/// when the connection is ready for the next request (so it is also how long
/// an idle keep-alive connection stays open).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an HTTP/2 connection is pinged, and how long the answer may take
/// before the connection is dropped (a vanished client does not hold it).
const H2_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(20));

/// Listen on `addr` with a deep accept queue (the kernel caps it at
/// `net.core.somaxconn`): a burst of connections waits there instead of
/// having its SYNs dropped and retried a second later.
pub async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let sa = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    })?;
    let socket = if sa.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(sa)?;
    socket.listen(4096)
}

/// Raise this process's soft limit on open files to its hard limit, as Go's
/// runtime does for kube-apiserver: every connection is a descriptor.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
    }
}

/// The most connections served at once: the process's file limit, less a
/// reserve for the store, the peers and the node's own use.
pub fn connection_cap() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(512)
        .clamp(64, 1 << 20)
}

/// Serve `app` over TLS on `listener` until the future is dropped, with at
/// most `cap` connections at once: beyond it a new connection is closed at
/// once (its descriptor is not kept), so an idle flood cannot take the
/// descriptors an admin's kubectl needs for long, and the handshake timeout
/// sheds the flood itself.
pub async fn serve(listener: TcpListener, cfg: Arc<rustls::ServerConfig>, app: Router, cap: usize) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "api accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, cap, "api connection refused: too many connections");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let cert_user = client_cert_user(tls.get_ref().1);
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    // The audit log records the client's address.
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(remote));
                    if let Some(u) = &cert_user {
                        req.extensions_mut().insert(u.clone());
                    }
                    let call = app.clone().oneshot(req);
                    async move {
                        use axum::response::IntoResponse;
                        use futures::FutureExt;
                        match std::panic::AssertUnwindSafe(call).catch_unwind().await {
                            Ok(r) => r,
                            Err(_) => {
                                tracing::error!(%remote, "an API handler panicked");
                                Ok(crate::model::status::ApiError::internal(
                                    "the server could not complete the request (a handler failed)",
                                )
                                .into_response())
                            }
                        }
                    }
                });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(H2_KEEPALIVE.0)
                .keep_alive_timeout(H2_KEEPALIVE.1);
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
    use crate::pki::slot::tests::handshake;
    use crate::pki::{ClusterCa, LEAF_LIFETIME, Leaf, Usage, serving_hosts, serving_leaf};

    /// A client that trusts only the cluster CA completes a handshake with
    /// the serving certificate (in memory), for the API's address and name,
    /// with or without a client certificate of the CA; a client of another
    /// CA refuses it; the user a client certificate names is read back.
    #[test]
    fn ca_signs_a_serving_cert_that_rustls_accepts() {
        let ca = ClusterCa::generate().unwrap();
        let issued = ca
            .issue(&serving_leaf(
                serving_hosts("127.0.0.1:6443", &[]),
                LEAF_LIFETIME,
            ))
            .unwrap();
        assert!(issued.chain_pem.matches("BEGIN CERTIFICATE").count() == 2);
        let server = server_config(&CertSlot::new(&issued).unwrap(), &ca.cert_pem).unwrap();
        let client = Arc::new(pki::client_config(&ca.cert_pem, None).unwrap());
        for name in ["127.0.0.1", "kubernetes.default.svc.cluster.local"] {
            handshake(client.clone(), name, server.clone()).unwrap();
        }
        let jane = ca
            .issue(&Leaf {
                common_name: "jane".into(),
                organization: Some("dev".into()),
                hosts: vec![],
                usage: Usage::Client,
                lifetime: LEAF_LIFETIME,
            })
            .unwrap();
        let with_cert = Arc::new(
            pki::client_config(&ca.cert_pem, Some(&CertSlot::new(&jane).unwrap())).unwrap(),
        );
        let conn = handshake(with_cert, "127.0.0.1", server.clone()).unwrap();
        assert_eq!(
            client_cert_user(&conn),
            Some(ClientCertUser {
                name: "jane".into(),
                groups: vec!["dev".into()]
            })
        );
        let other = ClusterCa::generate().unwrap();
        let refused = handshake(
            Arc::new(pki::client_config(&other.cert_pem, None).unwrap()),
            "127.0.0.1",
            server.clone(),
        );
        assert!(
            matches!(refused, Err(rustls::Error::InvalidCertificate(_))),
            "{refused:?}"
        );
        // A client certificate of another CA is refused, not ignored.
        let mallory = other
            .issue(&Leaf {
                common_name: "system:admin".into(),
                organization: Some("system:masters".into()),
                hosts: vec![],
                usage: Usage::Client,
                lifetime: LEAF_LIFETIME,
            })
            .unwrap();
        let forged = Arc::new(
            pki::client_config(&ca.cert_pem, Some(&CertSlot::new(&mallory).unwrap())).unwrap(),
        );
        assert!(handshake(forged, "127.0.0.1", server).is_err());
    }
}
