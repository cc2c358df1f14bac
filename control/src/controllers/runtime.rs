//! The controller runtime: informers (a kube reflector cache per kind whose
//! changes fan out to handlers), a de-duplicating work queue with capped
//! exponential back-off, and the worker loop that drives a reconciler.
//!
//! **A key is never reconciled by two workers at once; a key added while it is
//! being reconciled runs once more afterwards; reconcilers start only after the
//! caches they read have synced.**

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector::Lookup};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// What a controller failed at.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    #[error("{what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ControllerError> = std::result::Result<T, E>;

/// Which object a controller works on: namespace ("" when cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub ns: String,
    pub name: String,
}

impl Key {
    pub fn new(ns: &str, name: &str) -> Key {
        Key {
            ns: ns.into(),
            name: name.into(),
        }
    }

    pub fn of<K: Resource>(o: &K) -> Key {
        Key::new(
            o.meta().namespace.as_deref().unwrap_or(""),
            o.meta().name.as_deref().unwrap_or(""),
        )
    }

    /// The reference a kube `Store` is looked up by.
    pub fn obj_ref<K>(&self) -> ObjectRef<K>
    where
        K: Lookup,
        K::DynamicType: Default,
    {
        let r = ObjectRef::new(&self.name);
        if self.ns.is_empty() {
            r
        } else {
            r.within(&self.ns)
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ns.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.ns, self.name)
        }
    }
}

/// A Kubernetes kind a controller can cache (a typed, static resource).
pub trait Kind:
    Resource<DynamicType = ()>
    + Lookup<DynamicType = ()>
    + Clone
    + DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Kind for K where
    K: Resource<DynamicType = ()>
        + Lookup<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A change handler: the object as the cache had it before (if any) and as it is
/// now (or as it was when deleted).
type Handler<K> = Box<dyn Fn(Option<&K>, &K) + Send + Sync>;

/// A list+watch cache of one kind whose changes are handed to handlers after
/// the cache has applied them.
pub struct Informer<K>
where
    K: Resource + Lookup + Clone + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
    handlers: Mutex<Vec<Handler<K>>>,
    api: Api<K>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K: Kind> Informer<K> {
    pub fn new(api: Api<K>) -> Arc<Informer<K>> {
        let writer = Writer::<K>::new(());
        Arc::new(Informer {
            store: writer.as_reader(),
            writer: Mutex::new(Some(writer)),
            handlers: Mutex::new(Vec::new()),
            api,
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
                    let old = self.store.get(&ObjectRef::from_obj(o));
                    writer.apply_watcher_event(&ev);
                    self.notify(old.as_deref(), o);
                }
                Event::InitDone => {
                    tracing::debug!(kind = %<K as Lookup>::kind(&()), "cache synced");
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
    /// benchmarks: the informer must not be running).
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
        self.store.get(&key.obj_ref())
    }
}

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
    base: Duration,
    cap: Duration,
}

impl Queue {
    pub fn new() -> Arc<Queue> {
        Queue::with_backoff(Duration::from_millis(100), Duration::from_secs(60))
    }

    pub fn with_backoff(base: Duration, cap: Duration) -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::default(),
            ready: Notify::new(),
            base,
            cap,
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

    /// Finish work on `key`: on failure retry with back-off, on success forget the
    /// failures and requeue after `requeue` if asked.
    pub fn done(self: &Arc<Self>, key: Key, outcome: std::result::Result<Option<Duration>, ()>) {
        let (again, retry) = {
            let mut s = self.state.lock().unwrap();
            s.active.remove(&key);
            let again = s.again.remove(&key);
            let retry = match outcome {
                Ok(after) => {
                    s.failures.remove(&key);
                    after
                }
                Err(()) => {
                    let n = s.failures.entry(key.clone()).or_insert(0);
                    *n = n.saturating_add(1);
                    Some(backoff(self.base, self.cap, *n))
                }
            };
            (again, retry)
        };
        if again {
            self.add(key.clone());
        }
        if let Some(after) = retry {
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

/// A controller: reconciles one key at a time from its queue.
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name in logs and spans.
    fn name(&self) -> &'static str;

    /// Bring the world for `key` to what its object asks; `Ok(Some(d))` asks to be
    /// looked at again after `d` even if nothing changes.
    fn reconcile(&self, key: &Key) -> impl Future<Output = Result<Option<Duration>>> + Send;
}

/// Run `workers` workers over `queue` with `r`, re-queueing everything in
/// `resync` every `period`, until dropped.
pub async fn run<R: Reconciler>(
    r: Arc<R>,
    queue: Arc<Queue>,
    workers: usize,
    resync: impl Fn() -> Vec<Key> + Send + 'static,
    period: Duration,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (r, q) = (r.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                let key = q.next().await;
                let span = tracing::debug_span!("reconcile", controller = r.name(), key = %key);
                let out = {
                    use tracing::Instrument;
                    r.reconcile(&key).instrument(span).await
                };
                let out = match out {
                    Ok(after) => Ok(after),
                    Err(e) => {
                        tracing::debug!(controller = r.name(), key = %key, error = %e, "reconcile failed");
                        Err(())
                    }
                };
                q.done(key, out);
            }
        });
    }
    loop {
        tokio::time::sleep(period).await;
        for k in resync() {
            queue.add(k);
        }
    }
}

/// Enqueue the key of every object an informer reports.
pub fn enqueue_self<K>(queue: &Arc<Queue>) -> impl Fn(Option<&K>, &K) + Send + Sync + 'static
where
    K: Resource,
{
    let q = queue.clone();
    move |_, o| q.add(Key::of(o))
}

/// Keys of the controllers (`ownerReferences` with `controller: true`) of kind
/// `kind` of an object, before and after a change.
pub fn controller_keys<K: Resource>(old: Option<&K>, new: &K, kind: &str) -> Vec<Key> {
    let mut out = Vec::new();
    for o in old.into_iter().chain(std::iter::once(new)) {
        let ns = o.meta().namespace.as_deref().unwrap_or("");
        if let Some(r) = o
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true) && r.kind == kind)
        {
            let k = Key::new(ns, &r.name);
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    out
}

/// A kind with a status subresource a controller writes.
pub trait HasStatus: Kind + serde::Serialize {
    type Status: PartialEq + Clone;
    fn status_mut(&mut self) -> &mut Option<Self::Status>;
}

macro_rules! has_status {
    ($($k:ty => $s:ty),* $(,)?) => {$(
        impl HasStatus for $k {
            type Status = $s;
            fn status_mut(&mut self) -> &mut Option<$s> {
                &mut self.status
            }
        }
    )*};
}

has_status!(
    k8s_openapi::api::apps::v1::ReplicaSet => k8s_openapi::api::apps::v1::ReplicaSetStatus,
    k8s_openapi::api::apps::v1::Deployment => k8s_openapi::api::apps::v1::DeploymentStatus,
    k8s_openapi::api::apps::v1::DaemonSet => k8s_openapi::api::apps::v1::DaemonSetStatus,
    k8s_openapi::api::apps::v1::StatefulSet => k8s_openapi::api::apps::v1::StatefulSetStatus,
    k8s_openapi::api::batch::v1::Job => k8s_openapi::api::batch::v1::JobStatus,
    k8s_openapi::api::batch::v1::CronJob => k8s_openapi::api::batch::v1::CronJobStatus,
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler => k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus,
);

/// Replace `obj`'s status with `status` through the API, unless it is already that.
pub async fn write_status<K>(client: &kube::Client, obj: &K, status: K::Status) -> Result<()>
where
    K: HasStatus + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let mut new = obj.clone();
    if new.status_mut().as_ref() == Some(&status) {
        return Ok(());
    }
    *new.status_mut() = Some(status);
    let api: Api<K> = Api::namespaced(
        client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    api.replace_status(&obj.name_any(), &kube::api::PostParams::default(), &new)
        .await?;
    Ok(())
}

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
        q.done(first, Ok(None));
        assert_eq!(q.next().await, a);
    }

    #[tokio::test]
    async fn failures_retry_after_backoff() {
        let q = Queue::with_backoff(Duration::from_millis(20), Duration::from_secs(1));
        let a = Key::new("", "a");
        q.add(a.clone());
        let k = q.next().await;
        q.done(k, Err(()));
        assert!(q.is_empty());
        let again = tokio::time::timeout(Duration::from_secs(2), q.next()).await;
        assert_eq!(again.unwrap(), a);
    }

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
