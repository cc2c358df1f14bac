//! Expectations: the writes a controller made that its cache has not shown
//! yet, so it does not act twice on a stale cache.
//!
//! **A key with outstanding expectations is not acted on again until the cache
//! catches up or the expectations expire.**

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::informer::Informer;
use super::{Key, Kind};

/// Writes a controller made that its cache has not shown yet: created names and
/// deleted uids per controller key. A key with outstanding expectations is not
/// acted on again (so nothing is created twice) until the cache catches up or
/// the expectations expire.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<Key, Expected>>,
}

struct Expected {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Instant,
}

/// How long unmet expectations hold a controller back.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

impl Expectations {
    pub fn created(&self, key: &Key, name: &str) {
        self.entry(key, |e| {
            e.creates.insert(name.to_string());
        });
    }

    pub fn deleted(&self, key: &Key, uid: &str) {
        self.entry(key, |e| {
            e.deletes.insert(uid.to_string());
        });
    }

    fn entry(&self, key: &Key, f: impl FnOnce(&mut Expected)) {
        let mut m = self.inner.lock().unwrap();
        let e = m.entry(key.clone()).or_insert_with(|| Expected {
            creates: HashSet::new(),
            deletes: HashSet::new(),
            since: Instant::now(),
        });
        e.since = Instant::now();
        f(e);
    }

    /// Whether the cache shows every write expected for `key`: `seen(name)` says a
    /// created name is cached, `gone(uid)` that a deleted object is gone or
    /// terminating.
    pub fn satisfied(
        &self,
        key: &Key,
        seen: impl Fn(&str) -> bool,
        gone: impl Fn(&str) -> bool,
    ) -> bool {
        let mut m = self.inner.lock().unwrap();
        let Some(e) = m.get_mut(key) else {
            return true;
        };
        e.creates.retain(|n| !seen(n));
        e.deletes.retain(|u| !gone(u));
        if (e.creates.is_empty() && e.deletes.is_empty()) || e.since.elapsed() > EXPECTATION_TTL {
            m.remove(key);
            return true;
        }
        false
    }

    /// Whether `inf` (in `key`'s namespace) shows every object created for
    /// `key`, and none of those deleted for it (except as terminating).
    pub fn seen_in<K: Kind>(&self, key: &Key, inf: &Informer<K>) -> bool {
        self.satisfied(
            key,
            |name| inf.get(&Key::new(&key.ns, name)).is_some(),
            |uid| {
                !inf.store.state().iter().any(|o| {
                    o.meta().uid.as_deref() == Some(uid) && o.meta().deletion_timestamp.is_none()
                })
            },
        )
    }

    /// The object `key` names in `inf`, unless it is gone (then its
    /// expectations are dropped) or being deleted.
    pub fn live<K: Kind>(&self, key: &Key, inf: &Informer<K>) -> Option<Arc<K>> {
        let Some(o) = inf.get(key) else {
            self.forget(key);
            return None;
        };
        o.meta().deletion_timestamp.is_none().then_some(o)
    }

    pub fn forget(&self, key: &Key) {
        self.inner.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_wait_for_the_cache() {
        let e = Expectations::default();
        let k = Key::new("ns", "rs");
        e.created(&k, "p1");
        e.deleted(&k, "u1");
        assert!(!e.satisfied(&k, |_| false, |_| true));
        assert!(e.satisfied(&k, |n| n == "p1", |_| true));
        assert!(
            e.satisfied(&k, |_| false, |_| false),
            "nothing expected any more"
        );
    }
}
