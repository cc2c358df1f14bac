//! Replicas over an in-memory network that drops, delays, reorders and partitions.
//! Committed (acknowledged) writes must survive and replicas must converge.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skiff_control::store::{DataDir, Op, Replica, ReplicaConfig, StoreError, Txn, TxnOutcome};

type Acks = Arc<Mutex<Vec<(String, String, Result<TxnOutcome, StoreError>)>>>;

struct Net {
    rng: StdRng,
    nodes: BTreeMap<u64, (Replica, DataDir)>,
    in_flight: Vec<(u64, Message)>,
    now: u64,
    drop_rate: f64,
    max_delay: u64,
    isolated: BTreeSet<u64>,
    acks: Acks,
    next_key: u64,
}

impl Net {
    fn new(n: u64, seed: u64) -> Net {
        Net::with_config(n, seed, ReplicaConfig::default())
    }

    fn with_config(n: u64, seed: u64, cfg: ReplicaConfig) -> Net {
        let mut net = Net {
            rng: StdRng::seed_from_u64(seed),
            nodes: BTreeMap::new(),
            in_flight: Vec::new(),
            now: 0,
            drop_rate: 0.0,
            max_delay: 0,
            isolated: BTreeSet::new(),
            acks: Arc::default(),
            next_key: 0,
        };
        for id in 1..=n {
            let dir = DataDir::temporary().unwrap();
            let boot = (id == 1).then_some("mem:1");
            let r = Replica::new(dir.storage().unwrap(), id, boot, cfg.clone()).unwrap();
            net.nodes.insert(id, (r, dir));
        }
        net.node(1).campaign().unwrap();
        net.run(20);
        for id in 2..=n {
            let done = Arc::new(Mutex::new(None));
            let d = done.clone();
            let leader = net.leader().expect("a leader");
            net.node(leader).add_voter(
                id,
                format!("mem:{id}"),
                Box::new(move |r| *d.lock().unwrap() = Some(r.is_ok())),
            );
            for _ in 0..100 {
                net.run(1);
                if done.lock().unwrap().is_some() {
                    break;
                }
            }
            assert_eq!(*done.lock().unwrap(), Some(true), "adding voter {id}");
        }
        net.run(30);
        net
    }

    fn node(&mut self, id: u64) -> &mut Replica {
        &mut self.nodes.get_mut(&id).unwrap().0
    }

    fn leader(&self) -> Option<u64> {
        let mut leaders: Vec<u64> = self
            .nodes
            .values()
            .filter(|(r, _)| r.status().role == "leader" && !self.isolated.contains(&r.id()))
            .map(|(r, _)| r.id())
            .collect();
        leaders.sort();
        leaders.pop()
    }

    /// One tick of every node, then deliver what is due.
    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.now += 1;
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in &ids {
                self.node(*id).tick();
            }
            for _round in 0..4 {
                for id in &ids {
                    let mut msgs = Vec::new();
                    self.node(*id)
                        .on_ready(&mut |batch| msgs.extend(batch))
                        .unwrap();
                    for m in msgs {
                        if self.rng.random_bool(self.drop_rate) {
                            continue;
                        }
                        let delay = if self.max_delay == 0 {
                            0
                        } else {
                            self.rng.random_range(0..=self.max_delay)
                        };
                        self.in_flight.push((self.now + delay, m));
                    }
                }
                // Deliver due messages in a shuffled order (reordering).
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                    .into_iter()
                    .partition(|(t, _)| *t <= self.now);
                self.in_flight = later;
                let mut due: Vec<Message> = due.into_iter().map(|(_, m)| m).collect();
                for i in (1..due.len()).rev() {
                    let j = self.rng.random_range(0..=i);
                    due.swap(i, j);
                }
                for m in due {
                    if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
                        continue;
                    }
                    if let Some((r, _)) = self.nodes.get_mut(&m.to) {
                        r.step(m);
                    }
                }
            }
        }
    }

    /// Propose a write of a fresh key through a random node.
    fn write(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let via = ids[self.rng.random_range(0..ids.len())];
        self.write_via(via);
    }

    fn write_via(&mut self, via: u64) {
        self.next_key += 1;
        let key = format!("/k/{:06}", self.next_key);
        let value = format!("v{}", self.next_key);
        let acks = self.acks.clone();
        let (k, v) = (key.clone(), value.clone());
        self.node(via).propose(
            Txn::single(Op::create(key, value.into_bytes())),
            Box::new(move |r| acks.lock().unwrap().push((k, v, r))),
        );
    }

    /// Heal everything and run until all replicas applied the same index.
    fn settle(&mut self) {
        self.drop_rate = 0.0;
        self.max_delay = 0;
        self.isolated.clear();
        for _ in 0..200 {
            self.run(5);
            let applied: BTreeSet<(u64, u64)> = self
                .nodes
                .values()
                .map(|(r, _)| (r.status().applied, r.status().commit))
                .collect();
            if applied.len() == 1 && self.leader().is_some() && self.in_flight.is_empty() {
                return;
            }
        }
        panic!("replicas did not converge");
    }

    fn check(&mut self) -> usize {
        let acked: Vec<(String, String)> = self
            .acks
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, r)| r.is_ok())
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        let digests: BTreeSet<u64> = self
            .nodes
            .values()
            .map(|(r, _)| r.digest().unwrap())
            .collect();
        assert_eq!(digests.len(), 1, "replicas diverged");
        for (r, _) in self.nodes.values() {
            for (k, v) in &acked {
                let got = r.get_local(k).unwrap().map(|kv| kv.value);
                assert_eq!(
                    got.as_deref(),
                    Some(v.as_bytes()),
                    "node {} lost {k}",
                    r.id()
                );
            }
        }
        acked.len()
    }
}

fn chaos(n: u64, seed: u64) {
    let mut net = Net::new(n, seed);
    net.drop_rate = 0.1;
    net.max_delay = 3;
    for round in 0..6 {
        for _ in 0..40 {
            net.write();
            net.run(1);
        }
        if round % 2 == 1 {
            // Partition the leader away for a while, keep writing to everyone.
            if let Some(l) = net.leader() {
                net.isolated.insert(l);
            }
            for _ in 0..40 {
                net.write();
                net.run(1);
            }
            net.run(30);
            net.isolated.clear();
        }
    }
    net.run(60); // let timeouts fire so every proposal has an outcome
    net.settle();
    let acked = net.check();
    assert!(acked > 50, "too few writes committed: {acked}");
    // The cluster still takes writes after all that.
    let before = net.acks.lock().unwrap().len();
    net.write();
    net.run(20);
    let acks = net.acks.lock().unwrap();
    assert_eq!(acks.len(), before + 1);
    assert!(
        acks.last().unwrap().2.is_ok(),
        "{:?}",
        acks.last().unwrap().2
    );
}

#[test]
fn three_nodes_lossy_network() {
    for seed in [1, 2, 3] {
        chaos(3, seed);
    }
}

#[test]
fn five_nodes_lossy_network() {
    for seed in [11, 12] {
        chaos(5, seed);
    }
}

#[test]
fn lagging_node_catches_up_by_snapshot() {
    let cfg = ReplicaConfig {
        snapshot_threshold: 50,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(3, 7, cfg);
    net.isolated.insert(3);
    let behind = net.node(3).status().applied;
    for i in 0..200 {
        net.write_via(1 + i % 2);
        net.run(1);
    }
    net.run(10);
    let leader = net.leader().unwrap();
    let first = net.node(leader).status().first_index;
    assert!(
        first > behind + 1,
        "the leader compacted past node 3 ({first} vs {behind})"
    );
    net.settle();
    assert!(net.check() >= 190);
    assert!(net.node(3).status().applied > first);
}

/// Hostile messages from a holder of the cluster token (a heartbeat that
/// commits past the log, messages from a non-member or for another replica)
/// are dropped or capped; the cluster keeps committing writes.
#[test]
fn hostile_messages_neither_stop_a_replica_nor_lose_a_write() {
    use raft::eraftpb::MessageType;
    let mut net = Net::new(3, 7);
    let leader = net.leader().expect("a leader");
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let term = net.node(follower).status().term;
    let msg = |t: MessageType, from: u64, to: u64, commit: u64| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = to;
        m.term = term;
        m.commit = commit;
        m
    };
    for m in [
        msg(MessageType::MsgHeartbeat, leader, follower, 1 << 40),
        msg(MessageType::MsgHeartbeat, 99, follower, 1 << 40),
        msg(MessageType::MsgAppend, 99, follower, 1 << 40),
        msg(MessageType::MsgHeartbeat, leader, 42, 1 << 40),
        msg(MessageType::MsgReadIndex, leader, follower, 0),
    ] {
        net.node(follower).step(m);
    }
    for _ in 0..20 {
        net.write();
    }
    net.settle();
    assert!(net.check() >= 20, "writes still commit on every replica");
}

/// A message of any kind from a member, with fields near the replicas'
/// real terms and indexes, so that it reaches raft-rs's deeper checks.
fn fuzzed_message(rng: &mut StdRng, from: u64, to: u64, term: u64, last: u64) -> Message {
    use protobuf::ProtobufEnum;
    use raft::eraftpb::{Entry, EntryType, MessageType};
    let near = |rng: &mut StdRng, x: u64| match rng.random_range(0..6) {
        0 => 0,
        1 => u64::MAX - rng.random_range(0..3),
        _ => x.saturating_add(rng.random_range(0..6)).saturating_sub(3),
    };
    let mut m = Message::default();
    let kinds = MessageType::values();
    m.set_msg_type(kinds[rng.random_range(0..kinds.len())]);
    m.from = from;
    m.to = to;
    m.term = near(rng, term);
    m.log_term = near(rng, term);
    m.index = near(rng, last);
    m.commit = near(rng, last);
    m.reject = rng.random_bool(0.3);
    m.reject_hint = near(rng, last);
    m.request_snapshot = near(rng, last);
    let (mut index, mut eterm) = (m.index, m.log_term);
    for _ in 0..rng.random_range(0..4) {
        let mut e = Entry::default();
        // Mostly in sequence, sometimes not.
        index = if rng.random_bool(0.8) {
            index.wrapping_add(1)
        } else {
            near(rng, last)
        };
        eterm = if rng.random_bool(0.8) {
            eterm.max(1)
        } else {
            near(rng, term)
        };
        e.index = index;
        e.term = eterm;
        if rng.random_bool(0.2) {
            e.set_entry_type(EntryType::EntryConfChangeV2);
        }
        e.data = (0..rng.random_range(0..8))
            .map(|_| rng.random())
            .collect::<Vec<u8>>()
            .into();
        m.entries.push(e);
    }
    if m.get_msg_type() == MessageType::MsgSnapshot {
        let snap = m.mut_snapshot();
        snap.mut_metadata().index = near(rng, last);
        snap.mut_metadata().term = near(rng, term);
        if rng.random_bool(0.5) {
            snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        }
        snap.data = (0..rng.random_range(0..16))
            .map(|_| rng.random())
            .collect::<Vec<u8>>()
            .into();
    }
    m
}

/// Thousands of fuzzed messages from members, to followers and to the
/// leader: no replica panics, and afterwards the group still has a leader.
/// (A member that lies — appends as if it led, commits what it likes — can
/// make replicas diverge or stall: Raft trusts its members, and mutual TLS
/// decides who is one. So this checks that the Raft thread survives.)
#[test]
fn fuzzed_messages_from_members_never_panic_a_replica() {
    for seed in 0..8u64 {
        let mut net = Net::new(3, 100 + seed);
        let mut rng = StdRng::seed_from_u64(seed);
        for round in 0..60 {
            for _ in 0..40 {
                let to = rng.random_range(1..=3u64);
                let from = (to % 3) + 1;
                let (term, last) = {
                    let st = net.node(to).status();
                    (st.term, st.commit + rng.random_range(0..3))
                };
                let m = fuzzed_message(&mut rng, from, to, term, last);
                let shown = format!("{m:?}");
                let node = net.node(to);
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    node.step(m);
                    node.on_ready(&mut |_| {}).unwrap();
                }));
                assert!(
                    res.is_ok(),
                    "seed {seed} round {round}: replica {to} panicked on {shown}"
                );
            }
            net.write();
            net.run(3);
        }
        net.run(100);
        assert!(
            net.leader().is_some(),
            "seed {seed}: a leader after the fuzzing"
        );
    }
}
