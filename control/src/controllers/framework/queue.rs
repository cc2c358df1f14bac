//! The work queue: keys of objects to reconcile, de-duplicated, handed to one
//! worker at a time, with delayed re-adds and a failure count per key.
//!
//! **A key is never handed to two workers at once; a key added while it is
//! being reconciled is handed out once more afterwards.**

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::Key;

/// The queue's book-keeping.
#[derive(Default)]
struct QueueState {
    ready: VecDeque<Key>,
    queued: HashSet<Key>,
    active: HashSet<Key>,
    /// Keys added while active: run again when done.
    again: HashSet<Key>,
    failures: HashMap<Key, u32>,
}

/// A de-duplicating work queue keyed by object.
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Notify,
}

impl Queue {
    pub fn new() -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::default(),
            ready: Notify::new(),
        })
    }

    /// Queue `key` unless it is queued already.
    pub fn add(&self, key: Key) {
        let mut s = self.state.lock().unwrap();
        if s.active.contains(&key) {
            s.again.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Queue `key` after `after`.
    pub fn add_after(self: &Arc<Self>, key: Key, after: Duration) {
        if after.is_zero() {
            return self.add(key);
        }
        let q: Weak<Queue> = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(q) = q.upgrade() {
                q.add(key);
            }
        });
    }

    /// The next key to work on; it is active until `done`.
    pub async fn next(&self) -> Key {
        loop {
            let notified = self.ready.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state.lock().unwrap();
                if let Some(k) = s.ready.pop_front() {
                    s.queued.remove(&k);
                    s.active.insert(k.clone());
                    if !s.ready.is_empty() {
                        self.ready.notify_one();
                    }
                    return k;
                }
            }
            notified.await;
        }
    }

    /// Count one more failure of `key`; returns how many in a row.
    pub fn record_failure(&self, key: &Key) -> u32 {
        let mut s = self.state.lock().unwrap();
        let n = s.failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// `key` succeeded: its next failure counts from one again.
    pub fn forget(&self, key: &Key) {
        self.state.lock().unwrap().failures.remove(key);
    }

    /// Finish work on `key`, and look at it again after `requeue` if asked.
    pub fn done(self: &Arc<Self>, key: Key, requeue: Option<Duration>) {
        let again = {
            let mut s = self.state.lock().unwrap();
            s.active.remove(&key);
            s.again.remove(&key)
        };
        if again {
            self.add(key.clone());
        }
        if let Some(after) = requeue {
            self.add_after(key, after);
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().unwrap().ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `base * 2^(n-1)`, at most `cap`.
pub fn backoff(base: Duration, cap: Duration, n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << shift).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap() {
        let b = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        let got: Vec<u64> = (1..=6)
            .map(|n| backoff(b, cap, n).as_millis() as u64)
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[tokio::test]
    async fn queue_dedups_and_never_runs_a_key_twice_at_once() {
        let q = Queue::new();
        let a = Key::new("ns", "a");
        q.add(a.clone());
        q.add(a.clone());
        q.add(Key::new("ns", "b"));
        assert_eq!(q.len(), 2);
        let first = q.next().await;
        assert_eq!(first, a);
        // Added while active: not handed out again until done.
        q.add(a.clone());
        let second = q.next().await;
        assert_eq!(second, Key::new("ns", "b"));
        assert!(q.is_empty());
        q.done(first, None);
        assert_eq!(q.next().await, a);
    }

    #[tokio::test]
    async fn requeue_after_hands_the_key_out_again() {
        let q = Queue::new();
        let a = Key::new("", "a");
        q.add(a.clone());
        let k = q.next().await;
        q.done(k, Some(Duration::from_millis(20)));
        assert!(q.is_empty());
        let again = tokio::time::timeout(Duration::from_secs(2), q.next()).await;
        assert_eq!(again.unwrap(), a);
    }

    #[test]
    fn failures_count_until_forgotten() {
        let q = Queue::new();
        let a = Key::new("", "a");
        assert_eq!(q.record_failure(&a), 1);
        assert_eq!(q.record_failure(&a), 2);
        assert_eq!(q.record_failure(&Key::new("", "b")), 1);
        q.forget(&a);
        assert_eq!(q.record_failure(&a), 1);
    }
}
