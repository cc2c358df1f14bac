//! The Wasm runtime behind the [`Runtime`] trait: a component is compiled
//! (cached), its world decides whether it is served per request on the pod's
//! ports or run as a command, and both run on the pod's sandbox threads.
//!
//! **A run's end is observed once, by one monitor task; every `wait` sees
//! that same end.**

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{Component, HttpApp, HttpStats, WasmError, WasmRuntime, World, run_command, world};
use crate::runtime::{
    Content, EndReason, RunEvent, RunRequest, RunStats, Running, Runtime, RuntimeError, Terminated,
};
use crate::{ContainerSpec, Exit};

/// The RuntimeClass handler of Wasm pods.
pub const HANDLER: &str = "wasmtime";

/// How long a stop waits for an aborted guest to unwind.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Runtime for WasmRuntime {
    fn handler(&self) -> &'static str {
        HANDLER
    }

    fn accepts(&self, content: &Content) -> Result<(), RuntimeError> {
        match content {
            Content::Wasm { .. } => Ok(()),
            Content::Oci(_) => Err(RuntimeError::NotMine(
                "a container image is not a Wasm component".into(),
            )),
        }
    }

    fn start<'a>(
        &'a self,
        content: &'a Content,
        req: RunRequest,
    ) -> BoxFuture<'a, Result<Arc<dyn Running>, RuntimeError>> {
        Box::pin(async move {
            self.accepts(content)?;
            let Content::Wasm {
                layer_digest,
                bytes,
            } = content
            else {
                return Err(RuntimeError::NotMine("not a Wasm component".into()));
            };
            let t = std::time::Instant::now();
            let (wasm, digest, bytes) = (self.clone(), layer_digest.clone(), bytes.clone());
            let loaded = tokio::task::spawn_blocking(move || {
                let c = wasm.load(&digest, &bytes)?;
                let w = world(&wasm, &c)?;
                Ok::<_, WasmError>((c, w))
            })
            .await;
            let (component, kind) = match loaded {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return Err(RuntimeError::Create(e.to_string())),
                Err(e) => return Err(RuntimeError::Create(format!("compile: {e}"))),
            };
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "component loaded");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&req.log)
                .map_err(|e| RuntimeError::Create(format!("open log file: {e}")))?;
            let mut spec = req.spec.clone();
            match kind {
                World::Http => {
                    spec.timeout = Some(req.request_timeout);
                    self.serve(&component, spec, log, &req).await
                }
                World::Command => {
                    spec.timeout = req.deadline;
                    self.command(component, spec, log, &req)
                }
            }
        })
    }
}

impl WasmRuntime {
    /// Listen on the request's ports inside the sandbox and serve each request
    /// in a fresh instance.
    async fn serve(
        &self,
        component: &Component,
        spec: ContainerSpec,
        log: std::fs::File,
        req: &RunRequest,
    ) -> Result<Arc<dyn Running>, RuntimeError> {
        let app = HttpApp::new(self, component, spec, log, req.http_stats.clone())
            .map_err(|e| RuntimeError::Create(e.to_string()))?;
        let ports = req.ports.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = watch::channel(false);
        let served = app.clone();
        let task = req.sandbox.spawn(async move {
            let mut listeners = Vec::new();
            for p in &ports {
                match tokio::net::TcpListener::bind(("0.0.0.0", *p)).await {
                    Ok(l) => listeners.push(l),
                    Err(e) => {
                        let _ = tx.send(Err(format!("listen on port {p}: {e}")));
                        return Err(format!("listen on port {p}: {e}"));
                    }
                }
            }
            let _ = tx.send(Ok(()));
            let mut set = tokio::task::JoinSet::new();
            for l in listeners {
                set.spawn(served.clone().serve(l, stop_rx.clone()));
            }
            // Every listener drained after a stop: a clean end; any other
            // end of one of them is the server's failure.
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(())) if *stop_rx.borrow() => {}
                    Ok(Err(e)) => return Err(format!("accept: {e}")),
                    _ => return Err("the server stopped".to_string()),
                }
            }
            Ok(())
        });
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RuntimeError::Run(e)),
            Err(_) => return Err(RuntimeError::Run("the pod sandbox stopped".into())),
        }
        let mut run = WasmRun::watch(task, Some(app.stats.clone()), |r| {
            let why = match r {
                Ok(Ok(())) => {
                    return Ok(Terminated {
                        exit_code: 0,
                        reason: EndReason::Completed,
                        message: None,
                        event: None,
                    });
                }
                Ok(Err(why)) => why,
                Err(e) => format!("server task: {e}"),
            };
            Ok(Terminated {
                exit_code: 1,
                reason: EndReason::Error,
                message: Some(why),
                event: None,
            })
        });
        run.drain = Some(stop_tx);
        Ok(Arc::new(run))
    }

    /// Run a command component to its exit on the sandbox.
    fn command(
        &self,
        component: Component,
        spec: ContainerSpec,
        log: std::fs::File,
        req: &RunRequest,
    ) -> Result<Arc<dyn Running>, RuntimeError> {
        let err = log
            .try_clone()
            .map_err(|e| RuntimeError::Create(format!("log file: {e}")))?;
        let rt = self.clone();
        let task = req
            .sandbox
            .spawn(async move { run_command(&rt, &component, &spec, log, err).await });
        let name = req.container.clone();
        let run = WasmRun::watch(task, None, move |r| {
            let exit = match r {
                Ok(Ok(exit)) => exit,
                Ok(Err(e)) => return Err(RuntimeError::Create(e.to_string())),
                Err(e) => Exit::Trapped(format!("the command task ended: {e}")),
            };
            Ok(terminated(&exit, &name))
        });
        Ok(Arc::new(run))
    }
}

/// How a command's exit shows in the container's status.
pub fn terminated(exit: &Exit, container: &str) -> Terminated {
    let (reason, exit_code) = exit.end();
    let message = match exit {
        Exit::Trapped(t) => Some(t.clone()),
        Exit::OutOfMemory => Some("the component tried to grow memory past limits.memory".into()),
        Exit::TimedOut => Some("the pod ran past activeDeadlineSeconds".into()),
        Exit::Code(_) => None,
    };
    let event = (*exit == Exit::OutOfMemory).then(|| RunEvent {
        reason: "OOMKilled",
        message: format!("container {container} stopped at its memory limit"),
    });
    Terminated {
        exit_code,
        reason,
        message,
        event,
    }
}

type Ended = Option<Result<Terminated, RuntimeError>>;

/// A Wasm guest running on the sandbox, watched by one monitor task.
struct WasmRun {
    abort: tokio::task::AbortHandle,
    done: watch::Receiver<Ended>,
    stats: Option<Arc<HttpStats>>,
    monitor: tokio::task::JoinHandle<()>,
    /// An HTTP server's graceful stop: its listeners close and its
    /// connections finish the requests they serve.
    drain: Option<watch::Sender<bool>>,
}

impl WasmRun {
    fn watch<T: Send + 'static>(
        task: tokio::task::JoinHandle<T>,
        stats: Option<Arc<HttpStats>>,
        end: impl FnOnce(Result<T, tokio::task::JoinError>) -> Result<Terminated, RuntimeError>
        + Send
        + 'static,
    ) -> WasmRun {
        let abort = task.abort_handle();
        let (tx, done) = watch::channel(None);
        let monitor = tokio::spawn(async move {
            let r = task.await;
            let _ = tx.send(Some(end(r)));
        });
        WasmRun {
            abort,
            done,
            stats,
            monitor,
            drain: None,
        }
    }
}

impl Drop for WasmRun {
    fn drop(&mut self) {
        self.abort.abort();
        self.monitor.abort();
    }
}

impl Running for WasmRun {
    fn wait(&self) -> BoxFuture<'_, Result<Terminated, RuntimeError>> {
        let mut rx = self.done.clone();
        Box::pin(async move {
            match rx.wait_for(Option::is_some).await {
                Ok(v) => v
                    .clone()
                    .unwrap_or_else(|| Err(RuntimeError::Run("the run ended".into()))),
                Err(_) => Err(RuntimeError::Run("the run's monitor ended".into())),
            }
        })
    }

    /// As the kubelet stops a container: the `preStop` hook, then the
    /// "SIGTERM" of a Wasm server (its listeners close, requests in flight
    /// finish), all within `grace`; what is still running then is aborted.
    /// A command component has nothing to signal: it is aborted after the
    /// hook.
    fn stop<'a>(&'a self, grace: Duration, pre_stop: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        let mut rx = self.done.clone();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + grace;
            if rx.borrow().is_none() {
                let _ = tokio::time::timeout_at(deadline, pre_stop).await;
            }
            if let Some(drain) = &self.drain {
                let _ = drain.send(true);
                let _ = tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await;
            }
            self.abort.abort();
            let _ = tokio::time::timeout(STOP_WAIT, rx.wait_for(Option::is_some)).await;
        })
    }

    fn remove(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn stats(&self) -> RunStats {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats
            .as_ref()
            .map(|s| RunStats {
                out_of_memory: s.out_of_memory.load(Relaxed),
                timeouts: s.timeouts.load(Relaxed),
            })
            .unwrap_or_default()
    }

    fn serves_http(&self) -> bool {
        self.stats.is_some()
    }
}
