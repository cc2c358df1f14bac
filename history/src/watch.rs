//! What a watch saw, judged against the writes clients made: per key in
//! revision order, every acknowledged write within the watch's span seen
//! exactly once (no gap, no duplicate, across reconnects and leader
//! changes), and nothing seen that no client could have written.

use std::collections::{BTreeMap, BTreeSet};

/// A change to a key, as a write's answer or a watch event gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    Put,
    Delete,
}

/// One event a watch delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub key: String,
    pub rev: u64,
    pub change: Change,
    /// The value the object had (for a put).
    pub value: Option<String>,
    /// When the watch received it (the recorder's clock): the change was
    /// made before.
    pub at: u64,
}

/// Writes the clients made to the watched keys.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// Acknowledged: (key, revision) -> what it did.
    pub acknowledged: BTreeMap<(String, u64), Change>,
    /// Keys with writes whose outcome is unknown (their events may appear
    /// at revisions no client heard of).
    pub unknown: BTreeSet<String>,
}

/// Check one watch's events: opened after revision `from`, every event
/// newer than `from` and in revision order without repeats; every
/// acknowledged write with a revision in `(from, last event]` delivered with
/// its kind; no event without a write. The violations found, in words.
pub fn check(events: &[Event], from: u64, writes: &Writes) -> Vec<String> {
    let mut bad = Vec::new();
    let mut last = from;
    let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
    for e in events {
        if e.rev <= last {
            bad.push(format!(
                "{} at revision {} came after revision {last} (out of order or repeated)",
                e.key, e.rev
            ));
        }
        last = last.max(e.rev);
        let id = (e.key.clone(), e.rev);
        if !seen.insert(id.clone()) {
            continue;
        }
        match writes.acknowledged.get(&id) {
            Some(c) if *c != e.change => bad.push(format!(
                "{} at revision {}: the write was a {c:?}, the event a {:?}",
                e.key, e.rev, e.change
            )),
            Some(_) => {}
            None if writes.unknown.contains(&e.key) => {}
            None => bad.push(format!(
                "{} at revision {}: no client made this change",
                e.key, e.rev
            )),
        }
    }
    for (key, rev) in writes.acknowledged.keys() {
        if *rev > from && *rev <= last && !seen.contains(&(key.clone(), *rev)) {
            bad.push(format!(
                "{key} at revision {rev}: an acknowledged write the watch skipped"
            ));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, rev: u64, change: Change) -> Event {
        Event {
            key: key.into(),
            rev,
            change,
            value: None,
            at: 0,
        }
    }

    fn writes(list: &[(&str, u64, Change)]) -> Writes {
        Writes {
            acknowledged: list
                .iter()
                .map(|(k, r, c)| ((k.to_string(), *r), *c))
                .collect(),
            unknown: BTreeSet::new(),
        }
    }

    #[test]
    fn a_faithful_watch_passes() {
        let w = writes(&[
            ("a", 3, Change::Put),
            ("b", 4, Change::Put),
            ("a", 6, Change::Delete),
        ]);
        let e = [
            ev("a", 3, Change::Put),
            ev("b", 4, Change::Put),
            ev("a", 6, Change::Delete),
        ];
        assert!(check(&e, 2, &w).is_empty());
        // Opened later: only what follows.
        assert!(check(&e[1..], 3, &w).is_empty());
    }

    #[test]
    fn gaps_repeats_reordering_and_phantoms_are_caught() {
        let w = writes(&[
            ("a", 3, Change::Put),
            ("b", 4, Change::Put),
            ("a", 6, Change::Delete),
        ]);
        let gap = [ev("a", 3, Change::Put), ev("a", 6, Change::Delete)];
        assert!(check(&gap, 2, &w)[0].contains("skipped"));
        let repeat = [
            ev("a", 3, Change::Put),
            ev("b", 4, Change::Put),
            ev("b", 4, Change::Put),
        ];
        assert!(check(&repeat, 2, &w)[0].contains("repeated"));
        let reordered = [ev("b", 4, Change::Put), ev("a", 3, Change::Put)];
        assert!(!check(&reordered, 2, &w).is_empty());
        let phantom = [ev("a", 3, Change::Put), ev("c", 5, Change::Put)];
        assert!(
            check(&phantom, 2, &w)
                .iter()
                .any(|v| v.contains("no client"))
        );
        let mut unsure = w.clone();
        unsure.unknown.insert("c".into());
        assert!(
            !check(&phantom, 2, &unsure)
                .iter()
                .any(|v| v.contains("no client"))
        );
    }
}
