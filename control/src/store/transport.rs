//! Peer transport: Raft messages over mutual TLS on the peer port.
//!
//! A connection is TLS in both directions with certificates of the cluster CA
//! (`pki`): the dialer checks that the listener's certificate names the member
//! it dials (`<id>.peer.skiff`), the listener that the dialer's names the id
//! its handshake (magic, sender id, sender peer address) claims. Then come
//! length-prefixed protobuf `Message`s, each from that id.
//! **Anything else on the port — plain TCP, another CA, another member's
//! certificate, a frame over the bound — is logged and the connection closed;
//! the node keeps serving.** At most `INBOUND` messages wait for the Raft loop;
//! more are dropped (Raft resends). Outbound, one task per peer owns its
//! connection and reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const MAGIC: &[u8; 8] = b"SKIFFRP2";
const MAX_FRAME: u32 = 512 << 20;
const MAX_FIELD: u16 = 1024;
const QUEUE: usize = 4096;
/// Messages read from peers and not yet taken by the Raft loop, at most.
const INBOUND: usize = 8192;
const HANDSHAKE: Duration = Duration::from_secs(5);

/// The peer port's TLS configurations, shared by the listener and the
/// dialers: unset until this server has its peer certificate (then every
/// connection is refused and nothing is sent).
#[derive(Clone, Default)]
pub struct PeerTls(Arc<RwLock<Option<TlsPair>>>);

type TlsPair = (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>);

impl PeerTls {
    /// Use these configurations from the next connection on (both must
    /// present this member's certificate and require one of the CA).
    pub fn set(&self, server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) {
        *self.0.write().unwrap() = Some((server, client));
    }

    /// Present `slot`'s peer certificate (renewed in place) and trust only
    /// the CA of `ca_pem`, from the next connection on.
    pub fn use_cert(
        &self,
        ca_pem: &str,
        slot: &crate::pki::CertSlot,
    ) -> Result<(), crate::pki::PkiError> {
        let (server, client) = crate::pki::mutual_tls(ca_pem, slot)?;
        self.set(server, client);
        Ok(())
    }

    /// Ready-made for member `id` of the cluster of `ca` (tests, benchmarks).
    pub fn for_member(
        ca: &crate::pki::ClusterCa,
        id: u64,
    ) -> Result<PeerTls, crate::pki::PkiError> {
        let tls = PeerTls::default();
        let issued = ca.issue(&crate::pki::peer_leaf(id, crate::pki::LEAF_LIFETIME))?;
        tls.use_cert(&ca.cert_pem, &crate::pki::CertSlot::new(&issued)?)?;
        Ok(tls)
    }

    pub fn is_set(&self) -> bool {
        self.0.read().unwrap().is_some()
    }

    fn get(&self) -> Option<TlsPair> {
        self.0.read().unwrap().clone()
    }
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerTls(set: {})", self.is_set())
    }
}

/// What the transport tells the Raft loop.
#[derive(Debug)]
pub enum Inbound {
    Message(Message),
    Unreachable(u64),
    Snapshot {
        to: u64,
        ok: bool,
    },
    /// A peer announced its address in a handshake.
    PeerAddr(u64, String),
}

/// Errors of a single peer connection.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad handshake from {peer}: {reason}")]
    Handshake { peer: String, reason: String },
    #[error("bad frame from {peer}: {reason}")]
    Frame { peer: String, reason: String },
}

type Sink = Arc<dyn Fn(Inbound) + Send + Sync>;

struct Peer {
    addr: String,
    tx: mpsc::Sender<Message>,
}

/// The sending half plus the listener, shared by the Raft loop and the I/O tasks.
#[derive(Clone)]
pub struct Transport {
    id: u64,
    self_addr: String,
    tls: PeerTls,
    /// Messages handed to the sink and not yet [`Transport::delivered`].
    pending: Arc<AtomicUsize>,
    peers: Arc<Mutex<HashMap<u64, Peer>>>,
    rt: tokio::runtime::Handle,
    sink: Sink,
}

impl Transport {
    pub fn new(
        id: u64,
        self_addr: String,
        tls: PeerTls,
        rt: tokio::runtime::Handle,
        sink: impl Fn(Inbound) + Send + Sync + 'static,
    ) -> Transport {
        Transport {
            id,
            self_addr,
            tls,
            pending: Arc::default(),
            peers: Arc::default(),
            rt,
            sink: Arc::new(sink),
        }
    }

    /// Learn, change or forget a peer's address.
    pub fn set_peer(&self, id: u64, addr: Option<String>) {
        if id == self.id {
            return;
        }
        let mut peers = self.peers.lock().unwrap();
        match addr {
            None => {
                peers.remove(&id);
            }
            Some(addr) => {
                if peers.get(&id).is_some_and(|p| p.addr == addr) {
                    return;
                }
                let (tx, rx) = mpsc::channel(QUEUE);
                let task = Writer {
                    to: id,
                    addr: addr.clone(),
                    hello: self.hello(),
                    tls: self.tls.clone(),
                    sink: self.sink.clone(),
                };
                self.rt.spawn(task.run(rx));
                peers.insert(id, Peer { addr, tx });
            }
        }
    }

    fn hello(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&self.id.to_be_bytes());
        let field = self.self_addr.as_bytes();
        h.extend_from_slice(&(field.len() as u16).to_be_bytes());
        h.extend_from_slice(field);
        h
    }

    /// The Raft loop took a message the sink was given.
    pub fn delivered(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }

    /// Queue messages for their peers; a full queue or unknown peer reports unreachable.
    pub fn send(&self, msgs: Vec<Message>) {
        let peers = self.peers.lock().unwrap();
        for m in msgs {
            let to = m.to;
            let snap = m.get_msg_type() == MessageType::MsgSnapshot;
            let queued = peers.get(&to).map(|p| p.tx.try_send(m).is_ok());
            if queued != Some(true) {
                tracing::debug!(to, "peer queue full or peer unknown");
                (self.sink)(Inbound::Unreachable(to));
                if snap {
                    (self.sink)(Inbound::Snapshot { to, ok: false });
                }
            }
        }
    }

    /// Accept peer connections until the listener fails.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (sock, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.read_conn(sock, remote.to_string()).await {
                    tracing::warn!(%remote, error = %e, "rejected peer connection");
                }
            });
        }
    }

    async fn read_conn(&self, sock: TcpStream, remote: String) -> Result<(), TransportError> {
        let _ = sock.set_nodelay(true);
        let bad = |reason: String| TransportError::Handshake {
            peer: remote.clone(),
            reason,
        };
        let Some((server, _)) = self.tls.get() else {
            return Err(bad("this server has no peer certificate yet".into()));
        };
        let tls = tokio::time::timeout(
            HANDSHAKE,
            tokio_rustls::TlsAcceptor::from(server).accept(sock),
        )
        .await
        .map_err(|_| bad("tls handshake timed out".into()))?
        .map_err(|e| bad(format!("tls: {e}")))?;
        let cert_id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| crate::pki::CertInfo::from_der(der).ok())
            .and_then(|info| info.peer_id())
            .ok_or_else(|| bad("the client certificate names no member".into()))?;
        let mut r = tokio::io::BufReader::new(tls);
        let mut magic = [0u8; 8];
        tokio::time::timeout(HANDSHAKE, r.read_exact(&mut magic))
            .await
            .map_err(|_| bad("timed out".into()))??;
        if &magic != MAGIC {
            return Err(bad("wrong magic".into()));
        }
        let from = r.read_u64().await?;
        let addr = read_field(&mut r).await.map_err(bad)?;
        if from != cert_id {
            return Err(bad(format!(
                "member {from:x} presented the certificate of member {cert_id:x}"
            )));
        }
        (self.sink)(Inbound::PeerAddr(from, addr));
        loop {
            let len = match r.read_u32().await {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let frame_err = |reason: String| TransportError::Frame {
                peer: remote.clone(),
                reason,
            };
            if len > MAX_FRAME {
                return Err(frame_err(format!("frame of {len} bytes is too large")));
            }
            // Grow with what arrives, not with what the length claims.
            let mut buf = Vec::with_capacity((len as usize).min(64 << 10));
            (&mut r).take(u64::from(len)).read_to_end(&mut buf).await?;
            if buf.len() != len as usize {
                return Err(frame_err("connection closed inside a frame".into()));
            }
            let msg = Message::parse_from_bytes(&buf).map_err(|e| frame_err(e.to_string()))?;
            if msg.from != from {
                return Err(frame_err(format!(
                    "message from {} on the connection of {from}",
                    msg.from
                )));
            }
            if self.pending.fetch_add(1, Ordering::Relaxed) >= INBOUND {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(from, "inbound peer queue full: dropped a message");
                continue;
            }
            (self.sink)(Inbound::Message(msg));
        }
    }
}

async fn read_field<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<String, String> {
    let len = r.read_u16().await.map_err(|e| e.to_string())?;
    if len > MAX_FIELD {
        return Err(format!("field of {len} bytes"));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    String::from_utf8(buf).map_err(|_| "field is not utf-8".to_string())
}

struct Writer {
    to: u64,
    addr: String,
    hello: Vec<u8>,
    tls: PeerTls,
    sink: Sink,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let mut backoff = Duration::from_millis(20);
        while !rx.is_closed() {
            match self.connect().await {
                Ok(sock) => {
                    backoff = Duration::from_millis(20);
                    if let Err(e) = self.pump(sock, &mut rx).await {
                        tracing::debug!(to = self.to, error = %e, "peer connection lost");
                        (self.sink)(Inbound::Unreachable(self.to));
                    }
                }
                Err(e) => {
                    tracing::debug!(to = self.to, addr = %self.addr, error = %e, "peer connect failed");
                    // Drop what queued up while the peer was away; Raft resends.
                    while let Ok(m) = rx.try_recv() {
                        if m.get_msg_type() == MessageType::MsgSnapshot {
                            (self.sink)(Inbound::Snapshot {
                                to: self.to,
                                ok: false,
                            });
                        }
                    }
                    (self.sink)(Inbound::Unreachable(self.to));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// A TLS connection to the peer, which must show the certificate of
    /// the member this writer sends to.
    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        let (_, client) = self
            .tls
            .get()
            .ok_or_else(|| std::io::Error::other("this server has no peer certificate yet"))?;
        let name = rustls::pki_types::ServerName::try_from(crate::pki::peer_name(self.to))
            .map_err(std::io::Error::other)?;
        let dial = async {
            let sock = TcpStream::connect(&self.addr).await?;
            let _ = sock.set_nodelay(true);
            tokio_rustls::TlsConnector::from(client)
                .connect(name, sock)
                .await
        };
        tokio::time::timeout(HANDSHAKE, dial)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    async fn pump(
        &self,
        sock: tokio_rustls::client::TlsStream<TcpStream>,
        rx: &mut mpsc::Receiver<Message>,
    ) -> Result<(), std::io::Error> {
        let mut w = BufWriter::new(sock);
        w.write_all(&self.hello).await?;
        w.flush().await?;
        while let Some(m) = rx.recv().await {
            let mut batch = vec![m];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 256 {
                    break;
                }
            }
            let mut snaps = Vec::new();
            for m in &batch {
                let bytes = m.write_to_bytes().map_err(std::io::Error::other)?;
                w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
                w.write_all(&bytes).await?;
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    snaps.push(m.to);
                }
            }
            let res = w.flush().await;
            for to in snaps {
                (self.sink)(Inbound::Snapshot {
                    to,
                    ok: res.is_ok(),
                });
            }
            res?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertSlot, ClusterCa, LEAF_LIFETIME, peer_leaf};
    use tokio::sync::mpsc::UnboundedReceiver;

    /// A transport for member `id` listening on loopback; what it hears.
    async fn member(ca: &ClusterCa, id: u64) -> (Transport, String, UnboundedReceiver<Inbound>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let t = Transport::new(
            id,
            addr.clone(),
            PeerTls::for_member(ca, id).unwrap(),
            tokio::runtime::Handle::current(),
            move |m| {
                let _ = tx.send(m);
            },
        );
        tokio::spawn(t.clone().serve(listener));
        (t, addr, rx)
    }

    fn heartbeat(from: u64, to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = from;
        m.to = to;
        m.term = 1;
        m
    }

    /// The next message that arrives, if one does within two seconds.
    async fn next_message(rx: &mut UnboundedReceiver<Inbound>) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Inbound::Message(m))) => return Some(m),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Whether the listener at `addr` closes a connection that sends `bytes`.
    async fn closes_after(addr: &str, bytes: &[u8]) -> bool {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let _ = sock.write_all(bytes).await;
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(8), sock.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// A TLS client of `ca` presenting `slot`, sending the handshake of
    /// member `claim`, then a heartbeat from it.
    async fn dial_as(ca: &ClusterCa, slot: &CertSlot, addr: &str, to: u64, claim: u64) {
        let (_, client) = crate::pki::mutual_tls(&ca.cert_pem, slot).unwrap();
        let name = rustls::pki_types::ServerName::try_from(crate::pki::peer_name(to)).unwrap();
        let sock = TcpStream::connect(addr).await.unwrap();
        let Ok(mut tls) = tokio_rustls::TlsConnector::from(client)
            .connect(name, sock)
            .await
        else {
            return;
        };
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&claim.to_be_bytes());
        hello.extend_from_slice(&2u16.to_be_bytes());
        hello.extend_from_slice(b"x:");
        let bytes = heartbeat(claim, to).write_to_bytes().unwrap();
        hello.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        hello.extend_from_slice(&bytes);
        let _ = tls.write_all(&hello).await;
        let _ = tls.flush().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Members of one CA exchange messages; plain TCP, the old plain
    /// handshake, a certificate of another CA, and a member's certificate
    /// used to claim another member's id are all refused, and the listener
    /// keeps serving.
    #[tokio::test]
    async fn only_a_member_with_its_own_certificate_is_heard() {
        let ca = ClusterCa::generate().unwrap();
        let (a, _a_addr, _a_rx) = member(&ca, 1).await;
        let (_b, b_addr, mut b_rx) = member(&ca, 2).await;
        a.set_peer(2, Some(b_addr.clone()));
        a.send(vec![heartbeat(1, 2)]);
        let got = next_message(&mut b_rx)
            .await
            .expect("a member's message arrives");
        assert_eq!((got.from, got.to), (1, 2));

        let mut plain = b"SKIFFRP1".to_vec();
        plain.extend_from_slice(&1u64.to_be_bytes());
        assert!(
            closes_after(&b_addr, &plain).await,
            "plain handshake closed"
        );
        assert!(closes_after(&b_addr, b"GET / HTTP/1.1\r\n\r\n").await);

        let other = ClusterCa::generate().unwrap();
        let stranger = CertSlot::new(&other.issue(&peer_leaf(1, LEAF_LIFETIME)).unwrap()).unwrap();
        dial_as(&ca, &stranger, &b_addr, 2, 1).await;
        let three = CertSlot::new(&ca.issue(&peer_leaf(3, LEAF_LIFETIME)).unwrap()).unwrap();
        dial_as(&ca, &three, &b_addr, 2, 1).await;
        assert!(
            next_message(&mut b_rx).await.is_none(),
            "nothing from impostors"
        );

        // Member 3 with its own certificate is heard (membership is the
        // Raft loop's business, not the transport's).
        dial_as(&ca, &three, &b_addr, 2, 3).await;
        let got = next_message(&mut b_rx).await.expect("member 3 heard");
        assert_eq!(got.from, 3);
        a.send(vec![heartbeat(1, 2)]);
        assert!(next_message(&mut b_rx).await.is_some(), "still serving");
    }
}
