//! Watching objects of a kind: store events decoded into API objects and
//! filtered by selectors, as ADDED, MODIFIED and DELETED (an object that stops
//! matching the selectors is DELETED for this watcher, one that starts matching
//! is ADDED).

use serde_json::Value;

use crate::model::ResourceType;
use crate::model::selector::{FieldSelector, LabelSelector};
use crate::store::{EventKind, StoreError, Watch};

use super::Objects;

/// One change of a watched object.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Added(Value),
    Modified(Value),
    Deleted(Value),
}

impl WatchEvent {
    /// The event's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
        }
    }

    pub fn into_object(self) -> Value {
        match self {
            WatchEvent::Added(v) | WatchEvent::Modified(v) | WatchEvent::Deleted(v) => v,
        }
    }
}

/// A watch on objects of one kind (in one namespace or all).
pub struct ObjectWatch {
    inner: Watch,
    objects: Objects,
    labels: LabelSelector,
    fields: FieldSelector,
    revision: u64,
}

impl ObjectWatch {
    /// The next change that concerns this watcher. `Expired` means it fell
    /// behind and must list again. Cancel-safe: an event is only consumed when
    /// it is returned or skipped.
    pub async fn next(&mut self) -> Result<WatchEvent, StoreError> {
        loop {
            let ev = self.inner.next().await?;
            self.revision = ev.revision;
            let new = self.objects.decode(&ev.kv).ok();
            let old = ev.prev.as_ref().and_then(|p| self.objects.decode(p).ok());
            let matches = |v: &Option<Value>| {
                v.as_ref()
                    .is_some_and(|v| self.labels.matches(v) && self.fields.matches(v))
            };
            let event = match ev.kind {
                EventKind::Delete if matches(&new) => new.map(WatchEvent::Deleted),
                EventKind::Delete => None,
                EventKind::Put => match (matches(&old), matches(&new)) {
                    (true, true) => new.map(WatchEvent::Modified),
                    (false, true) => new.map(WatchEvent::Added),
                    (true, false) => new.map(WatchEvent::Deleted),
                    (false, false) => None,
                },
            };
            if let Some(event) = event {
                return Ok(event);
            }
        }
    }

    /// The store revision of the last event seen, matching or not (the
    /// revision the watch started from before any).
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

impl Objects {
    /// Watch objects of `t` in `ns` (all with `None`) that match the
    /// selectors, from after revision `from`.
    pub fn watch(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        labels: LabelSelector,
        fields: FieldSelector,
        from: u64,
    ) -> Result<ObjectWatch, StoreError> {
        Ok(ObjectWatch {
            inner: self.store.watch(&t.ns_prefix(ns), from)?,
            objects: self.clone(),
            labels,
            fields,
            revision: from,
        })
    }
}
