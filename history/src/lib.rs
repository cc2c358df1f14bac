//! skiff-history: what a fault-injection run records and how it is judged.
//! Clients record each operation's invocation and completion
//! ([`Recorder`]); [`linear`] decides whether a history of one key's
//! operations is linearizable under a model (Wing and Gong's search with
//! Lowe's memoisation, as Porcupine does it), [`kv`] is the model of a
//! Kubernetes object key (create, update with a resourceVersion
//! precondition, get, delete; writes whose outcome is unknown may or may not
//! have happened), and [`watch`] checks what watches saw against the
//! acknowledged writes (order, no gap, no duplicate). [`workload`] is the
//! clients and watch of a fault run (ConfigMaps through every API server)
//! and the report of its checks; [`faults`] tears a file as a power cut does.
//!
//! **A check never trusts the system under test: revisions, values and
//! outcomes are what the clients saw, with the times they saw them.**

pub mod faults;
pub mod kv;
pub mod linear;
pub mod watch;
pub mod workload;

use std::sync::Mutex;
use std::time::Instant;

/// One operation as a client saw it: when it was invoked, when its answer
/// came (`None`: no answer, the outcome is unknown), what it asked and what
/// it got.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation<I, O> {
    pub client: usize,
    pub call: u64,
    /// `None` for an operation that never completed (a timeout, a crash).
    pub ret: Option<u64>,
    pub input: I,
    pub output: O,
}

/// Records operations from many client threads, with times in nanoseconds
/// since the recorder was made.
pub struct Recorder<I, O> {
    start: Instant,
    ops: Mutex<Vec<Operation<I, O>>>,
}

impl<I, O> Default for Recorder<I, O> {
    fn default() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }
}

impl<I: Clone, O: Clone> Recorder<I, O> {
    /// Nanoseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Run `f` as client `client`'s operation `input` and record it;
    /// `f`'s `None` means the outcome is unknown (recorded without a
    /// completion time, as `unknown`).
    pub fn record(&self, client: usize, input: I, unknown: O, f: impl FnOnce() -> Option<O>) -> O {
        let call = self.now();
        let got = f();
        let (ret, output) = match got {
            Some(o) => (Some(self.now()), o),
            None => (None, unknown),
        };
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Operation {
                client,
                call,
                ret,
                input,
                output: output.clone(),
            });
        output
    }

    /// Everything recorded so far.
    pub fn history(&self) -> Vec<Operation<I, O>> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
