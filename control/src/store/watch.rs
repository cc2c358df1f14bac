//! Watch history: a bounded window of recent events plus a live broadcast.
//!
//! **Events are published in revision order, only after the entries that produced
//! them are applied and flushed. A watch from a revision older than the window gets
//! `Expired`, never a silent gap.**

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::broadcast;

use super::error::StoreError;
use super::state::Event;

pub(crate) struct WatchHub {
    inner: Mutex<History>,
    live: broadcast::Sender<Published>,
}

struct History {
    events: VecDeque<Event>,
    capacity: usize,
    /// Every event with a revision above this is in `events` (or newer).
    compacted: u64,
}

/// What the live channel carries.
#[derive(Debug, Clone)]
pub(crate) enum Published {
    Event(Event),
    /// The state was replaced wholesale (snapshot install): watchers must start over.
    Reset(u64),
}

/// A watch stream: replayed history first, then live events.
pub struct Watch {
    prefix: String,
    backlog: VecDeque<Event>,
    last: u64,
    rx: broadcast::Receiver<Published>,
}

impl WatchHub {
    pub(crate) fn new(capacity: usize, start: u64) -> WatchHub {
        let (live, _) = broadcast::channel(capacity.max(1024));
        WatchHub {
            inner: Mutex::new(History {
                events: VecDeque::with_capacity(capacity.min(1 << 16)),
                capacity: capacity.max(1),
                compacted: start,
            }),
            live,
        }
    }

    pub(crate) fn publish(&self, events: Vec<Event>) {
        let mut h = self.inner.lock().unwrap();
        for ev in events {
            while h.events.len() >= h.capacity {
                if let Some(old) = h.events.pop_front() {
                    h.compacted = old.revision;
                }
            }
            // Drop the rest of a multi-op revision too, so the window starts on a boundary.
            while h.events.front().is_some_and(|e| e.revision <= h.compacted) {
                h.events.pop_front();
            }
            let _ = self.live.send(Published::Event(ev.clone()));
            h.events.push_back(ev);
        }
    }

    /// Forget history: the state now starts at `revision`.
    pub(crate) fn reset(&self, revision: u64) {
        let mut h = self.inner.lock().unwrap();
        h.events.clear();
        h.compacted = revision;
        let _ = self.live.send(Published::Reset(revision));
    }

    pub(crate) fn oldest(&self) -> u64 {
        self.inner.lock().unwrap().compacted
    }

    /// Watch keys under `prefix` for changes after revision `from`.
    pub(crate) fn watch(&self, prefix: &str, from: u64) -> Result<Watch, StoreError> {
        let h = self.inner.lock().unwrap();
        if from < h.compacted {
            return Err(StoreError::Expired {
                requested: from,
                oldest: h.compacted,
            });
        }
        let rx = self.live.subscribe();
        let backlog: VecDeque<Event> = h
            .events
            .iter()
            .filter(|e| e.revision > from && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let last = h.events.back().map_or(from, |e| e.revision.max(from));
        Ok(Watch {
            prefix: prefix.to_string(),
            backlog,
            last,
            rx,
        })
    }
}

impl Watch {
    /// The next event, waiting for one. `Expired` means the watcher fell behind (or the
    /// state was replaced) and must list again.
    pub async fn next(&mut self) -> Result<Event, StoreError> {
        if let Some(ev) = self.backlog.pop_front() {
            return Ok(ev);
        }
        loop {
            match self.rx.recv().await {
                Ok(Published::Event(ev)) => {
                    if ev.revision > self.last && ev.kv.key.starts_with(&self.prefix) {
                        return Ok(ev);
                    }
                }
                Ok(Published::Reset(rev)) => {
                    return Err(StoreError::Expired {
                        requested: self.last,
                        oldest: rev,
                    });
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Err(StoreError::Expired {
                        requested: self.last,
                        oldest: self.last + 1,
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return Err(StoreError::Stopped),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::command::KeyValue;
    use crate::store::state::EventKind;

    fn ev(rev: u64, key: &str) -> Event {
        Event {
            kind: EventKind::Put,
            revision: rev,
            kv: KeyValue {
                key: key.into(),
                value: vec![],
                create_revision: rev,
                mod_revision: rev,
            },
            prev: None,
        }
    }

    #[tokio::test]
    async fn replays_then_follows_and_expires() {
        let hub = WatchHub::new(3, 0);
        hub.publish(vec![ev(1, "/a/1"), ev(2, "/b/1"), ev(3, "/a/2")]);
        let mut w = hub.watch("/a/", 0).unwrap();
        assert_eq!(w.next().await.unwrap().revision, 1);
        assert_eq!(w.next().await.unwrap().revision, 3);
        hub.publish(vec![ev(4, "/a/3")]);
        assert_eq!(w.next().await.unwrap().revision, 4);
        // Window of 3 now holds 2..=4: revision 0 is gone.
        assert!(matches!(
            hub.watch("/a/", 0),
            Err(StoreError::Expired { .. })
        ));
        assert!(hub.watch("/a/", 1).is_ok());
        hub.reset(10);
        assert!(matches!(w.next().await, Err(StoreError::Expired { .. })));
    }
}
