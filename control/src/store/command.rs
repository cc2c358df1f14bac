//! Commands written to the Raft log, their preconditions and their outcomes.
//!
//! **A command is decided at apply time from the replicated state only, so every
//! replica reaches the same outcome.**

use serde::{Deserialize, Serialize};

use super::error::{ConflictKind, StoreError};

/// What a single operation requires of the current state of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// No requirement.
    Any,
    /// The key must not exist (create-if-absent).
    Absent,
    /// The key must exist.
    Present,
    /// The key must exist with this modification revision.
    Revision(u64),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        key: String,
        expect: Expect,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
    pub fn expect(&self) -> Expect {
        match self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } => *expect,
        }
    }
    /// Create `key` only if it does not exist.
    pub fn create(key: impl Into<String>, value: Vec<u8>) -> Op {
        Op::Put {
            key: key.into(),
            value,
            expect: Expect::Absent,
        }
    }
    /// Replace `key` only if its revision is still `rev`.
    pub fn update(key: impl Into<String>, value: Vec<u8>, rev: u64) -> Op {
        Op::Put {
            key: key.into(),
            value,
            expect: Expect::Revision(rev),
        }
    }
    /// Delete `key` (which must exist), only at revision `rev` if given.
    pub fn delete(key: impl Into<String>, rev: Option<u64>) -> Op {
        Op::Delete {
            key: key.into(),
            expect: rev.map_or(Expect::Present, Expect::Revision),
        }
    }
}

/// A multi-key transaction: every precondition holds and all ops apply, or nothing does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn single(op: Op) -> Txn {
        Txn { ops: vec![op] }
    }
}

/// A key and its stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Revision (Raft index) of the entry that created the key.
    pub create_revision: u64,
    /// Revision (Raft index) of the entry that last wrote the key.
    pub mod_revision: u64,
}

/// What one op did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Put { prev: Option<KeyValue> },
    Deleted { prev: KeyValue },
}

/// The outcome of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// The Raft index at which the transaction applied: every written key carries it.
    pub revision: u64,
    pub results: Vec<OpResult>,
}

/// What a client request turned into once applied.
pub type TxnResult = Result<TxnOutcome, StoreError>;

/// A proposal as it is written into a log entry: the proposer's tag plus the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Envelope<T> {
    /// Random per process start; lets the proposer find its waiter when the entry applies.
    pub origin: u64,
    pub seq: u64,
    pub body: T,
}

/// The body of a conf-change entry's context.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MemberChange {
    pub node_id: u64,
    pub peer_addr: String,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("serialising plain data cannot fail")
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Check one op's precondition against the current value of its key.
pub(crate) fn check(op: &Op, current: Option<&KeyValue>) -> Result<(), StoreError> {
    let kind = match (op.expect(), current) {
        (Expect::Any, _) => return Ok(()),
        (Expect::Absent, None) => return Ok(()),
        (Expect::Absent, Some(_)) => ConflictKind::AlreadyExists,
        (Expect::Present, Some(_)) => return Ok(()),
        (Expect::Present | Expect::Revision(_), None) => ConflictKind::NotFound,
        (Expect::Revision(r), Some(kv)) if kv.mod_revision == r => return Ok(()),
        (Expect::Revision(r), Some(kv)) => ConflictKind::RevisionMismatch {
            expected: r,
            actual: kv.mod_revision,
        },
    };
    if matches!(op, Op::Delete { .. })
        && kind == ConflictKind::NotFound
        && op.expect() == Expect::Any
    {
        return Ok(());
    }
    Err(StoreError::Conflict {
        key: op.key().to_string(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(rev: u64) -> KeyValue {
        KeyValue {
            key: "k".into(),
            value: vec![],
            create_revision: rev,
            mod_revision: rev,
        }
    }

    #[test]
    fn preconditions_table() {
        let put = |expect| Op::Put {
            key: "k".into(),
            value: vec![],
            expect,
        };
        let cases: Vec<(Op, Option<KeyValue>, Option<ConflictKind>)> = vec![
            (put(Expect::Any), None, None),
            (put(Expect::Any), Some(kv(3)), None),
            (put(Expect::Absent), None, None),
            (
                put(Expect::Absent),
                Some(kv(3)),
                Some(ConflictKind::AlreadyExists),
            ),
            (put(Expect::Present), None, Some(ConflictKind::NotFound)),
            (put(Expect::Revision(3)), Some(kv(3)), None),
            (
                put(Expect::Revision(2)),
                Some(kv(3)),
                Some(ConflictKind::RevisionMismatch {
                    expected: 2,
                    actual: 3,
                }),
            ),
            (Op::delete("k", None), None, Some(ConflictKind::NotFound)),
            (Op::delete("k", Some(3)), Some(kv(3)), None),
        ];
        for (op, cur, want) in cases {
            let got = match check(&op, cur.as_ref()) {
                Ok(()) => None,
                Err(StoreError::Conflict { kind, .. }) => Some(kind),
                Err(e) => panic!("unexpected {e}"),
            };
            assert_eq!(got, want, "op {op:?} on {cur:?}");
        }
    }

    #[test]
    fn envelope_roundtrip() {
        let env = Envelope {
            origin: 7,
            seq: 9,
            body: Txn::single(Op::create("/a", b"x".to_vec())),
        };
        let back: Envelope<Txn> = decode("envelope", &encode(&env)).unwrap();
        assert_eq!(back.body, env.body);
        assert!(decode::<Envelope<Txn>>("envelope", b"\xff\xff\xff").is_err());
    }
}
