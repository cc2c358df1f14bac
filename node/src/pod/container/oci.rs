//! The container-image side of a container: its containerd spec resolved
//! from the pod's container, securityContext and the image's defaults, the
//! pod files every container sees (hosts, hostname, resolv.conf), the
//! `preStop` hook and `exec` probes run inside the container.
//!
//! **The spec is built from the pod and the image only; a configuration the
//! node refuses (privileged where not allowed, root with runAsNonRoot, a
//! non-numeric image user) is a `CreateContainerConfigError`, never a run.**

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Capabilities, Container, PodSecurityContext, SecurityContext};
use skiff_common::sysctl::SAFE as SAFE_SYSCTLS;
use skiff_runtimes::Mount;
use skiff_runtimes::oci::OciContainer;
use skiff_runtimes::oci::SecurityOptions;
use skiff_runtimes::oci::seccomp::Seccomp;
use skiff_runtimes::oci::spec::HostNamespaces;
use skiff_runtimes::oci::spec::{argv, merge_env};
use skiff_runtimes::oci::unpack::ImageDefaults;
use skiff_runtimes::{ResolveSpec, Running, RuntimeError};

use super::super::env::Env;
use super::super::probes::{Checker, Handler, Handlers};
use super::super::{NodeCtx, PodInfo, resource};
use super::Runner;
use futures::future::BoxFuture;

/// The most of an exec probe's output its failure message carries.
const MAX_PROBE_OUTPUT: usize = 10 * 1024;

/// Processes a container may run unless the agent says otherwise.
pub const PIDS_LIMIT: i64 = 4096;

/// A field of the container's securityContext, else the pod's.
fn security<T>(
    container: &Container,
    pod: Option<&PodSecurityContext>,
    field: impl Fn(&SecurityContext) -> Option<T>,
    pod_field: impl Fn(&PodSecurityContext) -> Option<T>,
) -> Option<T> {
    container
        .security_context
        .as_ref()
        .and_then(field)
        .or_else(|| pod.and_then(pod_field))
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

/// A user or group id from a security context. A negative id counts as
/// unset (as the container's own field, it still hides the pod's); one past
/// Kubernetes' range (0 to 2^31 - 1) is refused, never wrapped (2^32 would
/// be root).
fn security_id(container: &str, field: &str, v: Option<i64>) -> Result<Option<u32>, String> {
    match v {
        Some(v) if v > i64::from(i32::MAX) => Err(format!(
            "container {container}: {field} {v} is out of range (0 to 2147483647)"
        )),
        Some(v) => Ok(u32::try_from(v).ok()),
        None => Ok(None),
    }
}

/// What a container image's spec is built from: the pod's container, its
/// environment and mounts, and the pod's place on the network.
pub(super) struct OciSpecOf {
    pub ctx: Arc<NodeCtx>,
    pub pod: Arc<PodInfo>,
    /// The pod's container.
    pub container: Container,
    pub name: String,
    pub env: Env,
    pub mounts: Vec<Mount>,
    pub netns: std::path::PathBuf,
    pub pod_ip: Option<String>,
}

impl ResolveSpec for OciSpecOf {
    fn resolve(&self, image: &ImageDefaults) -> Result<OciContainer, RuntimeError> {
        let files = self.pod_files().map_err(RuntimeError::Create)?;
        self.oci_spec(image, &files).map_err(RuntimeError::Config)
    }
}

impl OciSpecOf {
    /// The spec of this container for containerd, or a configuration error.
    fn oci_spec(&self, image: &ImageDefaults, files: &[Mount]) -> Result<OciContainer, String> {
        let (env, netns) = (&self.env, self.netns.as_path());
        let mut mounts = self.mounts.clone();
        let pod_security = self.pod.spec.security_context.as_ref();
        let c = &self.container;
        let sc = c.security_context.as_ref();
        let expanded = |list: &Option<Vec<String>>| -> Vec<String> {
            list.iter().flatten().map(|s| env.expand(s)).collect()
        };
        let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
        if privileged && !self.ctx.allow_privileged {
            return Err(format!(
                "container {} is privileged, which this node does not allow (start the agent with --allow-privileged)",
                self.name
            ));
        }
        let (image_uid, image_gid) = image_user(image.user.as_deref())?;
        let id = |field: &str, v: Option<i64>| security_id(&self.name, field, v);
        let uid = id(
            "securityContext.runAsUser",
            security(c, pod_security, |s| s.run_as_user, |p| p.run_as_user),
        )?
        .or(image_uid)
        .unwrap_or(0);
        let gid = id(
            "securityContext.runAsGroup",
            security(c, pod_security, |s| s.run_as_group, |p| p.run_as_group),
        )?
        .or(image_gid)
        .unwrap_or(0);
        if uid == 0
            && security(
                c,
                pod_security,
                |s| s.run_as_non_root,
                |p| p.run_as_non_root,
            ) == Some(true)
        {
            return Err(format!(
                "container {} has runAsNonRoot and its image will run as root",
                self.name
            ));
        }
        let mut supplemental = Vec::new();
        for g in pod_security
            .and_then(|p| p.supplemental_groups.as_ref())
            .into_iter()
            .flatten()
        {
            supplemental.extend(id("securityContext.supplementalGroups", Some(*g))?);
        }
        supplemental.extend(id(
            "securityContext.fsGroup",
            pod_security.and_then(|p| p.fs_group),
        )?);
        let quantity =
            |kind: &str, name: &str| resource(c, kind, name).and_then(crate::pod::quantity);
        let cpu_millis =
            |kind: &str| quantity(kind, "cpu").map(|cores| (cores * 1000.0).round() as i64);
        let capabilities = |list: fn(&Capabilities) -> Option<&Vec<String>>| -> Vec<String> {
            sc.and_then(|s| s.capabilities.as_ref())
                .and_then(list)
                .cloned()
                .unwrap_or_default()
        };
        mounts.extend(files.iter().cloned());
        Ok(OciContainer {
            id: format!("{}-{}", self.pod.uid, self.name),
            hostname: self.pod.name.clone(),
            args: argv(&expanded(&c.command), &expanded(&c.args), image),
            env: merge_env(&image.env, &env.vars),
            cwd: c
                .working_dir
                .clone()
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
                self.name
            ),
            memory_limit: quantity("limits", "memory").map(|b| b as i64),
            cpu_shares: Some(crate::cgroup::cpu_shares(
                cpu_millis("requests")
                    .or_else(|| cpu_millis("limits"))
                    .map_or(0, |m| m.max(0) as u64),
            )),
            cpu_quota: cpu_millis("limits")
                .filter(|m| *m > 0)
                .map(|m| crate::cgroup::cfs_quota(m as u64)),
            pids_limit: Some(PIDS_LIMIT),
            host: HostNamespaces {
                network: self.pod.spec.host_network == Some(true),
                pid: self.pod.spec.host_pid == Some(true),
                ipc: self.pod.spec.host_ipc == Some(true),
            },
            security: SecurityOptions {
                privileged,
                read_only_root: sc
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
                cap_add: capabilities(|c| c.add.as_ref()),
                cap_drop: capabilities(|c| c.drop.as_ref()),
                seccomp: self.seccomp(privileged)?,
                unmasked_proc: sc.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked"),
                sysctls: self.sysctls()?,
            },
        })
    }

    /// The container's seccomp profile: its own `seccompProfile`, else the
    /// pod's, else `RuntimeDefault`; `Localhost` read from the node's profile
    /// directory (a path beneath it, no `..`).
    fn seccomp(&self, privileged: bool) -> Result<Seccomp, String> {
        let profile = security(
            &self.container,
            self.pod.spec.security_context.as_ref(),
            |s| s.seccomp_profile.clone(),
            |p| p.seccomp_profile.clone(),
        );
        let Some(p) = profile else {
            return Ok(Seccomp::RuntimeDefault);
        };
        match p.type_.as_str() {
            "RuntimeDefault" => Ok(Seccomp::RuntimeDefault),
            "Unconfined" => Ok(Seccomp::Unconfined),
            "Localhost" if privileged => Ok(Seccomp::Unconfined),
            "Localhost" => {
                let rel = p.localhost_profile.unwrap_or_default();
                if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|s| s == "..") {
                    return Err(format!(
                        "container {}: seccomp localhostProfile {rel:?} must be a relative path beneath the node's profile directory",
                        self.name
                    ));
                }
                let path = self.ctx.seccomp_dir.join(&rel);
                let text = std::fs::read(&path).map_err(|e| {
                    format!(
                        "container {}: seccomp profile {}: {e}",
                        self.name,
                        path.display()
                    )
                })?;
                let v = skiff_runtimes::oci::seccomp::parse_profile(&text).map_err(|e| {
                    format!(
                        "container {}: seccomp profile {}: {e}",
                        self.name,
                        path.display()
                    )
                })?;
                Ok(Seccomp::Localhost(v))
            }
            other => Err(format!(
                "container {}: unknown seccomp profile type {other:?}",
                self.name
            )),
        }
    }

    /// The pod's sysctls: the safe, namespaced set only (others need a node
    /// that allows them, which Skiff's do not).
    fn sysctls(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for s in self
            .pod
            .spec
            .security_context
            .as_ref()
            .and_then(|p| p.sysctls.as_ref())
            .into_iter()
            .flatten()
        {
            if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
                return Err(format!(
                    "sysctl {:?} is not allowed on this node (only the safe set is)",
                    s.name
                ));
            }
            out.push((s.name.clone(), s.value.clone()));
        }
        Ok(out)
    }

    /// Files every container of the pod sees: hostname, hosts, resolv.conf.
    fn pod_files(&self) -> Result<Vec<Mount>, String> {
        let netns = self.netns.as_path();
        let dir = self.ctx.pod_dir(&self.pod.uid).0.join("etc");
        std::fs::create_dir_all(&dir).map_err(|e| format!("pod files: {e}"))?;
        let ip = self.pod_ip.clone().unwrap_or_default();
        let host_network = self.pod.spec.host_network == Some(true);
        // A pod on the node's network has the node's name and hosts file, as
        // the kubelet gives it.
        let name = if host_network {
            crate::agent::hostname()
        } else {
            self.pod.name.clone()
        };
        let hosts = if host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            format!(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"
            )
        };
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
        if host_network {
            write("resolv.conf", &self.host_network_resolv())?;
            files.push(Mount {
                host_path: dir.join("resolv.conf"),
                guest_path: "/etc/resolv.conf".into(),
                read_only: false,
            });
        } else if let Some(ns) = netns.file_name() {
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
}

impl OciSpecOf {
    /// The resolv.conf of a pod on the node's network: the cluster DNS with
    /// `dnsPolicy: ClusterFirstWithHostNet` (or `None` and its `dnsConfig`),
    /// else the node's own, as the kubelet does.
    fn host_network_resolv(&self) -> String {
        crate::net::resolv::render(
            &self.pod.namespace,
            &self.pod.spec,
            &self.ctx.resolv_sources(true),
        )
    }
}

impl Runner {
    /// Run `lifecycle.preStop` (exec in the container, httpGet to the pod or
    /// its `host`, tcpSocket, sleep) for at most `budget`; a failure is a
    /// `FailedPreStopHook` warning and the stop goes on.
    pub(super) async fn pre_stop(&self, run: &Arc<dyn Running>, budget: Duration) {
        let Some(hook) = self
            .spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
        else {
            return;
        };
        let pod_ip = self.view.borrow().pod_ip.clone();
        let host = hook
            .http_get
            .as_ref()
            .and_then(|h| h.host.clone())
            .or_else(|| hook.tcp_socket.as_ref().and_then(|t| t.host.clone()));
        let result = match (
            Handler::parse(Handlers::from(hook), &self.spec, "preStop"),
            host.or(pod_ip).and_then(|ip| ip.parse().ok()),
        ) {
            (Err(e), _) => Err(e),
            (Ok(Handler::Exec { command }), _) => {
                let h = Handler::Exec { command };
                let checker = self.run_checker(run);
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

    /// Checks for one run: `exec` in the container where the runtime can.
    pub(super) fn run_checker(&self, run: &Arc<dyn Running>) -> RunChecker {
        RunChecker {
            run: run.clone(),
            scratch: self.ctx.logs.0.join(".exec"),
            net: self.ctx.probes.clone(),
        }
    }
}

/// Checks for a run: `exec` runs the command in the container (exit code 0
/// passes) where the runtime has processes, everything else goes over the
/// network.
pub(super) struct RunChecker {
    run: Arc<dyn Running>,
    scratch: std::path::PathBuf,
    net: Arc<dyn Checker>,
}

impl Checker for RunChecker {
    fn check<'a>(
        &'a self,
        ip: std::net::IpAddr,
        h: &'a Handler,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), String>> {
        let Handler::Exec { command } = h else {
            return self.net.check(ip, h, timeout);
        };
        if !self.run.can_exec() {
            return self.net.check(ip, h, timeout);
        }
        Box::pin(async move {
            let out = self
                .run
                .exec(command, &self.scratch)
                .await
                .map_err(|e| format!("exec {command:?}: {e}"))?;
            if out.exit_code == 0 {
                return Ok(());
            }
            let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
            said.push_str(&String::from_utf8_lossy(&out.stderr));
            if said.len() > MAX_PROBE_OUTPUT {
                // As the kubelet: a probe's message carries at most 10 KiB.
                let mut end = MAX_PROBE_OUTPUT;
                while !said.is_char_boundary(end) {
                    end -= 1;
                }
                said.truncate(end);
            }
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
    fn security_ids_are_in_range_or_refused() {
        let id = |v| security_id("app", "securityContext.runAsUser", v);
        assert_eq!(id(None), Ok(None));
        assert_eq!(id(Some(-1)), Ok(None));
        assert_eq!(id(Some(0)), Ok(Some(0)));
        assert_eq!(id(Some(2_147_483_647)), Ok(Some(2_147_483_647)));
        // 2^32 as a u32 would be 0: root.
        let e = id(Some(4_294_967_296)).unwrap_err();
        assert!(e.contains("runAsUser 4294967296 is out of range"), "{e}");
        assert!(id(Some(2_147_483_648)).is_err());
    }

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
