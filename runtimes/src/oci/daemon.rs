//! An agent-owned containerd: Debian's `containerd` with its root, state,
//! socket and config under the agent's data directory, its CRI plugin off,
//! restarted when it dies, and killed with the agent.
//!
//! **The daemon is a child of a thread that lives as long as the process, with
//! a parent-death signal, so it never outlives the agent.**

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::OciError;

/// The files of an agent-owned containerd.
#[derive(Debug, Clone)]
pub struct DaemonDirs {
    pub dir: PathBuf,
}

impl DaemonDirs {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn config(&self) -> String {
        let d = self.dir.display();
        format!(
            "version = 2\n\
             root = \"{d}/root\"\n\
             state = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
             [debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
        )
    }
}

/// Whether a `containerd` binary and runc's shim are on the PATH.
pub fn available() -> bool {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    on_path("containerd") && on_path("containerd-shim-runc-v2") && on_path("runc")
}

/// Start containerd under `dir` and keep it running (restarted if it exits).
/// Returns once its socket answers.
pub async fn spawn(dir: &Path) -> Result<DaemonDirs, OciError> {
    let dirs = DaemonDirs {
        dir: dir.to_path_buf(),
    };
    std::fs::create_dir_all(dir)?;
    let socket = dirs.socket();
    // An agent that starts over keeps the daemon it already supervises.
    static RUNNING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let already = {
        let mut running = RUNNING
            .lock()
            .map_err(|e| OciError::Daemon(e.to_string()))?;
        let known = running.iter().any(|d| d == dir);
        if !known {
            running.push(dir.to_path_buf());
        }
        known
    };
    if already {
        return wait_for_socket(dirs).await;
    }
    let config = dir.join("config.toml");
    std::fs::write(&config, dirs.config())?;
    let log = dir.join("containerd.log");
    let _ = std::fs::remove_file(&socket);
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("containerd".into())
        .spawn(move || supervise(&config, &log, tx))?;
    let first = tokio::task::spawn_blocking(move || rx.recv())
        .await
        .map_err(|e| OciError::Daemon(e.to_string()))?
        .map_err(|e| OciError::Daemon(e.to_string()))?;
    first.map_err(OciError::Daemon)?;
    wait_for_socket(dirs).await
}

/// Wait (up to 10 s) until the daemon's socket accepts connections.
async fn wait_for_socket(dirs: DaemonDirs) -> Result<DaemonDirs, OciError> {
    let (socket, dir) = (dirs.socket(), dirs.dir.clone());
    for _ in 0..200 {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            return Ok(dirs);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(OciError::Daemon(format!(
        "containerd did not open {} within 10 s (see {})",
        socket.display(),
        dir.join("containerd.log").display()
    )))
}

/// Run containerd, restarting it when it exits; reports the first spawn.
fn supervise(config: &Path, log: &Path, first: std::sync::mpsc::Sender<Result<(), String>>) {
    use std::os::unix::process::CommandExt;
    let mut first = Some(first);
    loop {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log);
        let mut cmd = std::process::Command::new("containerd");
        cmd.arg("--config").arg(config);
        if let Ok(f) = out {
            if let Ok(g) = f.try_clone() {
                cmd.stdout(g);
            }
            cmd.stderr(f);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
                let status = child.wait();
                tracing::warn!(?status, "containerd exited; starting it again");
            }
            Err(e) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(format!("spawn containerd: {e}")));
                    return;
                }
                tracing::warn!(error = %e, "cannot restart containerd");
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
