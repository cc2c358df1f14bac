//! The OCI runtime: containers through containerd (`containerd-client` over
//! its gRPC socket) and runc. Images are written into containerd's content
//! store and unpacked into snapshots ([`image`]); each container gets an OCI
//! runtime spec built from what the agent asks for ([`spec`]); tasks are
//! created, waited for, signalled, exec'd into and removed ([`task`]). The
//! agent may run its own containerd ([`daemon`]).
//!
//! **Everything Skiff makes in containerd lives in one containerd namespace per
//! node and is held by one lease, so containerd's garbage collector never takes
//! an unpacked layer away; a container's own snapshot, task and record are
//! removed when it is.**

pub mod daemon;
pub mod run;
pub mod seccomp;
pub mod spec;
pub mod task;
pub mod unpack;

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::tonic::{self, Code, Request, metadata::MetadataValue};
use tonic::transport::Channel;

pub use spec::{OciContainer, SecurityOptions};
pub use task::{ExecOutput, Task};
pub use unpack::{Blob, OciImage};

/// The runc runtime's shim, as containerd names it.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

/// Errors of the OCI runtime.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("containerd at {socket}: {reason}")]
    Connect { socket: String, reason: String },
    #[error("containerd {call}: {status}")]
    Call { call: &'static str, status: String },
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("container spec: {0}")]
    Spec(String),
    #[error("start containerd: {0}")]
    Daemon(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl OciError {
    /// A failed call, with the status's message only (what runc or the shim
    /// said, for a pod's status).
    fn refused(call: &'static str) -> impl FnOnce(tonic::Status) -> OciError {
        move |s| OciError::Call {
            call,
            status: s.message().to_string(),
        }
    }

    fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> OciError {
        move |s| OciError::Call {
            call,
            status: format!("{:?}: {}", s.code(), s.message()),
        }
    }
}

/// A connection to containerd, scoped to one containerd namespace.
#[derive(Clone)]
pub struct OciRuntime {
    channel: Channel,
    namespace: String,
    snapshotter: String,
    lease: String,
    /// One unpack at a time (two pods of one new image share the work).
    unpacking: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Manifests whose blobs and image record this runtime has written.
    imported: std::sync::Arc<tokio::sync::Mutex<std::collections::HashSet<String>>>,
}

impl std::fmt::Debug for OciRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciRuntime")
            .field("namespace", &self.namespace)
            .field("snapshotter", &self.snapshotter)
            .finish()
    }
}

/// The snapshotter for this host: overlayfs where the kernel has it.
fn host_snapshotter() -> &'static str {
    let overlay = std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    if overlay { "overlayfs" } else { "native" }
}

impl OciRuntime {
    /// Connect to containerd's socket and use `namespace` there.
    pub async fn connect(
        socket: &std::path::Path,
        namespace: &str,
    ) -> Result<OciRuntime, OciError> {
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|e| OciError::Connect {
                socket: socket.display().to_string(),
                reason: e.to_string(),
            })?;
        let rt = OciRuntime {
            channel,
            namespace: namespace.to_string(),
            snapshotter: host_snapshotter().to_string(),
            lease: "skiff-images".to_string(),
            unpacking: Default::default(),
            imported: Default::default(),
        };
        // The lease that keeps imported content and layer snapshots.
        let req = containerd_client::services::v1::CreateRequest {
            id: rt.lease.clone(),
            labels: Default::default(),
        };
        match LeasesClient::new(rt.channel.clone())
            .create(rt.request(req, false))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => {
                return Err(OciError::Connect {
                    socket: socket.display().to_string(),
                    reason: format!("{:?}: {}", s.code(), s.message()),
                });
            }
        }
        Ok(rt)
    }

    /// The containerd namespace this runtime works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The snapshotter containers' root filesystems come from.
    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    /// A request in our namespace, optionally under the image lease.
    fn request<T>(&self, msg: T, leased: bool) -> Request<T> {
        let mut req = Request::new(msg);
        let md = req.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(self.namespace.as_str()) {
            md.insert("containerd-namespace", v);
        }
        if leased && let Ok(v) = MetadataValue::try_from(self.lease.as_str()) {
            md.insert("containerd-lease", v);
        }
        req
    }
}
