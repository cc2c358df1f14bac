//! The Raft loop thread and the async [`Store`] handle.
//!
//! **One thread owns the replica: it ticks, steps peer messages, takes client
//! requests in batches (many proposals per `Ready`) and runs `on_ready`.** Other
//! tasks talk to it only through a channel.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::DataDir;
use super::command::{KeyValue, Op, Txn, TxnOutcome};
use super::error::StoreError;
use super::replica::{Done, Replica, ReplicaConfig, ReplicaStatus};
use super::state::{SnapshotData, StateMachine};
use super::transport::{Inbound, PeerTls, Transport};
use super::watch::{Watch, WatchHub};

/// How to start a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Address peers use to reach this node (also where it listens).
    pub peer_addr: String,
    /// The peer port's mutual TLS (set once this server has its peer
    /// certificate; until then peers are refused).
    pub peer_tls: PeerTls,
    /// Start a new one-voter cluster if the data dir is blank.
    pub bootstrap: bool,
    pub tick: Duration,
    pub replica: ReplicaConfig,
}

enum Input {
    Txn(Txn, Done<TxnOutcome>),
    Read(Done<u64>),
    AddVoter(u64, String, Done<()>),
    Dump(Done<SnapshotData>),
    Net(Inbound),
    Shutdown,
}

/// Handle to a running store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: std_mpsc::Sender<Input>,
    sm: StateMachine,
    hub: Arc<WatchHub>,
    status: Arc<RwLock<ReplicaStatus>>,
    stopped: watch::Receiver<Option<String>>,
    listener: tokio::task::AbortHandle,
    space: super::space::Space,
}

impl Store {
    /// Open the data dir, bind the peer port and start the Raft loop.
    /// `node_id` is used only when the data dir has none yet.
    pub async fn start(cfg: StoreConfig, node_id: u64) -> Result<Store, StoreError> {
        let dir = DataDir::open(&cfg.data_dir)?;
        let storage = dir.storage()?;
        let id = match storage.node_id()? {
            Some(id) => id,
            None => {
                storage.set_node_id(node_id)?;
                node_id
            }
        };
        let bootstrap = cfg.bootstrap.then_some(cfg.peer_addr.as_str());
        let mut replica = Replica::new(storage, id, bootstrap, cfg.replica.clone())?;
        let listener = tokio::net::TcpListener::bind(&cfg.peer_addr)
            .await
            .map_err(|e| {
                StoreError::Invalid(format!("bind peer address {}: {e}", cfg.peer_addr))
            })?;
        let (tx, rx) = std_mpsc::channel();
        let net_tx = tx.clone();
        let transport = Transport::new(
            id,
            cfg.peer_addr.clone(),
            cfg.peer_tls.clone(),
            tokio::runtime::Handle::current(),
            move |m| {
                let _ = net_tx.send(Input::Net(m));
            },
        );
        let listener = tokio::spawn(transport.clone().serve(listener)).abort_handle();
        for (pid, addr) in replica.take_peer_updates() {
            transport.set_peer(pid, addr);
        }
        let status = Arc::new(RwLock::new(replica.status()));
        let (stop_tx, stopped) = watch::channel(None);
        let store = Store {
            tx,
            sm: replica.state_machine(),
            hub: replica.hub(),
            status: status.clone(),
            stopped,
            listener,
            space: super::space::Space::of(&cfg.data_dir),
        };
        let tick = cfg.tick;
        std::thread::Builder::new()
            .name(format!("raft-{id:x}"))
            .spawn(move || {
                let err = run(&mut replica, rx, &transport, &status, tick);
                // Release the data dir (sled's lock on it) before anyone hears
                // that the loop stopped, so a new store may open it at once.
                drop(replica);
                match err {
                    StoreError::Stopped => tracing::info!("raft loop stopped"),
                    ref e => tracing::error!(error = %e, "raft loop failed"),
                }
                let _ = stop_tx.send(Some(err.to_string()));
            })
            .map_err(|e| StoreError::Invalid(format!("spawn raft thread: {e}")))?;
        Ok(store)
    }

    pub fn id(&self) -> u64 {
        self.status.read().unwrap().id
    }

    /// Stop the Raft loop and the peer listener (the data dir stays as it is).
    pub fn shutdown(&self) {
        let _ = self.tx.send(Input::Shutdown);
        self.listener.abort();
    }

    pub fn status(&self) -> ReplicaStatus {
        self.status.read().unwrap().clone()
    }

    /// Resolves with the reason once the Raft loop has stopped (a fatal storage
    /// error, or [`Store::shutdown`]) and let go of the data dir.
    pub async fn stopped(&self) -> String {
        let mut rx = self.stopped.clone();
        loop {
            if let Some(reason) = rx.borrow().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return "store dropped".into();
            }
        }
    }

    async fn call<T: Send + 'static>(
        &self,
        make: impl FnOnce(Done<T>) -> Input,
    ) -> Result<T, StoreError> {
        let (otx, orx) = oneshot::channel();
        let done: Done<T> = Box::new(move |r| {
            let _ = otx.send(r);
        });
        self.tx.send(make(done)).map_err(|_| StoreError::Stopped)?;
        orx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Run a transaction through Raft; resolves once it applied on this node.
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.space.check()?;
        self.call(|d| Input::Txn(txn, d)).await
    }

    /// Shorthand for a one-op transaction; returns the new revision.
    pub async fn write(&self, op: Op) -> Result<u64, StoreError> {
        Ok(self.txn(Txn::single(op)).await?.revision)
    }

    /// Wait until this node has applied everything committed before the call.
    pub async fn linearize(&self) -> Result<u64, StoreError> {
        self.call(Input::Read).await
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.linearize().await?;
        self.sm.get(key)
    }

    /// Linearizable list of keys under `prefix` from `start`, at most `limit`,
    /// with the revision the list reflects.
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, u64), StoreError> {
        self.linearize().await?;
        let rev = self.sm.applied()?;
        Ok((self.sm.range(prefix, start, limit)?, rev))
    }

    /// List from this replica's applied state without a Raft round trip.
    pub fn list_local(&self, prefix: &str, limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        self.sm.range(prefix, None, limit)
    }

    /// Read from this replica's applied state without a Raft round trip.
    pub fn get_local(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.sm.get(key)
    }

    /// Watch keys under `prefix` for changes after revision `from`.
    pub fn watch(&self, prefix: &str, from: u64) -> Result<Watch, StoreError> {
        self.hub.watch(prefix, from)
    }

    /// The oldest revision a watch can resume from.
    pub fn watch_horizon(&self) -> u64 {
        self.hub.oldest()
    }

    /// The whole applied state at one applied index, read on the Raft thread (so no
    /// entry applies halfway through it) after everything committed before the call
    /// has applied here.
    pub(crate) async fn dump(&self) -> Result<SnapshotData, StoreError> {
        self.linearize().await?;
        self.call(Input::Dump).await
    }

    /// This replica's applied state at one applied index, without waiting for a
    /// leader.
    pub(crate) async fn dump_local(&self) -> Result<SnapshotData, StoreError> {
        self.call(Input::Dump).await
    }

    /// Add a voter (joining server) with its peer address.
    pub async fn add_voter(&self, id: u64, peer_addr: String) -> Result<(), StoreError> {
        self.call(|d| Input::AddVoter(id, peer_addr, d)).await
    }
}

fn run(
    replica: &mut Replica,
    rx: std_mpsc::Receiver<Input>,
    transport: &Transport,
    status: &RwLock<ReplicaStatus>,
    tick: Duration,
) -> StoreError {
    let mut next_tick = Instant::now() + tick;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(input) => {
                let mut stop = handle(replica, transport, input);
                for more in rx.try_iter().take(8192) {
                    stop |= handle(replica, transport, more);
                }
                if stop {
                    return StoreError::Stopped;
                }
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return StoreError::Stopped,
        }
        if Instant::now() >= next_tick {
            replica.tick();
            next_tick += tick;
            if next_tick < Instant::now() {
                next_tick = Instant::now() + tick;
            }
        }
        // A Ready can make the next one (a read issued once the leader committed).
        for _ in 0..4 {
            if let Err(e) = replica.on_ready(&mut |msgs| transport.send(msgs)) {
                return e;
            }
            if !replica.has_ready() {
                break;
            }
        }
        for (id, addr) in replica.take_peer_updates() {
            transport.set_peer(id, addr);
        }
        let now = replica.status();
        if *status.read().unwrap() != now {
            *status.write().unwrap() = now;
        }
    }
}

/// Feed one input to the replica; true when the loop must stop.
fn handle(replica: &mut Replica, transport: &Transport, input: Input) -> bool {
    match input {
        Input::Shutdown => return true,
        Input::Txn(txn, done) => replica.propose(txn, done),
        Input::Read(done) => replica.read_index(done),
        Input::AddVoter(id, addr, done) => {
            transport.set_peer(id, Some(addr.clone()));
            replica.add_voter(id, addr, done)
        }
        Input::Dump(done) => done(replica.state_machine().dump()),
        Input::Net(Inbound::Message(m)) => {
            transport.delivered();
            replica.step(m)
        }
        Input::Net(Inbound::Unreachable(id)) => replica.report_unreachable(id),
        Input::Net(Inbound::Snapshot { to, ok }) => replica.report_snapshot(to, ok),
        Input::Net(Inbound::PeerAddr(id, addr)) => transport.set_peer(id, Some(addr)),
    }
    false
}
