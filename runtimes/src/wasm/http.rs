//! `wasi:http/proxy` components: a pre-instantiated component serves HTTP on a
//! listener, one fresh instance per request (pooling makes that cheap), so an
//! idle pod holds no instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use wasmtime::component::Component;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::ContainerSpec;

use super::command::{linker, pre_error};
use super::state::{GuestState, is_timeout, new_store, wasi_ctx};
use super::{WasmError, WasmRuntime};

/// Counters a pod's HTTP app keeps (for events and metrics). One set may be
/// shared by all HTTP containers of a pod.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub out_of_memory: AtomicU64,
    pub timeouts: AtomicU64,
    /// Requests being handled now.
    pub in_flight: AtomicU64,
    /// Nanoseconds spent in finished requests, summed (with `in_flight` and
    /// the start times this gives the average concurrency over a window).
    pub busy_ns: AtomicU64,
    /// Start of the requests in flight, summed, in nanoseconds since `epoch`.
    pub started_ns: AtomicU64,
    /// When the last request ended, in nanoseconds since `epoch` (0: none yet).
    pub last_end_ns: AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

impl HttpStats {
    /// The instant the nanosecond fields count from.
    pub fn epoch(&self) -> std::time::Instant {
        *self.epoch.get_or_init(std::time::Instant::now)
    }

    /// Nanoseconds since `epoch`.
    pub fn now_ns(&self) -> u64 {
        self.epoch().elapsed().as_nanos() as u64
    }

    /// Busy time up to now, in nanoseconds, the requests in flight included:
    /// its growth over a window divided by the window is the average
    /// concurrency.
    pub fn busy_now_ns(&self) -> u64 {
        let now = self.now_ns();
        let flying = self.in_flight.load(Ordering::Acquire);
        let started = self.started_ns.load(Ordering::Acquire);
        self.busy_ns
            .load(Ordering::Acquire)
            .saturating_add((flying * now).saturating_sub(started))
    }

    fn begin(&self) -> u64 {
        let t = self.now_ns();
        self.started_ns.fetch_add(t, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        t
    }

    fn end(&self, began: u64) {
        let t = self.now_ns();
        self.busy_ns
            .fetch_add(t.saturating_sub(began), Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.started_ns.fetch_sub(began, Ordering::AcqRel);
        self.last_end_ns.fetch_max(t.max(1), Ordering::AcqRel);
    }
}

/// Ends a request's accounting however the handler finishes (even when the
/// connection goes away and the future is dropped).
struct InFlight<'a>(&'a HttpStats, u64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.end(self.1);
    }
}

/// One pod's HTTP component, ready to serve.
#[derive(Clone)]
pub struct HttpApp {
    pre: ProxyPre<GuestState>,
    rt: WasmRuntime,
    spec: Arc<ContainerSpec>,
    log: Arc<std::fs::File>,
    /// Where the guest's outgoing requests leave from.
    egress: Option<Arc<super::egress::Route>>,
    pub stats: Arc<HttpStats>,
    /// Slots for requests in flight (the pod's concurrency cap).
    slots: Arc<tokio::sync::Semaphore>,
    /// Linear memory of all this container's instances, in bytes (its
    /// memory limit is their budget together).
    in_use: Arc<AtomicU64>,
}

/// Requests one HTTP container handles at once unless its pod says
/// otherwise (`skiff.dev/max-concurrent-requests`): one pod cannot take the
/// node's whole instance pool.
pub const DEFAULT_MAX_CONCURRENCY: usize = 100;

/// Longest a request waits for a slot when its container sets no timeout.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl HttpApp {
    /// Prepare `component` (pre-instantiated once) with the pod's spec; the guest's
    /// stdout and stderr go to `log`.
    pub fn new(
        rt: &WasmRuntime,
        component: &Component,
        spec: ContainerSpec,
        log: std::fs::File,
        stats: Arc<HttpStats>,
    ) -> Result<HttpApp, WasmError> {
        if let Some(m) = spec.mounts.iter().find(|m| !m.host_path.is_dir()) {
            return Err(WasmError::Mount {
                reason: format!(
                    "{} (for {}) is not a directory",
                    m.host_path.display(),
                    m.guest_path
                ),
            });
        }
        let linker = linker(rt, true)?;
        let pre = linker.instantiate_pre(component).map_err(pre_error)?;
        let pre = ProxyPre::new(pre).map_err(pre_error)?;
        let cap = spec
            .max_concurrency
            .unwrap_or(DEFAULT_MAX_CONCURRENCY)
            .max(1);
        Ok(HttpApp {
            pre,
            rt: rt.clone(),
            egress: spec.netns.clone().map(|ns| {
                super::egress::Route::new(ns, spec.resolver.clone(), spec.trust_pem.clone())
            }),
            spec: Arc::new(spec),
            log: Arc::new(log),
            stats,
            slots: Arc::new(tokio::sync::Semaphore::new(cap)),
            in_use: Arc::default(),
        })
    }

    fn wasi(&self) -> wasmtime::Result<WasiCtx> {
        let out = self.log.try_clone()?;
        let err = self.log.try_clone()?;
        wasi_ctx(&self.spec, out, err)
    }

    /// Handle one request in a fresh instance. Guest failures become 500s.
    pub async fn handle(
        &self,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        let wait = self.spec.timeout.unwrap_or(SLOT_WAIT);
        let _slot = match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                return error_response(
                    503,
                    "the pod is handling as many requests as it may at once; try again",
                );
            }
        };
        let _flight = InFlight(&self.stats, self.stats.begin());
        let oom = Arc::new(std::sync::atomic::AtomicBool::new(false));
        match self.try_handle(req, oom.clone()).await {
            Ok(resp) => resp,
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                let (why, counter) = if oom.load(Ordering::Relaxed) {
                    (
                        "the component ran out of memory",
                        Some(&self.stats.out_of_memory),
                    )
                } else if is_timeout(&e) {
                    (
                        "the component ran past its time limit",
                        Some(&self.stats.timeouts),
                    )
                } else {
                    ("the component failed", None)
                };
                if let Some(c) = counter {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(container = %self.spec.name, error = %format!("{e:#}"), "{why}");
                error_response(500, why)
            }
        }
    }

    async fn try_handle(
        &self,
        req: hyper::Request<Incoming>,
        oom: Arc<std::sync::atomic::AtomicBool>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let mut store = new_store(self.rt.engine(), &self.spec, self.wasi()?);
        store.data_mut().limits.hit = oom;
        store.data_mut().limits.budget = Some(self.in_use.clone());
        store.data_mut().egress.route = self.egress.clone();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let task = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(wasmtime::format_err!("the component never set a response")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Serve HTTP/1.1 on `listener` until it fails, the future is dropped,
    /// or `stop` turns true. Then the server drains: the listener closes (no
    /// new connection), every response from then on says `Connection:
    /// close` so a client's next request goes to a new connection (another
    /// pod), connections that fall quiet are closed after [`LAME_DUCK`], and
    /// the future resolves once every connection has finished the request it
    /// was serving (the caller bounds the wait by the pod's grace period).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            let sock = tokio::select! {
                r = listener.accept() => r?.0,
                () = stopped(&mut stop) => break,
            };
            let app = self.clone();
            let watcher = graceful.watcher();
            let draining = draining.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (app, draining) = (app.clone(), draining.clone());
                    async move {
                        let mut resp = app.handle(req).await;
                        if draining.load(Ordering::Relaxed) {
                            resp.headers_mut().insert(
                                hyper::header::CONNECTION,
                                hyper::header::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
                let conn = builder.serve_connection(TokioIo::new(sock), svc);
                let _ = watcher.watch(conn).await;
            });
        }
        drop(listener);
        draining.store(true, Ordering::Relaxed);
        // Busy connections learn of the drain from their next response; the
        // ones still open after that are idle, and are closed.
        let quiet = tokio::time::Instant::now() + LAME_DUCK;
        while graceful.count() > 0 && tokio::time::Instant::now() < quiet {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        graceful.shutdown().await;
        Ok(())
    }
}

/// How long a draining server keeps its open connections for the requests
/// their clients are about to send (answered with `Connection: close`)
/// before it closes the idle ones.
pub const LAME_DUCK: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolves when `stop` turns true (never, if its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn error_response(code: u16, text: &str) -> hyper::Response<HyperOutgoingBody> {
    use http_body_util::BodyExt;
    let body = http_body_util::Full::new(bytes::Bytes::from(format!("{text}\n")))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut r = hyper::Response::new(body);
    *r.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}
