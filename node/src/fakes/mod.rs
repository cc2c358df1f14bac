//! Test doubles of the agent's host seams (youki's `syscall/test.rs` is the
//! model): a recording pod network host ([`FakeNet`]), cgroups
//! ([`FakeCgroups`]) and nft ruleset ([`FakeRuleset`]) that share one
//! [`Journal`] of calls and can fail any call; an in-memory API server
//! ([`FakeApi`]) behind a real `kube::Client`; probe results
//! ([`FakeChecker`]) and a scripted [`FakeRuntime`].
//!
//! **The fakes keep the state the host would have (namespaces, links,
//! cgroups, resolv.conf files, loaded rules), so a test can assert that
//! nothing is left.**

mod api;
mod host;
mod runtime;

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

pub use api::FakeApi;
pub use host::{FakeCgroups, FakeNet, FakeRuleset};
pub use runtime::{FakeChecker, FakeRuntime};

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

/// Which host calls fail.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// The n-th counted call (from 0) fails, once.
    Once(usize),
    /// Every call of this operation fails.
    Always(&'static str),
    /// The next call of this operation does its work but never answers (a
    /// reply lost on the way back), once.
    HangOnce(&'static str),
}

#[derive(Debug, Default)]
struct JournalState {
    calls: Vec<String>,
    counted: usize,
    fault: Fault,
    failed: Vec<String>,
}

/// The calls the fakes saw, in order, and the fault plan they follow.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<JournalState>>);

impl Journal {
    /// Follow `fault` from now on, counting calls afresh.
    pub fn arm(&self, fault: Fault) {
        let mut s = self.0.lock().expect("journal");
        s.fault = fault;
        s.counted = 0;
    }

    /// Record a call of `op`; `Err` when the plan says this call fails.
    /// Counted calls are the ones that happen a fixed number of times per
    /// pod start (not those made once per sandbox thread).
    pub fn call(&self, op: &'static str, detail: String, counted: bool) -> Result<(), String> {
        let mut s = self.0.lock().expect("journal");
        let entry = format!("{op} {detail}");
        s.calls.push(entry.clone());
        let n = s.counted;
        if counted {
            s.counted += 1;
        }
        let fail = match &s.fault {
            Fault::None | Fault::HangOnce(_) => false,
            Fault::Once(k) => counted && *k == n,
            Fault::Always(o) => *o == op,
        };
        if fail {
            s.failed.push(entry);
            return Err(format!("injected failure of {op}"));
        }
        Ok(())
    }

    /// Whether this call of `op` never answers ([`Fault::HangOnce`]), which
    /// disarms the fault.
    pub fn hangs(&self, op: &'static str) -> bool {
        let mut s = self.0.lock().expect("journal");
        if s.fault == Fault::HangOnce(op) {
            s.fault = Fault::None;
            s.failed.push(format!("{op} (no answer)"));
            return true;
        }
        false
    }

    /// Every call so far, as `op detail`.
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().expect("journal").calls.clone()
    }

    /// The calls that failed by the plan.
    pub fn failed(&self) -> Vec<String> {
        self.0.lock().expect("journal").failed.clone()
    }

    /// How many counted calls were made.
    pub fn counted(&self) -> usize {
        self.0.lock().expect("journal").counted
    }

    /// The operation names of the calls so far, first occurrence order.
    pub fn ops(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for c in self.calls() {
            let op = c.split(' ').next().unwrap_or("").to_string();
            if !seen.contains(&op) {
                seen.push(op);
            }
        }
        seen
    }
}
