//! The OCI runtime behind the [`Runtime`] trait: import the image, build the
//! container's spec from the image's defaults (through the agent's
//! [`crate::runtime::ResolveSpec`]), create and start the task, and stop it
//! with SIGTERM, the grace period and SIGKILL.
//!
//! **A task is waited for by one monitor task; its OOM state is read when it
//! exits, before anything removes its cgroup.**

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{ExecOutput, OciError, OciRuntime, Task};
use crate::runtime::{
    Content, RunEvent, RunRequest, RunStats, Running, Runtime, RuntimeError, Terminated,
};

/// The RuntimeClass handler of container pods.
pub const HANDLER: &str = "runc";

impl Runtime for OciRuntime {
    fn handler(&self) -> &'static str {
        HANDLER
    }

    fn accepts(&self, content: &Content) -> Result<(), RuntimeError> {
        match content {
            Content::Oci(_) => Ok(()),
            Content::Wasm { .. } => Err(RuntimeError::NotMine(
                "a Wasm component is not a container image".into(),
            )),
        }
    }

    fn start<'a>(
        &'a self,
        content: &'a Content,
        req: RunRequest,
    ) -> BoxFuture<'a, Result<Arc<dyn Running>, RuntimeError>> {
        Box::pin(async move {
            let Content::Oci(image) = content else {
                return Err(RuntimeError::NotMine("not a container image".into()));
            };
            let create = |e: OciError| RuntimeError::Create(e.to_string());
            let defaults = image.defaults().map_err(create)?;
            let parent = self.import(image).await.map_err(create)?;
            let spec = req.resolve.resolve(&defaults)?;
            let task = match self
                .create(&spec, &image.reference, &parent, &req.log)
                .await
            {
                Ok(t) => t,
                // runc refused to start the process (no such command, bad user…).
                Err(
                    e @ OciError::Call {
                        call: "task create",
                        ..
                    },
                ) => return Err(RuntimeError::Run(e.to_string())),
                Err(e) => return Err(create(e)),
            };
            if let Err(e) = task.start().await {
                let _ = task.remove().await;
                return Err(RuntimeError::Run(e.to_string()));
            }
            Ok(Arc::new(OciRun::watch(task, req.container)) as Arc<dyn Running>)
        })
    }
}

type Ended = Option<Result<Terminated, RuntimeError>>;

/// A started containerd task and the monitor that waits for its exit.
struct OciRun {
    task: Task,
    done: watch::Receiver<Ended>,
    monitor: tokio::task::JoinHandle<()>,
}

impl OciRun {
    fn watch(task: Task, container: String) -> OciRun {
        let (tx, done) = watch::channel(None);
        let t = task.clone();
        let monitor = tokio::spawn(async move {
            let ended = match t.wait().await {
                Ok(status) => {
                    let oom = t.oom_killed();
                    Ok(Terminated {
                        exit_code: status as i32,
                        reason: match (oom, status) {
                            (true, _) => "OOMKilled",
                            (false, 0) => "Completed",
                            _ => "Error",
                        },
                        message: None,
                        event: oom.then(|| RunEvent {
                            reason: "OOMKilling",
                            message: format!(
                                "container {container} was killed at its memory limit"
                            ),
                        }),
                    })
                }
                Err(e) => Err(RuntimeError::Run(e.to_string())),
            };
            let _ = tx.send(Some(ended));
        });
        OciRun {
            task,
            done,
            monitor,
        }
    }

    async fn ended(&self) -> Result<Terminated, RuntimeError> {
        let mut rx = self.done.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v
                .clone()
                .unwrap_or_else(|| Err(RuntimeError::Run("wait: the task ended".into()))),
            Err(_) => Err(RuntimeError::Run("wait: the monitor ended".into())),
        }
    }
}

impl Drop for OciRun {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

impl Running for OciRun {
    fn wait(&self) -> BoxFuture<'_, Result<Terminated, RuntimeError>> {
        Box::pin(self.ended())
    }

    /// The hook (the agent bounds it by the grace period), SIGTERM, then
    /// SIGKILL once the grace period is over (at least 2 s after SIGTERM, as
    /// the kubelet gives).
    fn stop<'a>(&'a self, grace: Duration, pre_stop: BoxFuture<'a, ()>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let start = tokio::time::Instant::now();
            pre_stop.await;
            let _ = self.task.signal(15).await;
            let left = grace
                .saturating_sub(start.elapsed())
                .max(Duration::from_secs(2));
            if tokio::time::timeout(left, self.ended()).await.is_err() {
                let _ = self.task.signal(9).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), self.ended()).await;
            }
        })
    }

    fn remove(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.task.remove().await {
                tracing::warn!(container = %self.task.id, error = %e, "container clean-up failed");
            }
        })
    }

    fn stats(&self) -> RunStats {
        RunStats::default()
    }

    fn can_exec(&self) -> bool {
        true
    }

    fn exec<'a>(
        &'a self,
        command: &'a [String],
        scratch: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<ExecOutput, RuntimeError>> {
        Box::pin(async move {
            self.task
                .exec(command, scratch)
                .await
                .map_err(|e| RuntimeError::Run(e.to_string()))
        })
    }
}
