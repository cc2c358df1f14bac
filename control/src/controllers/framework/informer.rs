//! Informers: a kube reflector cache of one kind, kept in step with the API by
//! a list+watch, whose changes fan out to handlers after the cache applied them.
//!
//! **Handlers see a change only after the cache shows it; `synced` resolves
//! once the first full list is in the cache.**

use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{Lookup, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::{Key, Kind};

/// A change handler: the object as the cache had it before (if any) and as it is
/// now (or as it was when deleted: then the cache no longer holds it).
type Handler<K> = Box<dyn Fn(Option<&K>, &K) + Send + Sync>;

/// The list+watch an informer follows: whole objects, or metadata only.
type Source<K> =
    Box<dyn Fn() -> BoxStream<'static, Result<Event<K>, watcher::Error>> + Send + Sync>;

/// A list+watch cache of one kind whose changes are handed to handlers after
/// the cache has applied them. Typed kinds use `Informer::new`; dynamic ones
/// (`DynamicObject`) `Informer::new_with` and their `ApiResource`, or
/// `Informer::metadata` to cache their metadata only.
pub struct Informer<K>
where
    K: Resource + Lookup + Clone + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
    handlers: Mutex<Vec<Handler<K>>>,
    source: Source<K>,
    dyntype: <K as Lookup>::DynamicType,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K: Kind> Informer<K> {
    pub fn new(api: Api<K>) -> Arc<Informer<K>> {
        Informer::new_with(api, ())
    }
}

impl Informer<DynamicObject> {
    /// A cache of the metadata of one kind known at run time, filled by a
    /// metadata-only list+watch (`as=PartialObjectMetadata`): its objects
    /// have no `data`. For readers of owner references, finalizers and
    /// deletion state (the garbage collector), at a fraction of the memory
    /// of whole objects.
    pub fn metadata(client: kube::Client, ar: ApiResource) -> Arc<Informer<DynamicObject>> {
        let types = kube::core::TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        };
        let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(client, &ar);
        Informer::with_source(
            Box::new(move || {
                let types = types.clone();
                watcher::watcher(api.clone(), watcher::Config::default())
                    .map_ok(move |ev| without_data(ev, &types))
                    .boxed()
            }),
            ar,
        )
    }
}

/// A metadata event as a `DynamicObject` event: the kind's own type, no data.
fn without_data(
    ev: Event<PartialObjectMeta<DynamicObject>>,
    types: &kube::core::TypeMeta,
) -> Event<DynamicObject> {
    let obj = |p: PartialObjectMeta<DynamicObject>| DynamicObject {
        types: Some(types.clone()),
        metadata: p.metadata,
        data: serde_json::Value::Null,
    };
    match ev {
        Event::Apply(p) => Event::Apply(obj(p)),
        Event::Delete(p) => Event::Delete(obj(p)),
        Event::Init => Event::Init,
        Event::InitApply(p) => Event::InitApply(obj(p)),
        Event::InitDone => Event::InitDone,
    }
}

impl<K> Informer<K>
where
    K: Resource + Lookup + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    pub fn new_with(api: Api<K>, dyntype: <K as Lookup>::DynamicType) -> Arc<Informer<K>> {
        Informer::with_source(
            Box::new(move || watcher::watcher(api.clone(), watcher::Config::default()).boxed()),
            dyntype,
        )
    }

    fn with_source(source: Source<K>, dyntype: <K as Lookup>::DynamicType) -> Arc<Informer<K>> {
        let writer = Writer::<K>::new(dyntype.clone());
        Arc::new(Informer {
            store: writer.as_reader(),
            writer: Mutex::new(Some(writer)),
            handlers: Mutex::new(Vec::new()),
            source,
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
        let mut events = std::pin::pin!((self.source)().default_backoff());
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
