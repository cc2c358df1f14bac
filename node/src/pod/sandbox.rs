//! A pod's sandbox: the OS threads that run its guest code, all inside the pod's
//! network namespace and (when the host allows) the pod's CPU cgroup. Sockets a
//! guest opens, listening or outgoing, are therefore the pod's.
//!
//! **No thread of a sandbox runs guest code outside the pod's namespace: a thread
//! that cannot enter it marks the sandbox broken and the pod does not start.**

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::cgroup::PodCgroup;
use crate::net::NetHost;

/// Errors of a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("start pod threads: {0}")]
    Threads(std::io::Error),
    #[error("pod threads could not enter the pod's network namespace {0}")]
    Netns(String),
}

/// The pod's threads.
pub struct Sandbox {
    rt: Option<tokio::runtime::Runtime>,
    broken: Arc<AtomicBool>,
    netns: PathBuf,
    threads: usize,
    /// The cgroup threads join as they start (set later for a warm sandbox).
    cgroup: Arc<Mutex<Option<PodCgroup>>>,
    /// Every thread of the sandbox so far (to move them into a cgroup later).
    tids: Arc<Mutex<Vec<u64>>>,
}

impl Sandbox {
    /// Start `threads` worker threads in `netns` (and `cgroup`).
    pub async fn start(
        name: &str,
        netns: PathBuf,
        cgroup: Option<PodCgroup>,
        threads: usize,
        host: Arc<dyn NetHost>,
    ) -> Result<Sandbox, SandboxError> {
        let broken = Arc::new(AtomicBool::new(false));
        let cgroup = Arc::new(Mutex::new(cgroup));
        let tids: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (ns, b, cg, ts) = (netns.clone(), broken.clone(), cgroup.clone(), tids.clone());
        let h = host.clone();
        let threads = threads.max(1);
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(threads)
            .max_blocking_threads(4)
            .thread_name(format!("pod-{}", name.chars().take(10).collect::<String>()))
            .enable_all()
            .on_thread_start(move || {
                // Threads inherit the namespace and cgroup of the thread that
                // spawns them; entering or joining is only a fallback.
                if let Err(e) = h.enter_netns(&ns) {
                    tracing::error!(error = %e, "pod thread cannot enter its namespace");
                    b.store(true, Ordering::SeqCst);
                    return;
                }
                let tid = nix::unistd::gettid().as_raw() as u64;
                ts.lock().expect("tids").push(tid);
                if let Some(cg) = cg.lock().expect("cgroup").as_ref()
                    && !cg.holds_current_thread()
                    && let Err(e) = cg.join_current_thread()
                {
                    tracing::warn!(error = %e, "pod thread not accounted to its cgroup");
                }
            });
        // Build the runtime on a thread that is already in the namespace and the
        // cgroup, so its workers start there without entering one by one.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ns2, cg2) = (netns.clone(), cgroup.clone());
        std::thread::Builder::new()
            .name("pod-setup".into())
            .spawn(move || {
                let built = host
                    .enter_netns(&ns2)
                    .map_err(|e| SandboxError::Netns(e.to_string()))
                    .and_then(|()| {
                        if let Some(cg) = cg2.lock().expect("cgroup").as_ref()
                            && let Err(e) = cg.join_current_thread()
                        {
                            tracing::warn!(error = %e, "pod threads not accounted to their cgroup");
                        }
                        builder.build().map_err(SandboxError::Threads)
                    });
                let _ = tx.send(built);
            })
            .map_err(SandboxError::Threads)?;
        let rt = rx
            .await
            .map_err(|_| SandboxError::Netns("the set-up thread ended".into()))??;
        let sb = Sandbox {
            rt: Some(rt),
            broken,
            netns,
            threads,
            cgroup,
            tids,
        };
        // Workers start with the runtime; run one task to be sure they did.
        let _ = sb.handle().spawn(async {}).await;
        sb.check()?;
        Ok(sb)
    }

    /// How many worker threads the sandbox runs.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Account the sandbox's threads (those running and those to come) to `cg`.
    /// Threads that start from now on join it themselves; the running ones
    /// are moved on a helper thread, off the pod's start (a cgroup v1 thread
    /// migration waits for an RCU grace period, ~1 ms each), so a warm
    /// sandbox serves at once and its first milliseconds count to the agent.
    pub fn assign_cgroup(&self, cg: PodCgroup) {
        *self.cgroup.lock().expect("cgroup") = Some(cg.clone());
        let tids: Vec<u64> = self.tids.lock().expect("tids").clone();
        let moved = std::thread::Builder::new()
            .name("cgroup-move".into())
            .spawn(move || {
                for tid in tids {
                    if let Err(e) = cg.add_thread(tid) {
                        tracing::debug!(error = %e, tid, "thread not moved to the pod cgroup");
                    }
                }
            });
        if let Err(e) = moved {
            tracing::warn!(error = %e, "cannot move the pod's threads to its cgroup");
        }
    }

    /// Fail if any of the pod's threads is outside its namespace.
    pub fn check(&self) -> Result<(), SandboxError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(SandboxError::Netns(self.netns.display().to_string()));
        }
        Ok(())
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.as_ref().expect("sandbox runtime").handle().clone()
    }

    /// Stop every task of the pod and wait (briefly) for its threads to end.
    pub async fn stop(mut self) {
        if let Some(rt) = self.rt.take() {
            let _ = tokio::task::spawn_blocking(move || {
                rt.shutdown_timeout(std::time::Duration::from_secs(2))
            })
            .await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
