//! Outgoing `wasi:http` requests of a Wasm pod, sent from the pod's own
//! network namespace: a component calling `http://localhost:8081/` reaches its
//! pod's sidecar, and a call to a Service or another pod leaves through the
//! pod's veth like a container's would.
//!
//! **A guest's connection is never made from the agent's (the host's)
//! namespace: without a pod namespace, outgoing requests are refused.** Sockets
//! are created by one thread per pod that entered the namespace once (a socket
//! belongs to the namespace it was created in), then connected on tokio.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
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

/// The `wasi:http` hooks of one guest: outgoing requests through its pod's
/// namespace, or refused when it has none.
#[derive(Default)]
pub(crate) struct PodEgress {
    pub netns: Option<Arc<Netns>>,
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
        let netns = self.netns.clone();
        Box::new(async move {
            match netns {
                Some(ns) => send(&ns, request, options).await,
                None => Err(Error::HttpRequestDenied),
            }
        })
    }
}

/// Where a request goes: an IPv4 literal or `localhost`, and the port.
fn destination(uri: &http::Uri) -> Result<SocketAddr, Error> {
    if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        // TLS from Wasm pods is not offered yet.
        return Err(Error::HttpRequestDenied);
    }
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
    let ip: Ipv4Addr = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse().map_err(|_| Error::DnsError {
            rcode: Some("NXDOMAIN".into()),
            info_code: None,
        })?
    };
    Ok(SocketAddr::from((ip, uri.port_u16().unwrap_or(80))))
}

async fn send(
    ns: &Netns,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendResult {
    let addr = destination(request.uri())?;
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(Duration::from_secs(30));
    let stream = match tokio::time::timeout(connect_timeout, ns.connect(addr)).await {
        Err(_) => return Err(Error::ConnectionTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Error::ConnectionRefused);
        }
        Ok(Err(e)) => return Err(Error::Connect(e)),
        Ok(Ok(s)) => s,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    // The request line carries only the path, as to an origin server.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
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
            "127.0.0.1:8081".parse().unwrap()
        );
        assert_eq!(
            d("http://10.96.0.10/").unwrap(),
            "10.96.0.10:80".parse().unwrap()
        );
        assert!(matches!(
            d("https://10.0.0.1/"),
            Err(Error::HttpRequestDenied)
        ));
        assert!(matches!(
            d("http://example.com/"),
            Err(Error::DnsError { .. })
        ));
    }
}
