//! skiff-runtimes: the runtimes that run a pod's containers: the Wasm runtime
//! (wasmtime, in-process) and the OCI runtime (containerd and runc).
//!
//! **The control plane never depends on this crate.** Errors say whether an
//! image is "not mine" (so the agent can pick another runtime) or broken.

pub mod oci;
pub mod runtime;
pub mod wasm;

pub use runtime::{
    Content, EndReason, ResolveSpec, RunEvent, RunRequest, RunStats, Running, Runtime,
    RuntimeError, Terminated,
};

use std::time::Duration;

/// What to run, independent of Kubernetes types (the agent translates a pod's
/// container into this).
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// The container's name (becomes `argv[0]`).
    pub name: String,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Upper bound on guest linear memory, in bytes.
    pub memory_limit: Option<u64>,
    /// Longest a command may run, or a request may take (wall clock).
    pub timeout: Option<Duration>,
    /// Host directories the guest sees as preopened directories.
    pub mounts: Vec<Mount>,
    /// The pod's network namespace: a Wasm guest's outgoing HTTP requests
    /// leave from there (none: they are refused).
    pub netns: Option<std::path::PathBuf>,
    /// Where the guest's linear memory in use is added up (one gauge per pod,
    /// read by the node's metrics), in bytes.
    pub memory_gauge: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Most requests an HTTP guest handles at once (none: the runtime's
    /// default); more wait for a slot, up to the request timeout.
    pub max_concurrency: Option<usize>,
    /// Resolves the host names of a Wasm guest's outgoing requests (the
    /// node's DNS with the pod's search path; none: IP literals only).
    pub resolver: Option<Resolver>,
    /// Certificates (PEM) a Wasm guest's outgoing `https` trusts besides
    /// the platform's roots: the cluster CA and bundles the pod names.
    pub trust_pem: Vec<u8>,
}

/// Why a host name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No such name (NXDOMAIN, or no address).
    NotFound,
    /// No answer in time.
    Timeout,
    /// The resolver failed (SERVFAIL, a refusal, …).
    Failed(String),
}

/// Resolves host names to addresses.
pub trait Resolve: Send + Sync {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<std::net::IpAddr>, LookupError>>;
}

/// A shared [`Resolve`].
#[derive(Clone)]
pub struct Resolver(pub std::sync::Arc<dyn Resolve>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// A host directory preopened for the guest at `guest_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: std::path::PathBuf,
    pub guest_path: String,
    pub read_only: bool,
}

/// How a command container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// It returned or called `exit(code)`.
    Code(i32),
    /// It tried to grow memory past its limit.
    OutOfMemory,
    /// It ran past its timeout.
    TimedOut,
    /// It trapped (a bug in the guest).
    Trapped(String),
}

impl Exit {
    /// The Kubernetes-style reason and exit code for a terminated state.
    pub fn reason_and_code(&self) -> (&'static str, i32) {
        let (reason, code) = self.end();
        (reason.as_str(), code)
    }

    /// Why the run ended and its exit code.
    pub fn end(&self) -> (EndReason, i32) {
        match self {
            Exit::Code(0) => (EndReason::Completed, 0),
            Exit::Code(c) => (EndReason::Error, *c),
            Exit::OutOfMemory => (EndReason::OomKilled, 137),
            Exit::TimedOut => (EndReason::DeadlineExceeded, 137),
            Exit::Trapped(_) => (EndReason::Error, 134),
        }
    }
}
