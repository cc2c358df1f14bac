//! One Raft replica: raft-rs `RawNode` over sled storage plus the state machine,
//! driven by explicit `tick`/`step`/`on_ready` calls.
//!
//! **`on_ready` persists entries and hard state and flushes before it returns the
//! messages to send, and only then acknowledges clients and publishes watch events.**
//! The replica knows nothing of sockets or threads: the real driver and the in-memory
//! test network feed it the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message, Snapshot,
};
use raft::{RawNode, StateRole};
use serde::Serialize;

use super::command::{self, Envelope, MemberChange, Txn, TxnOutcome};
use super::error::StoreError;
use super::failpoint;
use super::logger::raft_logger;
use super::state::{self, Event, StateMachine};
use super::storage::RaftStorage;
use super::watch::WatchHub;

/// Most log entries dropped by one compaction step.
const COMPACT_CHUNK: u64 = 256;

/// A completion callback: called exactly once with the outcome.
pub type Done<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send>;

/// Tunables of a replica (ticks are the driver's tick period, 100 ms in a server).
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Compact the log once this many applied entries follow the last snapshot.
    pub snapshot_threshold: u64,
    /// Fail a request that has not applied after this many ticks.
    pub request_timeout_ticks: u64,
    /// Events kept for watches that resume from a revision.
    pub watch_capacity: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            election_tick: 8,
            heartbeat_tick: 2,
            snapshot_threshold: 10_000,
            request_timeout_ticks: 50,
            watch_capacity: 10_000,
        }
    }
}

/// A point-in-time view of a replica, for status endpoints and tests.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub id: u64,
    pub leader_id: u64,
    pub term: u64,
    pub role: String,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub voters: Vec<u64>,
    pub peers: BTreeMap<u64, String>,
}

struct Pending<T> {
    deadline: u64,
    done: Done<T>,
}

type Ack = Box<dyn FnOnce() + Send>;

pub struct Replica {
    raw: RawNode<RaftStorage>,
    sm: StateMachine,
    hub: Arc<WatchHub>,
    cfg: ReplicaConfig,
    origin: u64,
    seq: u64,
    now: u64,
    proposals: HashMap<u64, Pending<TxnOutcome>>,
    members: HashMap<u64, Pending<()>>,
    reads_sent: HashMap<u64, Pending<u64>>,
    /// Reads asked of a leader that has not committed in its term yet (raft-rs
    /// would drop them); issued once it has.
    reads_deferred: Vec<(u64, Pending<u64>)>,
    reads_ready: Vec<(u64, Pending<u64>)>,
    peers: BTreeMap<u64, String>,
    peer_updates: Vec<(u64, Option<String>)>,
    /// The leader this replica last knew (a change fails what waits on the
    /// old one).
    leader_seen: u64,
}

impl Replica {
    /// Open a replica over `storage`. If the storage is blank and `bootstrap` is given,
    /// start a new one-voter cluster whose only member is this node at that peer address.
    pub fn new(
        storage: RaftStorage,
        id: u64,
        bootstrap: Option<&str>,
        cfg: ReplicaConfig,
    ) -> Result<Replica, StoreError> {
        let sm = storage.state_machine().clone();
        let blank = storage.conf_state().voters.is_empty() && storage.hard_state().term == 0;
        if let (true, Some(addr)) = (blank, bootstrap) {
            // The cluster starts from a snapshot at index 1 that holds this voter, so
            // members that join later learn it from the snapshot they are sent.
            let cs = ConfState {
                voters: vec![id],
                ..Default::default()
            };
            storage.reset_to(1, 1, &cs)?;
            sm.set_peer(1, id, Some(addr))?;
            storage.flush()?;
        }
        let applied = sm.applied()?;
        let rcfg = raft::Config {
            id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        rcfg.validate()?;
        let mut raw = RawNode::new(&rcfg, storage, &raft_logger(id))?;
        // The only voter need not wait an election timeout to lead.
        let voters: Vec<u64> = raw.raft.prs().conf().voters().ids().iter().collect();
        if voters == [id] {
            raw.campaign()?;
        }
        let peers = sm.peers()?;
        let peer_updates = peers.iter().map(|(i, a)| (*i, Some(a.clone()))).collect();
        Ok(Replica {
            raw,
            hub: Arc::new(WatchHub::new(cfg.watch_capacity, applied)),
            sm,
            cfg,
            origin: rand::random(),
            seq: 0,
            now: 0,
            proposals: HashMap::new(),
            members: HashMap::new(),
            reads_sent: HashMap::new(),
            reads_deferred: Vec::new(),
            reads_ready: Vec::new(),
            peers,
            peer_updates,
            leader_seen: raft::INVALID_ID,
        })
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub(crate) fn hub(&self) -> Arc<WatchHub> {
        self.hub.clone()
    }

    pub(crate) fn state_machine(&self) -> StateMachine {
        self.sm.clone()
    }

    fn store(&self) -> &RaftStorage {
        self.raw.store()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn deadline(&self) -> u64 {
        self.now + self.cfg.request_timeout_ticks
    }

    /// Advance logical time by one tick and fail requests that waited too long.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.now += 1;
        if let Err(e) = self.store().record_durable(self.id()) {
            tracing::warn!(error = %e, "cannot update the durability watermark");
        }
        let now = self.now;
        expire(&mut self.proposals, now);
        expire(&mut self.members, now);
        expire(&mut self.reads_sent, now);
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_deferred)
            .into_iter()
            .partition(|(_, p)| p.deadline < now);
        self.reads_deferred = keep;
        for (_, p) in late {
            (p.done)(Err(StoreError::Timeout));
        }
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(_, p)| p.deadline < now);
        self.reads_ready = keep;
        for (_, p) in late {
            (p.done)(Err(StoreError::Timeout));
        }
    }

    /// Feed a message from a peer. A message this replica cannot have been
    /// sent by a correct member is dropped or made harmless first, so that
    /// no peer can stop the Raft thread (raft-rs asserts on such input):
    /// one for another replica, from a non-member (once this replica knows
    /// its members), or of a kind only a replica sends itself is dropped; a
    /// heartbeat's commit index is capped at the last entry held here; an
    /// append whose entries do not follow its index one by one in sensible
    /// terms, an acknowledgement of entries this replica never had, a term
    /// from the far future, and a snapshot without voters or with
    /// undecodable data are dropped.
    pub fn step(&mut self, mut msg: Message) {
        let from = msg.from;
        let raft = &self.raw.raft;
        if msg.to != raft.id {
            tracing::debug!(
                from,
                to = msg.to,
                "dropped a raft message for another replica"
            );
            return;
        }
        let conf = raft.prs().conf();
        let known = !conf.voters().ids().is_empty();
        let member = conf.voters().contains(from) || conf.learners().contains(&from);
        if known && !member {
            tracing::debug!(from, "dropped a raft message from a non-member");
            return;
        }
        use raft::eraftpb::MessageType as T;
        let kind = msg.get_msg_type();
        let dropped = |why: &str| tracing::debug!(from, ?kind, "dropped a raft message: {why}");
        if msg.term > raft.term.saturating_add(FAR_TERMS) {
            // Elections add one to the term; one this far ahead is a lie
            // that would leave no room for the next election.
            return dropped("a term from the far future");
        }
        if msg.term == 0 && !matches!(kind, T::MsgPropose | T::MsgReadIndex) {
            // Only forwarded proposals and reads travel without a term.
            return dropped("no term");
        }
        match msg.get_msg_type() {
            T::MsgHup | T::MsgBeat | T::MsgUnreachable | T::MsgSnapStatus | T::MsgCheckQuorum => {
                return dropped("a local message kind");
            }
            T::MsgAppend if !entries_follow(&msg) => return dropped("entries out of sequence"),
            // Every entry past index 0 has a term; raft-rs takes term 0 for
            // "past my log" and would commit beyond it.
            T::MsgAppend if msg.index > 0 && msg.log_term == 0 => {
                return dropped("an append after an entry without a term");
            }
            T::MsgAppendResponse if !msg.reject && msg.index > raft.raft_log.last_index() => {
                return dropped("acknowledges entries never sent");
            }
            T::MsgSnapshot if !snapshot_is_sound(msg.get_snapshot()) => {
                return dropped("a snapshot without voters or readable data");
            }
            T::MsgHeartbeat => {
                let last = raft.raft_log.last_index();
                if msg.commit > last {
                    tracing::debug!(
                        from,
                        commit = msg.commit,
                        last,
                        "capped a heartbeat's commit index"
                    );
                    msg.commit = last;
                }
            }
            // A read request travels without a term and carries exactly
            // its one context entry (raft-rs asserts both).
            T::MsgReadIndex if msg.entries.len() != 1 => {
                tracing::debug!(from, "dropped a malformed read request");
                return;
            }
            T::MsgReadIndex => msg.term = 0,
            // A forwarded proposal travels without a term (raft-rs asserts
            // it); its configuration changes must at least decode.
            T::MsgPropose if msg.entries.is_empty() => return dropped("an empty proposal"),
            T::MsgPropose if !msg.entries.iter().all(conf_change_decodes) => {
                return dropped("a proposed configuration change that does not decode");
            }
            T::MsgPropose => msg.term = 0,
            // Only the leader acts on a transfer from a peer; a follower
            // would forward it with a term, which raft-rs asserts against.
            T::MsgTransferLeader if raft.state != StateRole::Leader => {
                return dropped("a leadership transfer sent to a non-leader");
            }
            _ => {}
        }
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(from, error = %e, "dropped raft message");
        }
    }

    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    pub fn report_snapshot(&mut self, id: u64, ok: bool) {
        let status = if ok {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(id, status);
    }

    /// Start campaigning at once (tests use it to pick a leader quickly).
    pub fn campaign(&mut self) -> Result<(), StoreError> {
        Ok(self.raw.campaign()?)
    }

    /// Propose a transaction; `done` gets its outcome once it applies here.
    pub fn propose(&mut self, txn: Txn, done: Done<TxnOutcome>) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return done(Err(StoreError::NoLeader));
        }
        let seq = self.next_seq();
        let data = command::encode(&Envelope {
            origin: self.origin,
            seq,
            body: txn,
        });
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                let deadline = self.deadline();
                self.proposals.insert(seq, Pending { deadline, done });
            }
            Err(raft::Error::ProposalDropped) => done(Err(StoreError::NoLeader)),
            Err(e) => done(Err(e.into())),
        }
    }

    /// Add `id` (reachable at `peer_addr`) as a voter. Idempotent.
    pub fn add_voter(&mut self, id: u64, peer_addr: String, done: Done<()>) {
        if self.raw.raft.prs().conf().voters().contains(id)
            && self.peers.get(&id) == Some(&peer_addr)
        {
            return done(Ok(()));
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return done(Err(StoreError::NoLeader));
        }
        let seq = self.next_seq();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(ConfChangeType::AddNode);
        single.node_id = id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        let ctx = command::encode(&Envelope {
            origin: self.origin,
            seq,
            body: MemberChange {
                node_id: id,
                peer_addr,
            },
        });
        match self.raw.propose_conf_change(ctx, cc) {
            Ok(()) => {
                let deadline = self.deadline();
                self.members.insert(seq, Pending { deadline, done });
            }
            Err(raft::Error::ProposalDropped) => done(Err(StoreError::NoLeader)),
            Err(e) => done(Err(e.into())),
        }
    }

    /// Ask for a linearizable read point: `done` gets an index that is applied here and
    /// at least as new as every write acknowledged before the call.
    pub fn read_index(&mut self, done: Done<u64>) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return done(Err(StoreError::NoLeader));
        }
        let seq = self.next_seq();
        let deadline = self.deadline();
        let p = Pending { deadline, done };
        if self.raw.raft.state == StateRole::Leader && !self.raw.raft.commit_to_current_term() {
            self.reads_deferred.push((seq, p));
            return;
        }
        self.raw.read_index(seq.to_be_bytes().to_vec());
        self.reads_sent.insert(seq, p);
    }

    fn issue_deferred_reads(&mut self) {
        if self.reads_deferred.is_empty()
            || (self.raw.raft.state == StateRole::Leader && !self.raw.raft.commit_to_current_term())
        {
            return;
        }
        for (seq, p) in std::mem::take(&mut self.reads_deferred) {
            self.raw.read_index(seq.to_be_bytes().to_vec());
            self.reads_sent.insert(seq, p);
        }
    }

    /// The leader is now `leader`. When it changed, what waits on the old
    /// one fails at once (as etcd's "leader changed"), rather than at its
    /// deadline: a write forwarded to a leader that died is lost unless the
    /// old leader replicated it, and a read index asked of it never comes.
    /// A failed write's outcome is unknown (it may still commit), so its
    /// client hears so and retries.
    fn on_leader(&mut self, leader: u64) {
        let before = std::mem::replace(&mut self.leader_seen, leader);
        if before == leader || before == raft::INVALID_ID {
            return;
        }
        let failed = self.proposals.len() + self.reads_sent.len() + self.reads_deferred.len();
        if failed > 0 {
            tracing::debug!(
                before,
                leader,
                failed,
                "leader changed: failing what waited on the old one"
            );
        }
        for (_, p) in self.proposals.drain() {
            (p.done)(Err(StoreError::LeaderChanged));
        }
        for (_, p) in self.reads_sent.drain() {
            (p.done)(Err(StoreError::LeaderChanged));
        }
        for (_, p) in self.reads_deferred.drain(..) {
            (p.done)(Err(StoreError::LeaderChanged));
        }
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Peers whose address became known or changed since the last call.
    pub fn take_peer_updates(&mut self) -> Vec<(u64, Option<String>)> {
        std::mem::take(&mut self.peer_updates)
    }

    /// Persist, apply and flush one `Ready`, handing messages to `send`: a leader's
    /// appends go out before its own write (Raft allows it, and the fsyncs overlap);
    /// every other message only after the entries and hard state it depends on are
    /// flushed.
    pub fn on_ready(&mut self, send: &mut dyn FnMut(Vec<Message>)) -> Result<(), StoreError> {
        self.issue_deferred_reads();
        if !self.raw.has_ready() {
            return Ok(());
        }
        let span = tracing::trace_span!("raft_ready", id = self.id());
        let _guard = span.enter();
        let mut rd = self.raw.ready();
        if let Some(leader) = rd.ss().map(|ss| ss.leader_id) {
            self.on_leader(leader);
        }
        let early = rd.take_messages();
        if !early.is_empty() {
            send(early);
        }
        let mut events = Vec::new();
        let mut acks: Vec<Ack> = Vec::new();
        // Entries and term/vote need to be on disk before anyone hears of them; a
        // commit-index move does not (committed entries are already durable here).
        let mut sync = rd.must_sync();
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot())?;
            sync = true;
        }
        if !rd.entries().is_empty() {
            failpoint::reach("before-append");
        }
        self.store().append(rd.entries())?;
        if let Some(hs) = rd.hs() {
            self.store().set_hard_state(hs)?;
        }
        if !rd.entries().is_empty() {
            failpoint::reach("after-append");
        }
        for rs in rd.take_read_states() {
            let seq = rs
                .request_ctx
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if let Some(p) = self.reads_sent.remove(&seq) {
                self.reads_ready.push((rs.index, p));
            }
        }
        self.apply(rd.take_committed_entries(), &mut events, &mut acks)?;
        if sync {
            failpoint::reach("before-flush");
            self.store().flush()?;
            failpoint::reach("after-flush");
        }
        let mut out = rd.take_persisted_messages();
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.store().set_commit(commit)?;
        }
        out.extend(light.take_messages());
        self.apply(light.take_committed_entries(), &mut events, &mut acks)?;
        if !out.is_empty() {
            send(out);
        }
        self.raw.advance_apply();

        self.hub.publish(events);
        for ack in acks {
            ack();
        }
        let applied = self.sm.applied()?;
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(idx, _)| *idx <= applied);
        self.reads_ready = wait;
        for (_, p) in ready {
            (p.done)(Ok(applied));
        }
        // Keep about `snapshot_threshold` entries; drop older ones a chunk at a time so
        // no single Ready pays for deleting the whole log.
        let snap = self.store().snapshot_index();
        if applied.saturating_sub(snap) > self.cfg.snapshot_threshold {
            let to = (applied - self.cfg.snapshot_threshold).min(snap + COMPACT_CHUNK);
            self.store().compact(to)?;
            tracing::trace!(to, "compacted raft log");
        }
        Ok(())
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), StoreError> {
        let meta = snap.get_metadata();
        let data = state::decode_snapshot(&snap.data)?;
        tracing::info!(index = meta.index, term = meta.term, "installing snapshot");
        let meta_bytes =
            protobuf::Message::write_to_bytes(meta).map_err(|e| StoreError::Decode {
                what: "snapshot metadata",
                reason: e.to_string(),
            })?;
        self.sm.restore(&data, &meta_bytes)?;
        failpoint::reach("during-snapshot-install");
        self.store()
            .reset_to(meta.index, meta.term, meta.get_conf_state())?;
        self.hub.reset(meta.index);
        self.peers = data.peers.clone();
        self.peer_updates
            .extend(data.peers.into_iter().map(|(i, a)| (i, Some(a))));
        Ok(())
    }

    fn apply(
        &mut self,
        entries: Vec<Entry>,
        events: &mut Vec<Event>,
        acks: &mut Vec<Ack>,
    ) -> Result<(), StoreError> {
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => self.sm.set_applied(e.index)?,
                EntryType::EntryNormal => self.apply_txn(&e, events, acks)?,
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&e, acks)?
                }
            }
        }
        Ok(())
    }

    fn apply_txn(
        &mut self,
        e: &Entry,
        events: &mut Vec<Event>,
        acks: &mut Vec<Ack>,
    ) -> Result<(), StoreError> {
        let env: Envelope<Txn> = match command::decode("log entry", &e.data) {
            Ok(env) => env,
            Err(err) => {
                tracing::warn!(index = e.index, error = %err, "skipping undecodable entry");
                return self.sm.set_applied(e.index);
            }
        };
        let (result, evs) = self.sm.apply_txn(e.index, &env.body)?;
        events.extend(evs);
        if env.origin == self.origin
            && let Some(p) = self.proposals.remove(&env.seq)
        {
            acks.push(Box::new(move || (p.done)(result)));
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, e: &Entry, acks: &mut Vec<Ack>) -> Result<(), StoreError> {
        let cc = if e.get_entry_type() == EntryType::EntryConfChange {
            ConfChange::parse_from_bytes(&e.data).map(raft_proto::ConfChangeI::into_v2)
        } else {
            ConfChangeV2::parse_from_bytes(&e.data)
        };
        let cc = match cc {
            Ok(cc) => cc,
            Err(err) => {
                tracing::warn!(index = e.index, error = %err, "skipping undecodable conf change");
                return self.sm.set_applied(e.index);
            }
        };
        let outcome = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                self.store().set_conf_state(&cs)?;
                Ok(())
            }
            Err(err) => {
                tracing::warn!(index = e.index, error = %err, "conf change rejected");
                Err(StoreError::Raft(err))
            }
        };
        let env: Option<Envelope<MemberChange>> = command::decode("member", &e.context).ok();
        match (&env, &outcome) {
            (Some(env), Ok(())) => {
                let removed = cc.get_changes().iter().any(|c| {
                    c.node_id == env.body.node_id
                        && c.get_change_type() == ConfChangeType::RemoveNode
                });
                let addr = (!removed).then_some(env.body.peer_addr.as_str());
                self.sm.set_peer(e.index, env.body.node_id, addr)?;
                match addr {
                    Some(a) => self.peers.insert(env.body.node_id, a.to_string()),
                    None => self.peers.remove(&env.body.node_id),
                };
                self.peer_updates
                    .push((env.body.node_id, addr.map(str::to_string)));
            }
            _ => self.sm.set_applied(e.index)?,
        }
        if let Some(env) = env
            && env.origin == self.origin
            && let Some(p) = self.members.remove(&env.seq)
        {
            acks.push(Box::new(move || (p.done)(outcome)));
        }
        Ok(())
    }

    pub fn status(&self) -> ReplicaStatus {
        let r = &self.raw.raft;
        ReplicaStatus {
            id: r.id,
            leader_id: r.leader_id,
            term: r.term,
            role: match r.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "precandidate",
            }
            .to_string(),
            commit: r.raft_log.committed,
            applied: r.raft_log.applied,
            first_index: self.store().snapshot_index() + 1,
            voters: r.prs().conf().voters().ids().iter().collect(),
            peers: self.peers.clone(),
        }
    }

    /// Digest of the applied key space (equal on replicas in agreement).
    pub fn digest(&self) -> Result<u64, StoreError> {
        self.sm.digest()
    }

    /// Read a key from the local applied state (not linearizable on its own).
    pub fn get_local(&self, key: &str) -> Result<Option<command::KeyValue>, StoreError> {
        self.sm.get(key)
    }
}

fn expire<T>(map: &mut HashMap<u64, Pending<T>>, now: u64) {
    let late: Vec<u64> = map
        .iter()
        .filter(|(_, p)| p.deadline < now)
        .map(|(k, _)| *k)
        .collect();
    for k in late {
        if let Some(p) = map.remove(&k) {
            (p.done)(Err(StoreError::Timeout));
        }
    }
}

/// How far ahead of this replica's term a peer's message may be.
const FAR_TERMS: u64 = 1 << 32;

/// An append's entries follow its index one by one, in terms no older than
/// the entry before and no newer than the message's.
fn entries_follow(msg: &Message) -> bool {
    let (mut index, mut term) = (msg.index, msg.log_term);
    msg.entries.iter().all(|e| {
        let ok =
            Some(e.index) == index.checked_add(1) && e.term >= term.max(1) && e.term <= msg.term;
        (index, term) = (e.index, e.term);
        ok
    })
}

/// An entry that is no configuration change, or one that decodes.
fn conf_change_decodes(e: &Entry) -> bool {
    match e.get_entry_type() {
        EntryType::EntryNormal => true,
        EntryType::EntryConfChange => ConfChange::parse_from_bytes(&e.data).is_ok(),
        EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&e.data).is_ok(),
    }
}

/// A snapshot names voters and its data decodes.
fn snapshot_is_sound(snap: &Snapshot) -> bool {
    !snap.get_metadata().get_conf_state().voters.is_empty()
        && state::decode_snapshot(&snap.data).is_ok()
}
