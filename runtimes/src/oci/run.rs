//! The OCI runtime behind the [`Runtime`] trait: import the image, build the
//! container's spec from the image's defaults (through the agent's
//! [`crate::runtime::ResolveSpec`]), create and start the task, and stop it
//! with SIGTERM, the grace period and SIGKILL. The containerd calls go
//! through [`Containerd`] and [`TaskOps`], whose real implementation is
//! [`OciRuntime`] and [`Task`].
//!
//! **A task is waited for by one monitor task; its OOM state is read when it
//! exits, before anything removes its cgroup. A task that was created and
//! would not start is removed before the start returns.**

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{ExecOutput, OciContainer, OciError, OciImage, OciRuntime, Task};
use crate::runtime::{
    Content, EndReason, RunEvent, RunRequest, RunStats, Running, Runtime, RuntimeError, Terminated,
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
        Box::pin(start_on(self, content, req))
    }

    fn sweep<'a>(&'a self, keep: &'a (dyn Fn(&str) -> bool + Sync)) -> BoxFuture<'a, ()> {
        Box::pin(OciRuntime::sweep(self, keep))
    }
}

/// The containerd calls a run makes: import an image, create a container
/// and its task.
pub trait Containerd: Send + Sync {
    /// Write the image into containerd and unpack it; the snapshot parent.
    fn import<'a>(&'a self, image: &'a OciImage) -> BoxFuture<'a, Result<String, OciError>>;
    /// Create the container and its task (not started), output to `log`.
    fn create<'a>(
        &'a self,
        c: &'a OciContainer,
        image: &'a str,
        parent: &'a str,
        log: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Arc<dyn TaskOps>, OciError>>;
    /// The container's task if it still runs from an earlier run of the
    /// agent, with the same image.
    fn adopt<'a>(
        &'a self,
        c: &'a OciContainer,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<dyn TaskOps>>, OciError>>;
}

/// The calls on one created task.
pub trait TaskOps: Send + Sync {
    fn id(&self) -> &str;
    fn start(&self) -> BoxFuture<'_, Result<(), OciError>>;
    /// Wait for the exit; its status (128 + signal when killed).
    fn wait(&self) -> BoxFuture<'_, Result<u32, OciError>>;
    fn signal(&self, signal: u32) -> BoxFuture<'_, Result<(), OciError>>;
    /// Whether the OOM killer killed a process of it (read before removal).
    fn oom_killed(&self) -> bool;
    /// Remove the task, record and snapshot.
    fn remove(&self) -> BoxFuture<'_, Result<(), OciError>>;
    fn exec<'a>(
        &'a self,
        args: &'a [String],
        scratch: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<ExecOutput, OciError>>;
}

impl Containerd for OciRuntime {
    fn import<'a>(&'a self, image: &'a OciImage) -> BoxFuture<'a, Result<String, OciError>> {
        Box::pin(OciRuntime::import(self, image))
    }

    fn create<'a>(
        &'a self,
        c: &'a OciContainer,
        image: &'a str,
        parent: &'a str,
        log: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Arc<dyn TaskOps>, OciError>> {
        Box::pin(async move {
            let t = OciRuntime::create(self, c, image, parent, log).await?;
            Ok(Arc::new(t) as Arc<dyn TaskOps>)
        })
    }

    fn adopt<'a>(
        &'a self,
        c: &'a OciContainer,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<dyn TaskOps>>, OciError>> {
        Box::pin(async move {
            let t = OciRuntime::adopt(self, c, image).await?;
            Ok(t.map(|t| Arc::new(t) as Arc<dyn TaskOps>))
        })
    }
}

impl TaskOps for Task {
    fn id(&self) -> &str {
        &self.id
    }
    fn start(&self) -> BoxFuture<'_, Result<(), OciError>> {
        Box::pin(Task::start(self))
    }
    fn wait(&self) -> BoxFuture<'_, Result<u32, OciError>> {
        Box::pin(Task::wait(self))
    }
    fn signal(&self, signal: u32) -> BoxFuture<'_, Result<(), OciError>> {
        Box::pin(Task::signal(self, signal))
    }
    fn oom_killed(&self) -> bool {
        Task::oom_killed(self)
    }
    fn remove(&self) -> BoxFuture<'_, Result<(), OciError>> {
        Box::pin(Task::remove(self))
    }
    fn exec<'a>(
        &'a self,
        args: &'a [String],
        scratch: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<ExecOutput, OciError>> {
        Box::pin(Task::exec(self, args, scratch))
    }
}

/// Start one run of a container image on `api`.
pub async fn start_on(
    api: &dyn Containerd,
    content: &Content,
    req: RunRequest,
) -> Result<Arc<dyn Running>, RuntimeError> {
    let Content::Oci(image) = content else {
        return Err(RuntimeError::NotMine("not a container image".into()));
    };
    let create = |e: OciError| RuntimeError::Create(e.to_string());
    let defaults = image.defaults().map_err(create)?;
    let parent = api.import(image).await.map_err(create)?;
    let spec = req.resolve.resolve(&defaults)?;
    // Still running from before the agent restarted: watch it again.
    match api.adopt(&spec, &image.reference).await {
        Ok(Some(task)) => {
            tracing::info!(container = %spec.id, "adopted a container still running from before");
            return Ok(Arc::new(OciRun::watch(task, req.container)) as Arc<dyn Running>);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(container = %spec.id, error = %e, "cannot look for a running container to adopt")
        }
    }
    let task = match api.create(&spec, &image.reference, &parent, &req.log).await {
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
}

type Ended = Option<Result<Terminated, RuntimeError>>;

/// A started containerd task and the monitor that waits for its exit.
struct OciRun {
    task: Arc<dyn TaskOps>,
    done: watch::Receiver<Ended>,
    monitor: tokio::task::JoinHandle<()>,
}

impl OciRun {
    fn watch(task: Arc<dyn TaskOps>, container: String) -> OciRun {
        let (tx, done) = watch::channel(None);
        let t = task.clone();
        let monitor = tokio::spawn(async move {
            let ended = match t.wait().await {
                Ok(status) => {
                    let oom = t.oom_killed();
                    Ok(Terminated {
                        exit_code: status as i32,
                        reason: match (oom, status) {
                            (true, _) => EndReason::OomKilled,
                            (false, 0) => EndReason::Completed,
                            _ => EndReason::Error,
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
                tracing::warn!(container = %self.task.id(), error = %e, "container clean-up failed");
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

#[cfg(test)]
mod tests {
    //! The OCI run over a recording containerd that can fail any call.

    use std::sync::Mutex;

    use super::*;
    use crate::oci::Blob;
    use crate::oci::unpack::ImageDefaults;
    use crate::runtime::ResolveSpec;

    /// containerd in memory: the calls made, the containers that exist, and
    /// which call fails.
    #[derive(Clone, Default)]
    struct FakeContainerd {
        calls: Arc<Mutex<Vec<String>>>,
        containers: Arc<Mutex<Vec<String>>>,
        fail: Arc<Mutex<Option<(&'static str, OciError)>>>,
        /// What a task's wait returns, and whether it waits for a signal.
        exit: Arc<Mutex<(u32, bool)>>,
        oom: bool,
        signalled: Arc<tokio::sync::Notify>,
        /// Containers whose task still runs from an earlier agent.
        running: Arc<Mutex<Vec<String>>>,
    }

    fn refused(call: &'static str) -> OciError {
        OciError::Call {
            call,
            status: "refused".into(),
        }
    }

    impl FakeContainerd {
        fn failing(call: &'static str, e: OciError) -> FakeContainerd {
            let f = FakeContainerd::default();
            *f.fail.lock().unwrap() = Some((call, e));
            f
        }

        fn call(&self, what: &'static str) -> Result<(), OciError> {
            self.calls.lock().unwrap().push(what.to_string());
            match &*self.fail.lock().unwrap() {
                Some((c, e)) if *c == what => Err(match e {
                    OciError::Call { call, status } => OciError::Call {
                        call,
                        status: status.clone(),
                    },
                    other => OciError::Spec(other.to_string()),
                }),
                _ => Ok(()),
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Containerd for FakeContainerd {
        fn import<'a>(&'a self, _: &'a OciImage) -> BoxFuture<'a, Result<String, OciError>> {
            Box::pin(async move { self.call("import").map(|()| "sha256:parent".into()) })
        }

        fn create<'a>(
            &'a self,
            c: &'a OciContainer,
            _image: &'a str,
            _parent: &'a str,
            _log: &'a std::path::Path,
        ) -> BoxFuture<'a, Result<Arc<dyn TaskOps>, OciError>> {
            Box::pin(async move {
                self.call("task create")?;
                self.containers.lock().unwrap().push(c.id.clone());
                Ok(Arc::new(FakeTask {
                    id: c.id.clone(),
                    api: self.clone(),
                }) as Arc<dyn TaskOps>)
            })
        }

        fn adopt<'a>(
            &'a self,
            c: &'a OciContainer,
            _image: &'a str,
        ) -> BoxFuture<'a, Result<Option<Arc<dyn TaskOps>>, OciError>> {
            Box::pin(async move {
                let found = self.running.lock().unwrap().contains(&c.id);
                Ok(found.then(|| {
                    self.calls.lock().unwrap().push("adopt".into());
                    Arc::new(FakeTask {
                        id: c.id.clone(),
                        api: self.clone(),
                    }) as Arc<dyn TaskOps>
                }))
            })
        }
    }

    struct FakeTask {
        id: String,
        api: FakeContainerd,
    }

    impl TaskOps for FakeTask {
        fn id(&self) -> &str {
            &self.id
        }
        fn start(&self) -> BoxFuture<'_, Result<(), OciError>> {
            Box::pin(async move { self.api.call("task start") })
        }
        fn wait(&self) -> BoxFuture<'_, Result<u32, OciError>> {
            Box::pin(async move {
                self.api.call("task wait")?;
                let (status, until_signal) = *self.api.exit.lock().unwrap();
                if until_signal {
                    self.api.signalled.notified().await;
                }
                Ok(status)
            })
        }
        fn signal(&self, signal: u32) -> BoxFuture<'_, Result<(), OciError>> {
            Box::pin(async move {
                self.api
                    .calls
                    .lock()
                    .unwrap()
                    .push(format!("signal {signal}"));
                let (_, until_signal) = *self.api.exit.lock().unwrap();
                // This "process" ends on SIGKILL only.
                if until_signal && signal == 9 {
                    self.api.signalled.notify_one();
                }
                Ok(())
            })
        }
        fn oom_killed(&self) -> bool {
            self.api.oom
        }
        fn remove(&self) -> BoxFuture<'_, Result<(), OciError>> {
            Box::pin(async move {
                self.api.call("remove")?;
                self.api
                    .containers
                    .lock()
                    .unwrap()
                    .retain(|c| *c != self.id);
                Ok(())
            })
        }
        fn exec<'a>(
            &'a self,
            _: &'a [String],
            _: &'a std::path::Path,
        ) -> BoxFuture<'a, Result<ExecOutput, OciError>> {
            Box::pin(async move {
                self.api.call("exec")?;
                Ok(ExecOutput {
                    stdout: b"hi".to_vec(),
                    stderr: Vec::new(),
                    exit_code: 0,
                })
            })
        }
    }

    struct Spec(Result<(), RuntimeError>);

    impl ResolveSpec for Spec {
        fn resolve(&self, _: &ImageDefaults) -> Result<OciContainer, RuntimeError> {
            self.0.clone().map(|()| OciContainer {
                id: "uid-app".into(),
                ..OciContainer::default()
            })
        }
    }

    fn image() -> Content {
        let blob = |b: &[u8]| Blob {
            media_type: "application/vnd.oci.image.config.v1+json".into(),
            digest: "sha256:x".into(),
            bytes: Arc::new(b.to_vec()),
        };
        Content::Oci(Arc::new(OciImage {
            reference: "busybox:1".into(),
            manifest: blob(b"{}"),
            config: blob(br#"{"config": {"Cmd": ["sh"]}}"#),
            layers: Vec::new(),
        }))
    }

    fn request(resolve: Result<(), RuntimeError>) -> RunRequest {
        RunRequest {
            container: "app".into(),
            spec: crate::ContainerSpec::default(),
            ports: Vec::new(),
            request_timeout: Duration::from_secs(1),
            deadline: None,
            log: "/nonexistent/0.log".into(),
            sandbox: tokio::runtime::Handle::current(),
            http_stats: Arc::default(),
            resolve: Arc::new(Spec(resolve)),
        }
    }

    #[tokio::test]
    async fn a_failed_step_says_why_and_leaves_no_container() {
        // (failing call, waiting reason)
        let cases = [
            ("import", "CreateContainerError"),
            ("task create", "RunContainerError"),
            ("task start", "RunContainerError"),
        ];
        for (call, reason) in cases {
            let api = FakeContainerd::failing(call, refused(call));
            let err = start_on(&api, &image(), request(Ok(())))
                .await
                .err()
                .unwrap_or_else(|| panic!("{call} failing fails the start"));
            assert_eq!(err.reason(), reason, "{call}: {err}");
            assert!(
                api.containers.lock().unwrap().is_empty(),
                "{call}: {:?}",
                api.calls()
            );
        }
        let api = FakeContainerd::default();
        let err = start_on(
            &api,
            &image(),
            request(Err(RuntimeError::Config("root".into()))),
        )
        .await
        .err()
        .expect("a spec the node refuses");
        assert_eq!(err.reason(), "CreateContainerConfigError");
        assert_eq!(api.calls(), vec!["import"], "nothing is created");
    }

    #[tokio::test]
    async fn a_container_still_running_from_an_earlier_agent_is_adopted_not_started_again() {
        let api = FakeContainerd::default();
        api.running.lock().unwrap().push("uid-app".into());
        *api.exit.lock().unwrap() = (0, false);
        let run = start_on(&api, &image(), request(Ok(())))
            .await
            .expect("adopted");
        assert_eq!(
            api.calls(),
            vec!["import", "adopt"],
            "nothing created or started"
        );
        assert_eq!(
            run.wait().await.expect("ends").exit_code,
            0,
            "and watched to its end"
        );
    }

    #[tokio::test]
    async fn a_run_ends_with_its_exit_status_and_the_oom_killer_shows() {
        // (status, oom, reason, event)
        let cases = [
            (0, false, EndReason::Completed, None),
            (3, false, EndReason::Error, None),
            (137, true, EndReason::OomKilled, Some("OOMKilling")),
        ];
        for (status, oom, reason, event) in cases {
            let api = FakeContainerd {
                oom,
                ..FakeContainerd::default()
            };
            *api.exit.lock().unwrap() = (status, false);
            let run = start_on(&api, &image(), request(Ok(())))
                .await
                .expect("runs");
            let t = run.wait().await.expect("ends");
            assert_eq!((t.exit_code, t.reason), (status as i32, reason));
            assert_eq!(t.event.as_ref().map(|e| e.reason), event);
            // Waiting again sees the same end.
            assert_eq!(run.wait().await.expect("ends"), t);
            run.remove().await;
            assert!(api.containers.lock().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_stop_runs_the_hook_then_sigterm_then_sigkill_after_the_grace_period() {
        let api = FakeContainerd::default();
        *api.exit.lock().unwrap() = (137, true);
        let run = start_on(&api, &image(), request(Ok(())))
            .await
            .expect("runs");
        assert!(run.can_exec());
        assert_eq!(
            run.exec(&["true".into()], std::path::Path::new("/tmp"))
                .await
                .expect("exec")
                .stdout,
            b"hi"
        );
        let hook_ran = Arc::new(Mutex::new(false));
        let h = hook_ran.clone();
        let t = tokio::time::Instant::now();
        run.stop(
            Duration::from_millis(100),
            Box::pin(async move {
                *h.lock().unwrap() = true;
            }),
        )
        .await;
        // SIGTERM is ignored: SIGKILL comes at least 2 s after it.
        assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(*hook_ran.lock().unwrap());
        let signals: Vec<String> = api
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("signal"))
            .collect();
        assert_eq!(signals, vec!["signal 15", "signal 9"]);
        assert_eq!(run.wait().await.expect("ended").exit_code, 137);
    }

    #[tokio::test]
    async fn a_wasm_component_is_not_mine() {
        let api = FakeContainerd::default();
        let wasm = Content::Wasm {
            layer_digest: "sha256:x".into(),
            bytes: Arc::new(Vec::new()),
        };
        let err = start_on(&api, &wasm, request(Ok(())))
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, RuntimeError::NotMine(_)));
        assert!(api.calls().is_empty());
    }
}
