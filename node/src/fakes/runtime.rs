//! Probe results and a scripted runtime for pod worker tests.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use skiff_runtimes::oci::ExecOutput;
use skiff_runtimes::{
    Content, EndReason, RunRequest, RunStats, Running, Runtime, RuntimeError, Terminated,
};
use tokio::sync::watch;

use super::ready;
use crate::pod::probes::{Checker, Handler};

/// Probe results by port: a port not set passes.
#[derive(Default)]
pub struct FakeChecker {
    failing: Mutex<BTreeSet<u16>>,
}

impl FakeChecker {
    pub fn set(&self, port: u16, ok: bool) {
        let mut f = self.failing.lock().expect("checker");
        if ok {
            f.remove(&port);
        } else {
            f.insert(port);
        }
    }
}

impl Checker for FakeChecker {
    fn check<'a>(
        &'a self,
        _ip: IpAddr,
        h: &'a Handler,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), String>> {
        let port = match h {
            Handler::Tcp { port } => *port,
            _ => 0,
        };
        let failing = self.failing.lock().expect("checker").contains(&port);
        ready(if failing {
            Err(format!("port {port} refused"))
        } else {
            Ok(())
        })
    }
}

/// One start the fake runtime saw.
#[derive(Debug, Clone)]
pub struct Start {
    pub container: String,
    pub at: Instant,
}

/// A runtime whose "component" is a script in the layer bytes:
/// `serve` (runs until stopped), `stubborn` (ignores the polite stop: ends
/// only when the grace period is over), `exit CODE MS` (exits after MS
/// milliseconds), `fail REASON` (the start fails: `config`, `create`, `run`).
#[derive(Clone, Default)]
pub struct FakeRuntime {
    pub starts: Arc<Mutex<Vec<Start>>>,
    /// (container, grace) of every stop.
    pub stops: Arc<Mutex<Vec<(String, Duration)>>>,
}

impl FakeRuntime {
    pub fn starts_of(&self, container: &str) -> usize {
        self.starts
            .lock()
            .expect("starts")
            .iter()
            .filter(|s| s.container == container)
            .count()
    }

    pub fn order(&self) -> Vec<String> {
        self.starts
            .lock()
            .expect("starts")
            .iter()
            .map(|s| s.container.clone())
            .collect()
    }
}

impl Runtime for FakeRuntime {
    fn handler(&self) -> &'static str {
        "wasmtime"
    }

    fn accepts(&self, content: &Content) -> Result<(), RuntimeError> {
        match content {
            Content::Wasm { .. } => Ok(()),
            Content::Oci(_) => Err(RuntimeError::NotMine("not a script".into())),
        }
    }

    fn start<'a>(
        &'a self,
        content: &'a Content,
        req: RunRequest,
    ) -> BoxFuture<'a, Result<Arc<dyn Running>, RuntimeError>> {
        Box::pin(async move {
            self.accepts(content)?;
            let Content::Wasm { bytes, .. } = content else {
                return Err(RuntimeError::NotMine("not a script".into()));
            };
            let script = String::from_utf8_lossy(bytes).to_string();
            let words: Vec<&str> = script.split_whitespace().collect();
            self.starts.lock().expect("starts").push(Start {
                container: req.container.clone(),
                at: Instant::now(),
            });
            let (tx, done) = watch::channel(None);
            let stubborn = words.first() == Some(&"stubborn");
            match words.as_slice() {
                ["fail", "config"] => Err(RuntimeError::Config("bad config".into())),
                ["fail", "create"] => Err(RuntimeError::Create("cannot create".into())),
                ["fail", _] => Err(RuntimeError::Run("will not run".into())),
                ["exit", code, ms] => {
                    let code: i32 = code.parse().unwrap_or(1);
                    let ms: u64 = ms.parse().unwrap_or(0);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let _ = tx.send(Some(Terminated {
                            exit_code: code,
                            reason: if code == 0 {
                                EndReason::Completed
                            } else {
                                EndReason::Error
                            },
                            message: None,
                            event: None,
                        }));
                    });
                    Ok(Arc::new(FakeRun {
                        name: req.container,
                        done,
                        tx: None,
                        stubborn,
                        stops: self.stops.clone(),
                    }) as Arc<dyn Running>)
                }
                _ => Ok(Arc::new(FakeRun {
                    name: req.container,
                    done,
                    tx: Some(tx),
                    stubborn,
                    stops: self.stops.clone(),
                }) as Arc<dyn Running>),
            }
        })
    }
}

type Ended = Option<Terminated>;

struct FakeRun {
    name: String,
    done: watch::Receiver<Ended>,
    tx: Option<watch::Sender<Ended>>,
    stubborn: bool,
    stops: Arc<Mutex<Vec<(String, Duration)>>>,
}

impl Running for FakeRun {
    fn wait(&self) -> BoxFuture<'_, Result<Terminated, RuntimeError>> {
        let mut rx = self.done.clone();
        Box::pin(async move {
            let ended = rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|v| v.clone());
            match ended {
                Some(t) => Ok(t),
                // The run was dropped: it never ends by itself.
                None => std::future::pending().await,
            }
        })
    }

    fn stop<'a>(&'a self, grace: Duration, pre_stop: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        self.stops
            .lock()
            .expect("stops")
            .push((self.name.clone(), grace));
        Box::pin(async move {
            pre_stop.await;
            if self.stubborn {
                tokio::time::sleep(grace).await;
            }
            if let Some(tx) = &self.tx {
                let _ = tx.send(Some(Terminated {
                    exit_code: 137,
                    reason: EndReason::Error,
                    message: None,
                    event: None,
                }));
            }
        })
    }

    fn remove(&self) -> BoxFuture<'_, ()> {
        ready(())
    }

    fn stats(&self) -> RunStats {
        RunStats::default()
    }

    fn exec<'a>(
        &'a self,
        _command: &'a [String],
        _scratch: &'a Path,
    ) -> BoxFuture<'a, Result<ExecOutput, RuntimeError>> {
        ready(Err(RuntimeError::Unsupported("no processes".into())))
    }
}
