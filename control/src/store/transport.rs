//! Peer transport: Raft messages over TCP on the peer port.
//!
//! A connection opens with a handshake (magic, version, sender id, sender peer
//! address, cluster token), then carries length-prefixed protobuf `Message`s.
//! **Anything else on the port is logged and the connection closed; the node keeps
//! serving.** Outbound, one task per peer owns its connection and reconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const MAGIC: &[u8; 8] = b"SKIFFRP1";
const MAX_FRAME: u32 = 512 << 20;
const MAX_FIELD: u16 = 1024;
const QUEUE: usize = 4096;

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
    token: Arc<str>,
    peers: Arc<Mutex<HashMap<u64, Peer>>>,
    rt: tokio::runtime::Handle,
    sink: Sink,
}

impl Transport {
    pub fn new(
        id: u64,
        self_addr: String,
        token: &str,
        rt: tokio::runtime::Handle,
        sink: impl Fn(Inbound) + Send + Sync + 'static,
    ) -> Transport {
        Transport {
            id,
            self_addr,
            token: token.into(),
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
        for field in [self.self_addr.as_bytes(), self.token.as_bytes()] {
            h.extend_from_slice(&(field.len() as u16).to_be_bytes());
            h.extend_from_slice(field);
        }
        h
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
        let mut r = tokio::io::BufReader::new(sock);
        let bad = |reason: &str| TransportError::Handshake {
            peer: remote.clone(),
            reason: reason.to_string(),
        };
        let mut magic = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(5), r.read_exact(&mut magic))
            .await
            .map_err(|_| bad("timed out"))??;
        if &magic != MAGIC {
            return Err(bad("wrong magic"));
        }
        let from = r.read_u64().await?;
        let addr = read_field(&mut r).await.map_err(|e| bad(&e))?;
        let token = read_field(&mut r).await.map_err(|e| bad(&e))?;
        if token.as_bytes() != self.token.as_bytes() {
            return Err(bad("wrong cluster token"));
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
            let mut buf = vec![0u8; len as usize];
            r.read_exact(&mut buf).await?;
            let msg = Message::parse_from_bytes(&buf).map_err(|e| frame_err(e.to_string()))?;
            if msg.from != from {
                return Err(frame_err(format!(
                    "message from {} on the connection of {from}",
                    msg.from
                )));
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
    sink: Sink,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let mut backoff = Duration::from_millis(20);
        while !rx.is_closed() {
            let conn = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&self.addr))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))
                .and_then(|r| r);
            match conn {
                Ok(sock) => {
                    backoff = Duration::from_millis(20);
                    let _ = sock.set_nodelay(true);
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

    async fn pump(
        &self,
        sock: TcpStream,
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
