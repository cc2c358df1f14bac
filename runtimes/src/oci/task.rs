//! Containers and their tasks in containerd: create (record, snapshot, task
//! with its output appended to the container's log file), start, wait, signal,
//! exec, and remove everything again.
//!
//! **[`OciRuntime::remove`] is idempotent and removes the task, the record and
//! the snapshot whatever state they were left in, so a failed start or an
//! agent restart never leaks one.** A container still running from an
//! earlier run of the agent is adopted ([`OciRuntime::adopt`]), not started
//! again; those of pods that are gone are swept.

use std::path::{Path, PathBuf};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use prost_types::Any;

use super::spec::OciContainer;
use super::{OciError, OciRuntime, RUNC_RUNTIME};

const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// A created container task.
#[derive(Debug, Clone)]
pub struct Task {
    rt: OciRuntime,
    pub id: String,
    pub pid: u32,
    cgroups_path: String,
    spec: OciContainer,
}

/// What an exec printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: u32,
}

fn ok_if_missing(r: Result<(), tonic::Status>) -> Result<(), tonic::Status> {
    match r {
        Err(s) if s.code() == Code::NotFound => Ok(()),
        other => other,
    }
}

impl OciRuntime {
    /// Create container `c.id` from the snapshot chain `parent` and its task,
    /// with stdout and stderr appended to `log`. Leftovers of the same ID are
    /// removed first. The task is created, not started.
    pub async fn create(
        &self,
        c: &OciContainer,
        image: &str,
        parent: &str,
        log: &Path,
    ) -> Result<Task, OciError> {
        self.remove(&c.id).await?;
        let spec = c.spec()?;
        let container = Container {
            id: c.id.clone(),
            image: image.to_string(),
            runtime: Some(Runtime {
                name: RUNC_RUNTIME.into(),
                options: None,
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE.into(),
                value: spec,
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: c.id.clone(),
            ..Default::default()
        };
        ContainersClient::new(self.channel.clone())
            .create(self.request(
                CreateContainerRequest {
                    container: Some(container),
                },
                false,
            ))
            .await
            .map_err(OciError::call("container create"))?;
        match self.create_task(c, parent, log).await {
            Ok(pid) => Ok(Task {
                rt: self.clone(),
                id: c.id.clone(),
                pid,
                cgroups_path: c.cgroups_path.clone(),
                spec: c.clone(),
            }),
            Err(e) => {
                let _ = self.remove(&c.id).await;
                Err(e)
            }
        }
    }

    async fn create_task(
        &self,
        c: &OciContainer,
        parent: &str,
        log: &Path,
    ) -> Result<u32, OciError> {
        let prep = PrepareSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: c.id.clone(),
            parent: parent.to_string(),
            labels: Default::default(),
        };
        let mounts = SnapshotsClient::new(self.channel.clone())
            .prepare(self.request(prep, false))
            .await
            .map_err(OciError::call("snapshot prepare"))?
            .into_inner()
            .mounts;
        let out = format!("file://{}", log.display());
        let req = CreateTaskRequest {
            container_id: c.id.clone(),
            rootfs: mounts,
            stdout: out.clone(),
            stderr: out,
            ..Default::default()
        };
        let resp = TasksClient::new(self.channel.clone())
            .create(self.request(req, false))
            .await
            .map_err(OciError::refused("task create"))?;
        Ok(resp.into_inner().pid)
    }

    /// Remove a container's task (killing it), record and snapshot. Missing
    /// pieces are fine.
    pub async fn remove(&self, id: &str) -> Result<(), OciError> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let kill = KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal: 9,
            all: true,
        };
        let _ = tasks.kill(self.request(kill, false)).await;
        let del = DeleteTaskRequest {
            container_id: id.into(),
        };
        // A task that was just killed may need a moment to be reaped.
        for _ in 0..50 {
            match tasks.delete(self.request(del.clone(), false)).await {
                Ok(_) => break,
                Err(s) if s.code() == Code::NotFound => break,
                Err(s) if s.code() == Code::FailedPrecondition => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(s) => return Err(OciError::call("task delete")(s)),
            }
        }
        ok_if_missing(
            ContainersClient::new(self.channel.clone())
                .delete(self.request(DeleteContainerRequest { id: id.into() }, false))
                .await
                .map(|_| ()),
        )
        .map_err(OciError::call("container delete"))?;
        let rm = RemoveSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: id.into(),
        };
        ok_if_missing(
            SnapshotsClient::new(self.channel.clone())
                .remove(self.request(rm, false))
                .await
                .map(|_| ()),
        )
        .map_err(OciError::call("snapshot remove"))
    }

    /// Container `c.id` if it is still running from an earlier run of the
    /// agent with image `image`: its task, to be watched again instead of
    /// started anew (`None` if there is no such running task).
    pub async fn adopt(&self, c: &OciContainer, image: &str) -> Result<Option<Task>, OciError> {
        let found = ContainersClient::new(self.channel.clone())
            .get(self.request(GetContainerRequest { id: c.id.clone() }, false))
            .await;
        let container = match found {
            Ok(r) => r.into_inner().container,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(OciError::call("container get")(s)),
        };
        if container.is_none_or(|k| k.image != image) {
            return Ok(None);
        }
        let req = GetRequest {
            container_id: c.id.clone(),
            exec_id: String::new(),
        };
        let process = match TasksClient::new(self.channel.clone())
            .get(self.request(req, false))
            .await
        {
            Ok(r) => r.into_inner().process,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(OciError::call("task get")(s)),
        };
        Ok(process
            .filter(|p| p.status == containerd_client::types::v1::Status::Running as i32)
            .map(|p| Task {
                rt: self.clone(),
                id: c.id.clone(),
                pid: p.pid,
                cgroups_path: c.cgroups_path.clone(),
                spec: c.clone(),
            }))
    }

    /// Remove every container of ours that `keep` does not want (what an
    /// earlier run of the agent left for pods that are gone).
    pub async fn sweep(&self, keep: &(dyn Fn(&str) -> bool + Sync)) {
        for id in self.containers().await.unwrap_or_default() {
            if keep(&id) {
                continue;
            }
            match self.remove(&id).await {
                Ok(()) => {
                    tracing::info!(container = %id, "removed a container of a pod that is gone")
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot remove a leftover container")
                }
            }
        }
    }

    /// The IDs of the containers in our namespace.
    pub async fn containers(&self) -> Result<Vec<String>, OciError> {
        let list = ContainersClient::new(self.channel.clone())
            .list(self.request(ListContainersRequest::default(), false))
            .await
            .map_err(OciError::call("container list"))?;
        Ok(list
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect())
    }
}

impl Task {
    /// Start the created task.
    pub async fn start(&self) -> Result<(), OciError> {
        let req = StartRequest {
            container_id: self.id.clone(),
            exec_id: String::new(),
        };
        TasksClient::new(self.rt.channel.clone())
            .start(self.rt.request(req, false))
            .await
            .map(|_| ())
            .map_err(OciError::refused("task start"))
    }

    /// Wait for the task to exit; its exit status (128 + signal when killed).
    pub async fn wait(&self) -> Result<u32, OciError> {
        let req = WaitRequest {
            container_id: self.id.clone(),
            exec_id: String::new(),
        };
        let r = TasksClient::new(self.rt.channel.clone())
            .wait(self.rt.request(req, false))
            .await
            .map_err(OciError::call("task wait"))?;
        Ok(r.into_inner().exit_status)
    }

    /// Send a signal to the task's main process.
    pub async fn signal(&self, signal: u32) -> Result<(), OciError> {
        let req = KillRequest {
            container_id: self.id.clone(),
            exec_id: String::new(),
            signal,
            all: false,
        };
        ok_if_missing(
            TasksClient::new(self.rt.channel.clone())
                .kill(self.rt.request(req, false))
                .await
                .map(|_| ()),
        )
        .map_err(OciError::call("task kill"))
    }

    /// Whether the kernel's OOM killer killed a process of this container
    /// (read before the task is removed, while its cgroup exists).
    pub fn oom_killed(&self) -> bool {
        oom_kills(&self.cgroups_path) > 0
    }

    /// Remove the task, record and snapshot.
    pub async fn remove(&self) -> Result<(), OciError> {
        self.rt.remove(&self.id).await
    }

    /// Run `args` in the container (its user, env and working directory) to
    /// the end; its stdout and stderr come through FIFOs made in `scratch`.
    pub async fn exec(&self, args: &[String], scratch: &Path) -> Result<ExecOutput, OciError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let exec_id = format!("exec-{}-{n}", std::process::id());
        std::fs::create_dir_all(scratch)?;
        let out: PathBuf = scratch.join(format!("{exec_id}.out"));
        let err: PathBuf = scratch.join(format!("{exec_id}.err"));
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let mut readers = Vec::new();
        for path in [&out, &err] {
            nix::unistd::mkfifo(
                path.as_path(),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .map_err(std::io::Error::from)?;
            // Read-write, so the FIFO never reads as ended before the shim opens it.
            let rx = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(path)?;
            readers.push(tokio::spawn(collect(rx, done_rx.clone())));
        }
        // Dropped before the end (a probe's timeout): kill and delete the
        // process and its FIFOs in the background.
        let mut guard = ExecGuard {
            rt: self.rt.clone(),
            container_id: self.id.clone(),
            exec_id: exec_id.clone(),
            fifos: vec![out.clone(), err.clone()],
            armed: true,
        };
        let result = self.run_exec(&exec_id, args, &out, &err).await;
        guard.armed = false;
        let _ = done_tx.send(true);
        let mut outputs = Vec::new();
        for r in readers {
            outputs.push(r.await.unwrap_or_default());
        }
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&err);
        let stderr = outputs.pop().unwrap_or_default();
        let stdout = outputs.pop().unwrap_or_default();
        result.map(|exit_code| ExecOutput {
            stdout,
            stderr,
            exit_code,
        })
    }

    /// Start the exec process, wait for it, delete it (which waits until its
    /// output has been copied into the FIFOs).
    async fn run_exec(
        &self,
        exec_id: &str,
        args: &[String],
        out: &Path,
        err: &Path,
    ) -> Result<u32, OciError> {
        let process = serde_json::to_vec(&self.spec.process(args))
            .map_err(|e| OciError::Spec(e.to_string()))?;
        let mut tasks = TasksClient::new(self.rt.channel.clone());
        let req = ExecProcessRequest {
            container_id: self.id.clone(),
            stdin: String::new(),
            stdout: out.display().to_string(),
            stderr: err.display().to_string(),
            terminal: false,
            spec: Some(Any {
                type_url: PROCESS_TYPE.into(),
                value: process,
            }),
            exec_id: exec_id.to_string(),
        };
        let result = async {
            tasks
                .exec(self.rt.request(req, false))
                .await
                .map_err(OciError::refused("exec"))?;
            let start = StartRequest {
                container_id: self.id.clone(),
                exec_id: exec_id.to_string(),
            };
            tasks
                .start(self.rt.request(start, false))
                .await
                .map_err(OciError::refused("exec start"))?;
            let wait = WaitRequest {
                container_id: self.id.clone(),
                exec_id: exec_id.to_string(),
            };
            let status = tasks
                .wait(self.rt.request(wait, false))
                .await
                .map_err(OciError::call("exec wait"))?
                .into_inner()
                .exit_status;
            Ok::<u32, OciError>(status)
        }
        .await;
        let del = DeleteProcessRequest {
            container_id: self.id.clone(),
            exec_id: exec_id.to_string(),
        };
        let _ = tasks.delete_process(self.rt.request(del, false)).await;
        result
    }
}

/// Cleans up an exec whose caller went away before it ended.
struct ExecGuard {
    rt: OciRuntime,
    container_id: String,
    exec_id: String,
    fifos: Vec<PathBuf>,
    armed: bool,
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (rt, container_id, exec_id) = (
            self.rt.clone(),
            self.container_id.clone(),
            self.exec_id.clone(),
        );
        let fifos = std::mem::take(&mut self.fifos);
        handle.spawn(async move {
            let mut tasks = TasksClient::new(rt.channel.clone());
            let kill = KillRequest {
                container_id: container_id.clone(),
                exec_id: exec_id.clone(),
                signal: 9,
                all: false,
            };
            let _ = tasks.kill(rt.request(kill, false)).await;
            let del = DeleteProcessRequest {
                container_id,
                exec_id,
            };
            let _ = tasks.delete_process(rt.request(del, false)).await;
            for f in fifos {
                let _ = std::fs::remove_file(f);
            }
        });
    }
}

/// Everything written to a FIFO until `done`, then what is left in it.
/// The most of an exec's stdout (and of its stderr) kept.
pub const MAX_EXEC_OUTPUT: usize = 4 << 20;

async fn collect(
    rx: tokio::net::unix::pipe::Receiver,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let drain = |buf: &mut Vec<u8>, chunk: &mut [u8]| -> bool {
        loop {
            match rx.try_read(chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    // Past the cap the output is read and dropped: the
                    // process never blocks on a full pipe, the agent never
                    // holds more than the cap.
                    let room = MAX_EXEC_OUTPUT.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    };
    loop {
        tokio::select! {
            r = rx.readable() => {
                if r.is_err() || !drain(&mut buf, &mut chunk) {
                    return buf;
                }
            }
            _ = done.wait_for(|d| *d) => {
                drain(&mut buf, &mut chunk);
                return buf;
            }
        }
    }
}

/// OOM kills counted in a cgroup (v1 `memory.oom_control`, v2 `memory.events`).
pub fn oom_kills(cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    let read = |p: String, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(p).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
    };
    read(
        format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
        "oom_kill ",
    )
    .or_else(|| read(format!("/sys/fs/cgroup/{rel}/memory.events"), "oom_kill "))
    .unwrap_or(0)
}
