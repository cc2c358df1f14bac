//! The controller loop (kube-runtime's `Controller` is the model): wait until
//! the caches a reconciler reads have synced, then run workers that take keys
//! from the queue, reconcile them in a tracing span, and do what the
//! reconciler's `Action` (or, on failure, its error policy) says; every key of
//! the resync set is queued again each period.
//!
//! **No reconcile starts before every cache in `after_sync` has synced; a
//! failing key is retried with capped exponential back-off, and its count
//! resets on the first success.**

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::informer::Informer;
use super::queue::{Queue, backoff};
use super::{ControllerError, Key, Result};

/// How often every key of the resync set is reconciled even when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(30);
/// First retry of a failed reconcile, doubling per failure in a row up to `RETRY_CAP`.
pub const RETRY_BASE: Duration = Duration::from_millis(100);
pub const RETRY_CAP: Duration = Duration::from_secs(60);

/// What to do with a key after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Look again after `d` even if nothing changes.
    pub fn requeue(d: Duration) -> Action {
        Action {
            requeue_after: Some(d),
        }
    }

    /// Look again only when a watched object changes (or at the next resync).
    pub fn await_change() -> Action {
        Action {
            requeue_after: None,
        }
    }

    /// `requeue(d)` when `d` is some, else `await_change`.
    pub fn requeue_opt(d: Option<Duration>) -> Action {
        Action { requeue_after: d }
    }

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// A controller: reconciles one key at a time from its queue.
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name in logs and spans.
    fn name(&self) -> &'static str;

    /// Bring the world for `key` to what its object asks, and say when to look
    /// again.
    fn reconcile(&self, key: &Key) -> impl Future<Output = Result<Action>> + Send;

    /// What to do after the `failures`-th failure in a row of `key`: by
    /// default retry after `RETRY_BASE * 2^(failures-1)`, at most `RETRY_CAP`.
    fn error_policy(&self, key: &Key, error: &ControllerError, failures: u32) -> Action {
        tracing::debug!(controller = self.name(), key = %key, error = %error, failures, "reconcile failed");
        Action::requeue(backoff(RETRY_BASE, RETRY_CAP, failures))
    }
}

/// A cache a controller waits for before its first reconcile.
pub struct Ready(Box<dyn Fn() -> BoxFuture<'static, ()> + Send>);

impl<K> From<&Arc<Informer<K>>> for Ready
where
    K: kube::Resource
        + kube::runtime::reflector::Lookup
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    <K as kube::runtime::reflector::Lookup>::DynamicType:
        Eq + std::hash::Hash + Clone + Send + Sync,
{
    fn from(i: &Arc<Informer<K>>) -> Ready {
        let i = i.clone();
        Ready(Box::new(move || {
            let i = i.clone();
            Box::pin(async move { i.synced().await })
        }))
    }
}

type Resync = Box<dyn Fn() -> Vec<Key> + Send>;

/// A reconciler, its queue, how many workers it gets, the caches it waits
/// for and its resync set.
pub struct Controller<R: Reconciler> {
    reconciler: Arc<R>,
    queue: Arc<Queue>,
    workers: usize,
    ready: Vec<Ready>,
    resync: Resync,
    period: Duration,
}

impl<R: Reconciler> Controller<R> {
    /// One worker, no caches to wait for, nothing to resync.
    pub fn new(reconciler: Arc<R>, queue: Arc<Queue>) -> Controller<R> {
        Controller {
            reconciler,
            queue,
            workers: 1,
            ready: Vec::new(),
            resync: Box::new(Vec::new),
            period: RESYNC,
        }
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Wait for these caches before the first reconcile.
    pub fn after_sync(mut self, ready: Vec<Ready>) -> Self {
        self.ready.extend(ready);
        self
    }

    /// Queue every key `keys` returns every `RESYNC`.
    pub fn resync(mut self, keys: impl Fn() -> Vec<Key> + Send + 'static) -> Self {
        self.resync = Box::new(keys);
        self
    }

    /// Run until dropped.
    pub async fn run(self) {
        let Controller {
            reconciler: r,
            queue,
            workers,
            ready,
            resync,
            period,
        } = self;
        for c in ready {
            (c.0)().await;
        }
        tracing::debug!(controller = r.name(), "caches synced; starting workers");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (r, q) = (r.clone(), queue.clone());
            tasks.spawn(async move {
                loop {
                    let key = q.next().await;
                    let action = reconcile_one(r.as_ref(), &q, &key).await;
                    q.done(key, action.requeue_after());
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
}

/// Reconcile `key` in its span; on failure, count it and ask the error policy.
async fn reconcile_one<R: Reconciler>(r: &R, q: &Queue, key: &Key) -> Action {
    use tracing::Instrument;
    let span = tracing::debug_span!("reconcile", controller = r.name(), key = %key);
    match r.reconcile(key).instrument(span).await {
        Ok(action) => {
            q.forget(key);
            action
        }
        Err(e) => {
            let n = q.record_failure(key);
            r.error_policy(key, &e, n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails its first two reconciles of each key, then asks to be left alone.
    struct Flaky {
        seen: Mutex<Vec<(Key, bool)>>,
    }

    impl Reconciler for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn reconcile(&self, key: &Key) -> Result<Action> {
            let mut seen = self.seen.lock().unwrap();
            let tries = seen.iter().filter(|(k, _)| k == key).count();
            let fail = tries < 2;
            seen.push((key.clone(), fail));
            if fail {
                return Err(ControllerError::Invalid("not yet".into()));
            }
            Ok(Action::await_change())
        }
        fn error_policy(&self, _: &Key, _: &ControllerError, failures: u32) -> Action {
            Action::requeue(backoff(
                Duration::from_millis(5),
                Duration::from_millis(50),
                failures,
            ))
        }
    }

    #[tokio::test]
    async fn failures_follow_the_error_policy_until_success() {
        let r = Arc::new(Flaky {
            seen: Mutex::new(Vec::new()),
        });
        let q = Queue::new();
        let a = Key::new("ns", "a");
        q.add(a.clone());
        let run = tokio::spawn(Controller::new(r.clone(), q.clone()).workers(2).run());
        tokio::time::sleep(Duration::from_millis(300)).await;
        run.abort();
        let seen = r.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![(a.clone(), true), (a.clone(), true), (a.clone(), false)],
            "two failures retried, then one success and no more"
        );
        // The success reset the failure count.
        assert_eq!(q.record_failure(&a), 1);
    }

    #[test]
    fn actions() {
        let d = Duration::from_secs(3);
        assert_eq!(Action::requeue(d).requeue_after(), Some(d));
        assert_eq!(Action::await_change().requeue_after(), None);
        assert_eq!(Action::requeue_opt(Some(d)), Action::requeue(d));
        assert_eq!(Action::requeue_opt(None), Action::await_change());
    }

    #[tokio::test]
    async fn no_reconcile_before_the_caches_sync() {
        use k8s_openapi::api::core::v1::Pod;
        let r = Arc::new(Flaky {
            seen: Mutex::new(Vec::new()),
        });
        let q = Queue::new();
        q.add(Key::new("ns", "a"));
        let pods: Arc<Informer<Pod>> =
            Informer::new(kube::Api::all(crate::controllers::bench::no_api()));
        let run = tokio::spawn(
            Controller::new(r.clone(), q.clone())
                .after_sync(vec![(&pods).into()])
                .run(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(r.seen.lock().unwrap().is_empty(), "waits for the pod cache");
        pods.seed(Vec::new());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!r.seen.lock().unwrap().is_empty(), "runs once it synced");
        run.abort();
    }
}
