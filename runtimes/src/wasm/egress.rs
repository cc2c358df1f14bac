//! Outgoing `wasi:http` requests of a Wasm pod, sent from the pod's own
//! network namespace: a component calling `http://localhost:8081/` reaches its
//! pod's sidecar, and a call to a Service, another pod or a host outside the
//! cluster leaves through the pod's veth like a container's would. Host
//! names resolve through the node's DNS with the pod's search path;
//! `https` is rustls, trusting the platform's roots plus the cluster CA and
//! the bundles the pod names. Failures map to `wasi:http` error codes.
//!
//! **A guest's connection is never made from the agent's (the host's)
//! namespace: without a pod namespace, outgoing requests are refused.** Sockets
//! are created by one thread per pod that entered the namespace once (a socket
//! belongs to the namespace it was created in), then connected on tokio.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::http;
use hyper_util::rt::TokioIo;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use tokio::sync::oneshot;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

type SocketRequest = oneshot::Sender<std::io::Result<OwnedFd>>;

/// Makes TCP sockets inside one network namespace.
pub struct Netns {
    path: PathBuf,
    maker: Mutex<Option<mpsc::Sender<SocketRequest>>>,
}

impl Netns {
    pub fn new(path: PathBuf) -> Arc<Netns> {
        Arc::new(Netns {
            path,
            maker: Mutex::new(None),
        })
    }

    /// The socket-making thread, started on first use; it ends with `self`.
    fn maker(&self) -> std::io::Result<mpsc::Sender<SocketRequest>> {
        let mut guard = self.maker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = guard.as_ref() {
            return Ok(tx.clone());
        }
        let ns = File::open(&self.path)?;
        let (tx, rx) = mpsc::channel::<SocketRequest>();
        std::thread::Builder::new()
            .name("wasm-egress".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let entered = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| std::io::Error::other(format!("setns: {e}")));
                for reply in rx {
                    let made = match &entered {
                        Ok(()) => socket(
                            AddressFamily::Inet,
                            SockType::Stream,
                            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                            None,
                        )
                        .map_err(std::io::Error::from),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    let _ = reply.send(made);
                }
            })?;
        *guard = Some(tx.clone());
        Ok(tx)
    }

    /// Connect to `addr` from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let (reply, made) = oneshot::channel();
        self.maker()?
            .send(reply)
            .map_err(|_| std::io::Error::other("the namespace's socket thread is gone"))?;
        let fd = made
            .await
            .map_err(|_| std::io::Error::other("the namespace's socket thread is gone"))??;
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        socket.connect(addr).await
    }
}

/// Where one pod's outgoing requests go from, and how names and
/// certificates are checked.
pub struct Route {
    pub netns: Arc<Netns>,
    resolver: Option<crate::Resolver>,
    trust_pem: Vec<u8>,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Route {
    pub fn new(
        netns: PathBuf,
        resolver: Option<crate::Resolver>,
        trust_pem: Vec<u8>,
    ) -> Arc<Route> {
        Arc::new(Route {
            netns: Netns::new(netns),
            resolver,
            trust_pem,
            tls: OnceLock::new(),
        })
    }

    /// The TLS client settings, made on first use (the platform's roots are
    /// read once per process).
    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        self.tls
            .get_or_init(|| tls_config(&self.trust_pem))
            .clone()
            .map_err(|e| {
                tracing::warn!(error = %e, "outgoing https is not possible");
                Error::TlsProtocolError
            })
    }
}

/// The platform's trusted roots (the system store), read once.
fn platform_roots() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "a platform root certificate was not read");
        }
        found.certs
    })
}

fn tls_config(extra_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(platform_roots().iter().cloned());
    if ignored > 0 {
        tracing::debug!(ignored, "platform root certificates rustls cannot use");
    }
    let mut reader = extra_pem;
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| format!("a trusted certificate of the pod: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a trusted certificate of the pod: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The `wasi:http` hooks of one guest: outgoing requests through its pod's
/// namespace, or refused when it has none.
#[derive(Default)]
pub(crate) struct PodEgress {
    pub route: Option<Arc<Route>>,
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for PodEgress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        let route = self.route.clone();
        Box::new(async move {
            match route {
                Some(r) => send(&r, request, options).await,
                None => Err(Error::HttpRequestDenied),
            }
        })
    }
}

/// Where a request goes: the host (an address, `localhost` or a name),
/// the port, and whether it is `https`.
fn destination(uri: &http::Uri) -> Result<(String, u16, bool), Error> {
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") | None => false,
        Some(_) => return Err(Error::HttpProtocolError),
    };
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((
        host,
        uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        tls,
    ))
}

/// The addresses of `host`: itself when it is one, loopback for
/// `localhost`, else what the pod's resolver answers.
async fn addresses(route: &Route, host: &str) -> Result<Vec<IpAddr>, Error> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let dns_error = |rcode: &str| Error::DnsError {
        rcode: Some(rcode.to_string()),
        info_code: None,
    };
    let Some(resolver) = &route.resolver else {
        return Err(dns_error("NXDOMAIN"));
    };
    match resolver.0.lookup(host).await {
        Ok(ips) if !ips.is_empty() => Ok(ips),
        Ok(_) | Err(crate::LookupError::NotFound) => Err(dns_error("NXDOMAIN")),
        Err(crate::LookupError::Timeout) => Err(Error::DnsTimeout),
        Err(crate::LookupError::Failed(why)) => Err(dns_error(&why)),
    }
}

/// A TLS failure as `wasi:http` names it.
fn tls_error(e: &std::io::Error) -> Error {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(_)) => Error::TlsCertificateError,
        Some(rustls::Error::AlertReceived(alert)) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        _ => Error::TlsProtocolError,
    }
}

async fn connect(
    route: &Route,
    ips: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, Error> {
    let mut last = Error::ConnectionRefused;
    for ip in ips.iter().filter(|ip| ip.is_ipv4()) {
        match tokio::time::timeout(timeout, route.netns.connect(SocketAddr::new(*ip, port))).await {
            Err(_) => last = Error::ConnectionTimeout,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused;
            }
            Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::ENETUNREACH) => {
                last = Error::DestinationIpUnroutable;
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Ok(Ok(s)) => return Ok(s),
        }
    }
    Err(last)
}

async fn send(
    route: &Route,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendResult {
    let (host, port, tls) = destination(request.uri())?;
    let ips = addresses(route, &host).await?;
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(Duration::from_secs(30));
    let stream = connect(route, &ips, port, connect_timeout).await?;
    // The request line carries only the path, as to an origin server.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    if !tls {
        return over(stream, request).await;
    }
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| Error::DnsError {
            rcode: Some("invalid dns name".into()),
            info_code: None,
        })?;
    let connector = tokio_rustls::TlsConnector::from(route.tls()?);
    let stream = tokio::time::timeout(connect_timeout, connector.connect(name, stream))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(|e| tls_error(&e))?;
    over(stream, request).await
}

/// Send `request` over `io` (HTTP/1.1).
async fn over<IO>(io: IO, request: http::Request<WasiBody>) -> SendResult
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(conn);
    let response = sender.send_request(request).await?;
    let io = async move {
        match driver.await {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::ConnectionTerminated),
        }
    };
    Ok((
        response.map(|b| b.map_err(Error::from).boxed_unsync()),
        Box::new(io),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = |u: &str| destination(&u.parse().unwrap());
        assert_eq!(
            d("http://localhost:8081/x").unwrap(),
            ("localhost".into(), 8081, false)
        );
        assert_eq!(
            d("http://10.96.0.10/").unwrap(),
            ("10.96.0.10".into(), 80, false)
        );
        assert_eq!(
            d("https://svc.test.example/").unwrap(),
            ("svc.test.example".into(), 443, true)
        );
        assert!(matches!(d("ftp://x/"), Err(Error::HttpProtocolError)));
    }

    struct Fixed;
    impl crate::Resolve for Fixed {
        fn lookup<'a>(
            &'a self,
            host: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Vec<IpAddr>, crate::LookupError>> {
            Box::pin(async move {
                match host {
                    "svc.test.example" => Ok(vec!["10.85.1.2".parse().unwrap()]),
                    "slow.test.example" => Err(crate::LookupError::Timeout),
                    _ => Err(crate::LookupError::NotFound),
                }
            })
        }
    }

    #[tokio::test]
    async fn names_resolve_through_the_pods_resolver_and_fail_as_wasi_http_says() {
        let with = Route::new(
            "/nonexistent".into(),
            Some(crate::Resolver(Arc::new(Fixed))),
            Vec::new(),
        );
        assert_eq!(
            addresses(&with, "svc.test.example").await.unwrap(),
            vec!["10.85.1.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            addresses(&with, "10.0.0.1").await.unwrap(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(
            matches!(addresses(&with, "nope.example").await, Err(Error::DnsError { rcode: Some(r), .. }) if r == "NXDOMAIN")
        );
        assert!(matches!(
            addresses(&with, "slow.test.example").await,
            Err(Error::DnsTimeout)
        ));
        let without = Route::new("/nonexistent".into(), None, Vec::new());
        assert!(matches!(
            addresses(&without, "svc.test.example").await,
            Err(Error::DnsError { .. })
        ));
    }

    #[test]
    fn a_bad_pem_bundle_is_an_error_and_a_good_one_is_trusted() {
        assert!(tls_config(b"").is_ok());
        let bad = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(tls_config(bad).is_err());
    }
}
