//! One run of a container image through containerd: the pod's container spec
//! resolved against the image config and securityContext, the container
//! created in the pod's network namespace and cgroup, waited for, stopped
//! gracefully and removed.
//!
//! **Whatever way a run ends (exit, probe kill, pod stop, failed start), its
//! containerd task, record and snapshot are removed before the run returns.**

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_runtimes::Mount;
use skiff_runtimes::oci::image::{ImageDefaults, strings};
use skiff_runtimes::oci::spec::{argv, merge_env};
use skiff_runtimes::oci::{OciContainer, OciError, OciImage, SecurityOptions, Task};

use super::super::env::Env;
use super::super::probes::{Checker, Handler, Probe};
use super::super::status::{Ended, now};
use super::{Outcome, Runner, killed_by_probe, stopped};
use futures::future::BoxFuture;

/// Processes a container may run unless the agent says otherwise.
pub const PIDS_LIMIT: i64 = 4096;

/// A field of the container's securityContext, else the pod's.
fn security<'a>(container: &'a Value, pod: &'a Value, key: &str) -> Option<&'a Value> {
    container
        .pointer(&format!("/securityContext/{key}"))
        .or_else(|| pod.pointer(&format!("/securityContext/{key}")))
}

/// `uid[:gid]` of an image's `User`, when numeric (or `root`).
fn image_user(user: Option<&str>) -> Result<(Option<u32>, Option<u32>), String> {
    let Some(u) = user else {
        return Ok((None, None));
    };
    let (name, group) = match u.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (u, None),
    };
    let num = |s: &str| -> Result<u32, String> {
        match s {
            "root" => Ok(0),
            s => s.parse().map_err(|_| {
                format!("the image runs as user {u:?}, which is not numeric; set securityContext.runAsUser")
            }),
        }
    };
    Ok((Some(num(name)?), group.map(num).transpose()?))
}

impl Runner {
    /// The spec of this container for containerd, or a configuration error.
    fn oci_spec(
        &self,
        image: &ImageDefaults,
        env: &Env,
        mut mounts: Vec<Mount>,
        netns: &std::path::Path,
        files: &[Mount],
    ) -> Result<OciContainer, String> {
        let pod_spec = &self.pod.object["spec"];
        let c = &self.spec;
        let expanded = |key: &str| -> Vec<String> {
            strings(c.get(key)).iter().map(|s| env.expand(s)).collect()
        };
        let privileged = c
            .pointer("/securityContext/privileged")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if privileged && !self.ctx.allow_privileged {
            return Err(format!(
                "container {} is privileged, which this node does not allow (start the agent with --allow-privileged)",
                self.name()
            ));
        }
        let (image_uid, image_gid) = image_user(image.user.as_deref())?;
        let uid = security(c, pod_spec, "runAsUser")
            .and_then(Value::as_u64)
            .map(|u| u as u32)
            .or(image_uid)
            .unwrap_or(0);
        let gid = security(c, pod_spec, "runAsGroup")
            .and_then(Value::as_u64)
            .map(|g| g as u32)
            .or(image_gid)
            .unwrap_or(0);
        if uid == 0 && security(c, pod_spec, "runAsNonRoot").and_then(Value::as_bool) == Some(true)
        {
            return Err(format!(
                "container {} has runAsNonRoot and its image will run as root",
                self.name()
            ));
        }
        let mut supplemental: Vec<u32> = pod_spec
            .pointer("/securityContext/supplementalGroups")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_u64())
                    .map(|g| g as u32)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(fs) = pod_spec
            .pointer("/securityContext/fsGroup")
            .and_then(Value::as_u64)
        {
            supplemental.push(fs as u32);
        }
        let quantity = |p: &str| {
            c.pointer(p)
                .and_then(Value::as_str)
                .and_then(crate::pod::quantity)
        };
        let cpu_millis = |p: &str| quantity(p).map(|cores| (cores * 1000.0).round() as i64);
        mounts.extend(files.iter().cloned());
        Ok(OciContainer {
            id: format!("{}-{}", self.pod.uid, self.name()),
            hostname: self.pod.name.clone(),
            args: argv(&expanded("command"), &expanded("args"), image),
            env: merge_env(&image.env, &env.vars),
            cwd: c
                .get("workingDir")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| image.working_dir.clone())
                .unwrap_or_else(|| "/".into()),
            uid,
            gid,
            supplemental_gids: supplemental,
            netns: netns.to_path_buf(),
            mounts,
            cgroups_path: format!(
                "{}/{}",
                crate::cgroup::container_parent(&self.ctx.node, &self.pod.uid),
                self.name()
            ),
            memory_limit: quantity("/resources/limits/memory").map(|b| b as i64),
            cpu_shares: cpu_millis("/resources/requests/cpu")
                .or_else(|| cpu_millis("/resources/limits/cpu"))
                .map(|m| ((m * 1024) / 1000).max(2) as u64),
            cpu_quota: cpu_millis("/resources/limits/cpu")
                .filter(|m| *m > 0)
                .map(|m| crate::cgroup::cfs_quota(m as u64)),
            pids_limit: Some(PIDS_LIMIT),
            security: SecurityOptions {
                privileged,
                read_only_root: c
                    .pointer("/securityContext/readOnlyRootFilesystem")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                no_new_privileges: c
                    .pointer("/securityContext/allowPrivilegeEscalation")
                    .and_then(Value::as_bool)
                    == Some(false),
                cap_add: strings(c.pointer("/securityContext/capabilities/add")),
                cap_drop: strings(c.pointer("/securityContext/capabilities/drop")),
            },
        })
    }

    /// Files every container of the pod sees: hostname, hosts, resolv.conf.
    fn pod_files(&self, netns: &std::path::Path) -> Result<Vec<Mount>, String> {
        let dir = self.ctx.pod_dir(&self.pod.uid).0.join("etc");
        std::fs::create_dir_all(&dir).map_err(|e| format!("pod files: {e}"))?;
        let ip = self.view.borrow().pod_ip.clone().unwrap_or_default();
        let name = &self.pod.name;
        let hosts = format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"
        );
        let write = |file: &str, text: &str| {
            std::fs::write(dir.join(file), text).map_err(|e| format!("pod files: {e}"))
        };
        write("hosts", &hosts)?;
        write("hostname", &format!("{name}\n"))?;
        let mut files = vec![
            Mount {
                host_path: dir.join("hosts"),
                guest_path: "/etc/hosts".into(),
                read_only: false,
            },
            Mount {
                host_path: dir.join("hostname"),
                guest_path: "/etc/hostname".into(),
                read_only: false,
            },
        ];
        if let Some(ns) = netns.file_name() {
            let resolv = std::path::Path::new("/etc/netns")
                .join(ns)
                .join("resolv.conf");
            if resolv.exists() {
                files.push(Mount {
                    host_path: resolv,
                    guest_path: "/etc/resolv.conf".into(),
                    read_only: false,
                });
            }
        }
        Ok(files)
    }

    /// Run the container image to its end (or the pod's stop).
    pub(super) async fn run_oci(
        &mut self,
        image: Arc<OciImage>,
        env: Env,
        mounts: Vec<Mount>,
        probes: Vec<Probe>,
    ) -> Outcome {
        let Some(rt) = self.ctx.oci.clone() else {
            return Outcome::Failed(
                "CreateContainerError",
                format!(
                    "image {:?} is a container image, and this node has no container runtime (containerd is not available)",
                    image.reference
                ),
            );
        };
        let defaults = match image.defaults() {
            Ok(d) => d,
            Err(e) => return Outcome::Failed("CreateContainerError", e.to_string()),
        };
        let parent = match rt.import(&image).await {
            Ok(p) => p,
            Err(e) => return Outcome::Failed("CreateContainerError", e.to_string()),
        };
        let netns = self.netns.clone();
        let files = match self.pod_files(&netns) {
            Ok(f) => f,
            Err(e) => return Outcome::Failed("CreateContainerError", e),
        };
        let spec = match self.oci_spec(&defaults, &env, mounts, &netns, &files) {
            Ok(s) => s,
            Err(e) => return Outcome::Failed("CreateContainerConfigError", e),
        };
        let restarts = self.restarts();
        let log = self.ctx.logs.path(
            &self.pod.namespace,
            &self.pod.name,
            &self.pod.uid,
            &self.name(),
            restarts,
        );
        let task = match rt.create(&spec, &image.reference, &parent, &log).await {
            Ok(t) => t,
            // runc refused to start the process (no such command, bad user…).
            Err(
                e @ OciError::Call {
                    call: "task create",
                    ..
                },
            ) => return Outcome::Failed("RunContainerError", e.to_string()),
            Err(e) => return Outcome::Failed("CreateContainerError", e.to_string()),
        };
        if let Err(e) = task.start().await {
            let _ = task.remove().await;
            return Outcome::Failed("RunContainerError", e.to_string());
        }
        let key = self.task_key();
        self.ctx
            .tasks
            .lock()
            .expect("tasks")
            .insert(key.clone(), task.clone());
        let outcome = self.supervise_task(&task, &probes).await;
        self.ctx.tasks.lock().expect("tasks").remove(&key);
        if let Err(e) = task.remove().await {
            tracing::warn!(container = %task.id, error = %e, "container clean-up failed");
        }
        outcome
    }

    /// `namespace/pod/container`, the key exec finds a running task by.
    fn task_key(&self) -> String {
        format!("{}/{}/{}", self.pod.namespace, self.pod.name, self.name())
    }

    /// Wait for the task's end, its probes' verdict or the pod's stop.
    async fn supervise_task(&mut self, task: &Task, probes: &[Probe]) -> Outcome {
        let waiter = {
            let t = task.clone();
            tokio::spawn(async move { t.wait().await })
        };
        let mut waiter = super::super::AbortOnDrop(waiter);
        let checker = Arc::new(self.task_checker(task));
        let (started_at, mut probing, liveness, readiness) =
            self.start_probed(probes, checker).await;
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => {
                    self.terminate(task, &mut waiter.0).await;
                    return Outcome::Stopped;
                }
                r = &mut waiter.0 => {
                    let status = match r {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return Outcome::Failed("RunContainerError", e.to_string()),
                        Err(e) => return Outcome::Failed("RunContainerError", format!("wait: {e}")),
                    };
                    let oom = task.oom_killed();
                    if oom {
                        self.ctx.events.record(&self.subject(), true, "OOMKilling",
                            &format!("container {} was killed at its memory limit", self.name())).await;
                    }
                    let reason = match (oom, status) {
                        (true, _) => "OOMKilled",
                        (false, 0) => "Completed",
                        _ => "Error",
                    };
                    return Outcome::Ended(Ended {
                        exit_code: status as i32,
                        reason: reason.into(),
                        message: None,
                        started_at,
                        finished_at: now(),
                    });
                }
                Some(report) = probing.rx.recv() => {
                    if let Some(why) = self.probed(&report, &mut probing, &liveness, &readiness).await {
                        self.terminate(task, &mut waiter.0).await;
                        return killed_by_probe(why, started_at);
                    }
                }
            }
        }
    }

    /// The preStop hook (within the grace period), SIGTERM, then SIGKILL once
    /// the grace period is over (at least 2 s after SIGTERM, as the kubelet gives).
    async fn terminate(
        &self,
        task: &Task,
        waiter: &mut tokio::task::JoinHandle<Result<u32, OciError>>,
    ) {
        let grace = self.pod.grace;
        let start = tokio::time::Instant::now();
        self.pre_stop(task, grace).await;
        let _ = task.signal(15).await;
        let left = grace
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(2));
        if tokio::time::timeout(left, &mut *waiter).await.is_err() {
            let _ = task.signal(9).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        }
    }

    /// Run `lifecycle.preStop` (exec in the container, httpGet to the pod or
    /// its `host`, tcpSocket, sleep) for at most `budget`; a failure is a
    /// `FailedPreStopHook` warning and the stop goes on.
    async fn pre_stop(&self, task: &Task, budget: Duration) {
        let Some(hook) = self
            .spec
            .pointer("/lifecycle/preStop")
            .filter(|v| v.is_object())
        else {
            return;
        };
        let pod_ip = self.view.borrow().pod_ip.clone();
        let host = ["httpGet", "tcpSocket"]
            .iter()
            .find_map(|k| hook.pointer(&format!("/{k}/host")).and_then(Value::as_str))
            .map(str::to_string);
        let result = match (
            Handler::parse(hook, &self.spec, "preStop"),
            host.or(pod_ip).and_then(|ip| ip.parse().ok()),
        ) {
            (Err(e), _) => Err(e),
            (Ok(Handler::Exec { command }), _) => {
                let h = Handler::Exec { command };
                let checker = self.task_checker(task);
                let ip = std::net::IpAddr::from([127, 0, 0, 1]);
                tokio::time::timeout(budget, checker.check(ip, &h, budget))
                    .await
                    .unwrap_or_else(|_| Err("the hook ran past the grace period".into()))
            }
            (Ok(h), Some(ip)) => {
                tokio::time::timeout(budget, self.ctx.probes.check(ip, &h, budget))
                    .await
                    .unwrap_or_else(|_| Err("the hook ran past the grace period".into()))
            }
            (Ok(_), None) => Err("the pod has no IP to send the hook to".into()),
        };
        if let Err(why) = result {
            self.ctx
                .events
                .record(
                    &self.subject(),
                    true,
                    "FailedPreStopHook",
                    &format!("PreStopHook failed: {why}"),
                )
                .await;
        }
    }

    fn task_checker(&self, task: &Task) -> TaskChecker {
        TaskChecker {
            task: task.clone(),
            scratch: self.ctx.logs.0.join(".exec"),
            net: self.ctx.probes.clone(),
        }
    }
}

/// Checks for a container image's run: `exec` runs the command in the
/// container (exit code 0 passes), everything else goes over the network.
struct TaskChecker {
    task: Task,
    scratch: std::path::PathBuf,
    net: Arc<dyn Checker>,
}

impl Checker for TaskChecker {
    fn check<'a>(
        &'a self,
        ip: std::net::IpAddr,
        h: &'a Handler,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), String>> {
        let Handler::Exec { command } = h else {
            return self.net.check(ip, h, timeout);
        };
        Box::pin(async move {
            let out = self
                .task
                .exec(command, &self.scratch)
                .await
                .map_err(|e| format!("exec {command:?}: {e}"))?;
            if out.exit_code == 0 {
                return Ok(());
            }
            let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
            said.push_str(&String::from_utf8_lossy(&out.stderr));
            Err(format!(
                "command {command:?} exited with {}: {}",
                out.exit_code,
                said.trim()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_users() {
        assert_eq!(image_user(None).unwrap(), (None, None));
        assert_eq!(image_user(Some("1000")).unwrap(), (Some(1000), None));
        assert_eq!(image_user(Some("root:12")).unwrap(), (Some(0), Some(12)));
        assert!(
            image_user(Some("nobody"))
                .unwrap_err()
                .contains("not numeric")
        );
    }
}
