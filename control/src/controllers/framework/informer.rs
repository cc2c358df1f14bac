//! Informers: a kube reflector cache of one kind, kept in step with the API by
//! a list+watch, whose changes fan out to handlers after the cache applied them.
//!
//! **Handlers see a change only after the cache shows it; `synced` resolves
//! once the first full list is in the cache.**

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{Lookup, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::{Key, Kind};

/// A change handler: the object as the cache had it before (if any) and as it is
/// now (or as it was when deleted: then the cache no longer holds it).
type Handler<K> = Box<dyn Fn(Option<&K>, &K) + Send + Sync>;

/// A list+watch cache of one kind whose changes are handed to handlers after
/// the cache has applied them. Typed kinds use `Informer::new`; dynamic ones
/// (`DynamicObject`) `Informer::new_with` and their `ApiResource`.
pub struct Informer<K>
where
    K: Resource + Lookup + Clone + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
    handlers: Mutex<Vec<Handler<K>>>,
    api: Api<K>,
    dyntype: <K as Lookup>::DynamicType,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K: Kind> Informer<K> {
    pub fn new(api: Api<K>) -> Arc<Informer<K>> {
        Informer::new_with(api, ())
    }
}

impl<K> Informer<K>
where
    K: Resource + Lookup + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    pub fn new_with(api: Api<K>, dyntype: <K as Lookup>::DynamicType) -> Arc<Informer<K>> {
        let writer = Writer::<K>::new(dyntype.clone());
        Arc::new(Informer {
            store: writer.as_reader(),
            writer: Mutex::new(Some(writer)),
            handlers: Mutex::new(Vec::new()),
            api,
            dyntype,
            synced: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Call `h` on every change from now on (and for every object after each
    /// full re-list).
    pub fn on(&self, h: impl Fn(Option<&K>, &K) + Send + Sync + 'static) {
        self.handlers.lock().unwrap().push(Box::new(h));
    }

    fn notify(&self, old: Option<&K>, new: &K) {
        for h in self.handlers.lock().unwrap().iter() {
            h(old, new);
        }
    }

    /// Keep the cache in step with the API until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let Some(mut writer) = self.writer.lock().unwrap().take() else {
            return;
        };
        let mut events = std::pin::pin!(
            watcher::watcher(self.api.clone(), watcher::Config::default()).default_backoff()
        );
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::debug!(error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match &ev {
                Event::Apply(o) | Event::Delete(o) => {
                    let old = self
                        .store
                        .get(&ObjectRef::from_obj_with(o, self.dyntype.clone()));
                    writer.apply_watcher_event(&ev);
                    self.notify(old.as_deref(), o);
                }
                Event::InitDone => {
                    tracing::debug!(kind = %<K as Lookup>::kind(&self.dyntype), "cache synced");
                    writer.apply_watcher_event(&ev);
                    self.synced.send_replace(true);
                    for o in self.store.state() {
                        self.notify(None, &o);
                    }
                }
                Event::Init | Event::InitApply(_) => writer.apply_watcher_event(&ev),
            }
        }
    }

    /// Fill the cache with `objs` as a full list would, without an API (for
    /// benchmarks and tests: the informer must not be running).
    pub fn seed(&self, objs: Vec<K>) {
        if let Some(w) = self.writer.lock().unwrap().as_mut() {
            w.apply_watcher_event(&Event::Init);
            for o in objs {
                w.apply_watcher_event(&Event::InitApply(o));
            }
            w.apply_watcher_event(&Event::InitDone);
        }
        self.synced.send_replace(true);
    }

    /// Wait until the first full list is in the cache (any number of waiters).
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Every cached object, in one namespace or all (`ns` empty).
    pub fn list(&self, ns: &str) -> Vec<Arc<K>> {
        if ns.is_empty() {
            return self.store.state();
        }
        self.store
            .state_filter(|o| o.meta().namespace.as_deref() == Some(ns))
    }

    pub fn get(&self, key: &Key) -> Option<Arc<K>> {
        let r = ObjectRef::new_with(&key.name, self.dyntype.clone());
        let r = if key.ns.is_empty() {
            r
        } else {
            r.within(&key.ns)
        };
        self.store.get(&r)
    }

    /// The dynamic type the informer caches (`()` for typed kinds).
    pub fn dyntype(&self) -> &<K as Lookup>::DynamicType {
        &self.dyntype
    }
}
