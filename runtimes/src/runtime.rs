//! The one narrow interface the agent runs containers through: a [`Runtime`]
//! says whether it runs some image content ("not mine" is a typed error, so
//! the agent tries the next runtime) and starts it; the [`Running`] handle it
//! returns waits for the end, stops (grace period, then kill), reads counters
//! and execs. The Wasm runtime and the OCI runtime implement it.
//!
//! **A runtime refuses content that is not its own with
//! [`RuntimeError::NotMine`] before it has done anything, so trying runtimes in
//! turn has no side effects.**

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::ContainerSpec;
use crate::oci::unpack::ImageDefaults;
use crate::oci::{ExecOutput, OciContainer, OciImage};
use crate::wasm::HttpStats;

/// What a pulled image holds, which decides the runtime.
#[derive(Debug, Clone)]
pub enum Content {
    /// A Wasm component: its layer's digest and bytes.
    Wasm {
        layer_digest: String,
        bytes: Arc<Vec<u8>>,
    },
    /// A container image for containerd.
    Oci(Arc<OciImage>),
}

impl Content {
    /// A short description for messages (`"a Wasm component"`, `"a container image"`).
    pub fn describe(&self) -> &'static str {
        match self {
            Content::Wasm { .. } => "a Wasm component",
            Content::Oci(_) => "a container image",
        }
    }
}

/// Why a runtime did not run, or stopped running, a container. Each variant
/// but `NotMine` maps to the Kubernetes waiting reason of the same name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The content is for another runtime.
    #[error("not mine: {0}")]
    NotMine(String),
    /// The container's configuration cannot be used (`CreateContainerConfigError`).
    #[error("{0}")]
    Config(String),
    /// The container could not be made (`CreateContainerError`).
    #[error("{0}")]
    Create(String),
    /// The container was made but would not run (`RunContainerError`).
    #[error("{0}")]
    Run(String),
    /// The runtime cannot do this (e.g. exec into a Wasm component).
    #[error("{0}")]
    Unsupported(String),
}

impl RuntimeError {
    /// The Kubernetes waiting reason of a failed start.
    pub fn reason(&self) -> &'static str {
        match self {
            RuntimeError::Config(_) => "CreateContainerConfigError",
            RuntimeError::Run(_) => "RunContainerError",
            RuntimeError::NotMine(_) | RuntimeError::Create(_) | RuntimeError::Unsupported(_) => {
                "CreateContainerError"
            }
        }
    }
}

/// Builds a container image's runtime spec from the image's defaults (the
/// agent knows the pod; the runtime knows the image).
pub trait ResolveSpec: Send + Sync {
    fn resolve(&self, image: &ImageDefaults) -> Result<OciContainer, RuntimeError>;
}

/// Everything a runtime needs to start one container run.
pub struct RunRequest {
    /// The container's name in its pod (for messages and events).
    pub container: String,
    /// What to run, for in-process guests.
    pub spec: ContainerSpec,
    /// TCP ports an HTTP guest listens on, inside the pod's network namespace.
    pub ports: Vec<u16>,
    /// Longest one HTTP request may take.
    pub request_timeout: Duration,
    /// Longest a command may run (the pod's `activeDeadlineSeconds`).
    pub deadline: Option<Duration>,
    /// The file this run's stdout and stderr are appended to.
    pub log: PathBuf,
    /// The pod's threads (inside its network namespace) for in-process guests.
    pub sandbox: tokio::runtime::Handle,
    /// Counters an HTTP guest's requests update.
    pub http_stats: Arc<HttpStats>,
    /// The runtime spec of a container image, from its defaults.
    pub resolve: Arc<dyn ResolveSpec>,
}

/// Why a run ended, as Kubernetes names it in a terminated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Completed,
    Error,
    OomKilled,
    DeadlineExceeded,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "Completed",
            EndReason::Error => "Error",
            EndReason::OomKilled => "OOMKilled",
            EndReason::DeadlineExceeded => "DeadlineExceeded",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event a run wants recorded for its pod (a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEvent {
    pub reason: &'static str,
    pub message: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: EndReason,
    pub message: Option<String>,
    /// A warning to record for the pod (e.g. the memory limit was hit).
    pub event: Option<RunEvent>,
}

/// Counters of a run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Requests stopped at the memory limit.
    pub out_of_memory: u64,
    /// Requests stopped at their time limit.
    pub timeouts: u64,
}

/// A runtime: Wasm (in-process) or OCI (containerd).
pub trait Runtime: Send + Sync {
    /// The RuntimeClass handler it serves (`wasmtime`, `runc`).
    fn handler(&self) -> &'static str;

    /// `Ok` when the content is this runtime's, else [`RuntimeError::NotMine`].
    fn accepts(&self, content: &Content) -> Result<(), RuntimeError>;

    /// Start one run of the content. Returns once it runs (an HTTP guest
    /// listens, a process was started).
    fn start<'a>(
        &'a self,
        content: &'a Content,
        req: RunRequest,
    ) -> BoxFuture<'a, Result<Arc<dyn Running>, RuntimeError>>;

    /// Remove what an earlier run of the agent left running for containers
    /// `keep` does not want (called once, before pods start; runs that die
    /// with the agent leave nothing).
    fn sweep<'a>(&'a self, keep: &'a (dyn Fn(&str) -> bool + Sync)) -> BoxFuture<'a, ()> {
        let _ = keep;
        Box::pin(async {})
    }
}

/// One started run of a container.
pub trait Running: Send + Sync {
    /// Wait for the run to end by itself. May be called again (each call
    /// waits for the same end).
    fn wait(&self) -> BoxFuture<'_, Result<Terminated, RuntimeError>>;

    /// Stop the run: `pre_stop` (the agent's hook) runs first where the
    /// runtime has processes to signal, then a polite stop, and a kill once
    /// `grace` is over. Returns when the run has ended (or given up on).
    fn stop<'a>(&'a self, grace: Duration, pre_stop: BoxFuture<'a, ()>) -> BoxFuture<'a, ()>;

    /// Release what the run holds in the runtime (called once, after it ended).
    fn remove(&self) -> BoxFuture<'_, ()>;

    /// Counters of the run so far.
    fn stats(&self) -> RunStats;

    /// Whether the run serves HTTP requests (a `wasi:http/proxy` guest).
    fn serves_http(&self) -> bool {
        false
    }

    /// Whether [`Running::exec`] can run commands in it.
    fn can_exec(&self) -> bool {
        false
    }

    /// Run a command inside the container to its end; FIFOs go in `scratch`.
    fn exec<'a>(
        &'a self,
        command: &'a [String],
        scratch: &'a Path,
    ) -> BoxFuture<'a, Result<ExecOutput, RuntimeError>> {
        let _ = (command, scratch);
        Box::pin(async {
            Err(RuntimeError::Unsupported(
                "this runtime has no processes to exec into".into(),
            ))
        })
    }
}

/// The first runtime that accepts `content`, or why none does.
pub fn pick<'a>(
    runtimes: &'a [Arc<dyn Runtime>],
    content: &Content,
) -> Result<&'a Arc<dyn Runtime>, Vec<RuntimeError>> {
    let mut refusals = Vec::new();
    for rt in runtimes {
        match rt.accepts(content) {
            Ok(()) => return Ok(rt),
            Err(e) => refusals.push(e),
        }
    }
    Err(refusals)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Only(&'static str, bool);

    impl Runtime for Only {
        fn handler(&self) -> &'static str {
            self.0
        }
        fn accepts(&self, content: &Content) -> Result<(), RuntimeError> {
            match (content, self.1) {
                (Content::Wasm { .. }, true) | (Content::Oci(_), false) => Ok(()),
                _ => Err(RuntimeError::NotMine(self.0.into())),
            }
        }
        fn start<'a>(
            &'a self,
            _: &'a Content,
            _: RunRequest,
        ) -> BoxFuture<'a, Result<Arc<dyn Running>, RuntimeError>> {
            Box::pin(async { Err(RuntimeError::Create("not used".into())) })
        }
    }

    #[test]
    fn pick_takes_the_first_that_accepts() {
        let wasm = Content::Wasm {
            layer_digest: "sha256:x".into(),
            bytes: Arc::new(Vec::new()),
        };
        let both: Vec<Arc<dyn Runtime>> = vec![
            Arc::new(Only("runc", false)),
            Arc::new(Only("wasmtime", true)),
        ];
        assert_eq!(
            pick(&both, &wasm).map(|r| r.handler()).ok(),
            Some("wasmtime")
        );
        let oci_only: Vec<Arc<dyn Runtime>> = vec![Arc::new(Only("runc", false))];
        let refused = pick(&oci_only, &wasm).err().unwrap_or_default();
        assert_eq!(refused, vec![RuntimeError::NotMine("runc".into())]);
    }

    #[test]
    fn reasons_table() {
        let cases = [
            (
                RuntimeError::Config("x".into()),
                "CreateContainerConfigError",
            ),
            (RuntimeError::Create("x".into()), "CreateContainerError"),
            (RuntimeError::Run("x".into()), "RunContainerError"),
            (RuntimeError::NotMine("x".into()), "CreateContainerError"),
        ];
        for (e, want) in cases {
            assert_eq!(e.reason(), want, "{e:?}");
        }
    }
}
