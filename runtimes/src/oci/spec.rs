//! The OCI runtime spec of one container, built from what the agent resolved
//! out of the pod spec: process, user, capabilities, mounts, the pod's network
//! namespace, cgroup path and limits. Checked by parsing it into `oci-spec`'s
//! `Spec` type before containerd sees it.
//!
//! **A container gets Docker's default capability set, masked and read-only
//! kernel paths and a deny-by-default device cgroup unless it is privileged;
//! privileged containers are only ever built when the agent allows them.**

use std::path::PathBuf;

use serde_json::{Value, json};

use super::OciError;
use super::unpack::ImageDefaults;
use crate::Mount;

/// Docker's (and containerd's CRI) default capabilities.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability a privileged container gets.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
];

/// The securityContext as it applies to one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    pub privileged: bool,
    pub read_only_root: bool,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
    /// Capability names as Kubernetes writes them (`NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// The seccomp profile (`RuntimeDefault` unless the pod says otherwise).
    pub seccomp: super::seccomp::Seccomp,
    /// `procMount: Unmasked`: /proc without masked or read-only paths.
    pub unmasked_proc: bool,
    /// Namespaced sysctls set in the container (already checked as allowed).
    pub sysctls: Vec<(String, String)>,
}

/// Everything the spec of one container is made from.
#[derive(Debug, Clone, Default)]
pub struct OciContainer {
    /// containerd's container ID.
    pub id: String,
    pub hostname: String,
    /// The full argv.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub supplemental_gids: Vec<u32>,
    /// The pod's network namespace (shared by all its containers).
    pub netns: PathBuf,
    /// Bind mounts (volumes, resolv.conf, hosts, hostname).
    pub mounts: Vec<Mount>,
    /// The container's cgroup (absolute, under the pod's).
    pub cgroups_path: String,
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// CFS quota and period, both in µs.
    pub cpu_quota: Option<(i64, u64)>,
    pub pids_limit: Option<i64>,
    pub security: SecurityOptions,
    /// The host's namespaces the container shares instead of its own.
    pub host: HostNamespaces,
}

/// `hostNetwork` (the host's network and UTS namespaces: no `netns` is
/// joined and the host name is the node's), `hostPID` and `hostIPC`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    pub network: bool,
    pub pid: bool,
    pub ipc: bool,
}

impl HostNamespaces {
    /// The namespaces the container gets of its own.
    fn linux(&self, netns: &std::path::Path) -> Value {
        let mut ns = Vec::new();
        if !self.pid {
            ns.push(json!({"type": "pid"}));
        }
        if !self.ipc {
            ns.push(json!({"type": "ipc"}));
        }
        if !self.network {
            ns.push(json!({"type": "uts"}));
        }
        ns.push(json!({"type": "mount"}));
        if !self.network {
            ns.push(json!({"type": "network", "path": netns}));
        }
        Value::Array(ns)
    }
}

/// The argv Kubernetes runs: `command` replaces the image's Entrypoint (and
/// drops its Cmd), `args` replaces Cmd.
pub fn argv(command: &[String], args: &[String], image: &ImageDefaults) -> Vec<String> {
    match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(args).cloned().collect(),
        (true, false) => image.entrypoint.iter().chain(args).cloned().collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// The image's environment overridden by the container's.
pub fn merge_env(image: &[(String, String)], pod: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = image
        .iter()
        .filter(|(k, _)| !pod.iter().any(|(p, _)| p == k))
        .cloned()
        .collect();
    out.extend(pod.iter().cloned());
    out
}

fn cap_name(c: &str) -> String {
    let c = c.to_ascii_uppercase();
    if c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    }
}

/// The capability set: Docker's defaults, minus drops (`ALL` drops every
/// default), plus adds (`ALL` adds every capability).
pub fn capabilities(sec: &SecurityOptions) -> Vec<String> {
    if sec.privileged || sec.cap_add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        return ALL_CAPS.iter().map(|c| c.to_string()).collect();
    }
    let drop_all = sec.cap_drop.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let drops: Vec<String> = sec.cap_drop.iter().map(|c| cap_name(c)).collect();
    let mut caps: Vec<String> = if drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drops.contains(c))
            .collect()
    };
    for c in &sec.cap_add {
        let c = cap_name(c);
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    caps
}

impl OciContainer {
    /// The process part (also what an exec runs, with other args).
    pub fn process(&self, args: &[String]) -> Value {
        let caps = capabilities(&self.security);
        json!({
            "terminal": false,
            "user": {"uid": self.uid, "gid": self.gid, "additionalGids": self.supplemental_gids},
            "args": args,
            "env": self.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": if self.cwd.is_empty() { "/" } else { self.cwd.as_str() },
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": self.security.no_new_privileges,
        })
    }

    /// The whole runtime spec, as JSON that parses into `oci_spec::runtime::Spec`.
    pub fn spec(&self) -> Result<Vec<u8>, OciError> {
        if self.args.is_empty() {
            return Err(OciError::Spec(
                "no command: the pod gives none and the image has no Entrypoint or Cmd".into(),
            ));
        }
        let privileged = self.security.privileged;
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if privileged { "rw" } else { "ro" }]}),
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        ];
        for m in &self.mounts {
            let mut options = vec!["rbind", "rprivate"];
            options.push(if m.read_only { "ro" } else { "rw" });
            mounts.push(json!({
                "destination": m.guest_path,
                "type": "bind",
                "source": m.host_path,
                "options": options,
            }));
        }
        let mut resources = json!({"devices": [{"allow": privileged, "access": "rwm"}]});
        if let Some(limit) = self.memory_limit {
            resources["memory"] = json!({"limit": limit});
        }
        let mut cpu = serde_json::Map::new();
        if let Some(s) = self.cpu_shares {
            cpu.insert("shares".into(), json!(s));
        }
        if let Some((quota, period)) = self.cpu_quota {
            cpu.insert("quota".into(), json!(quota));
            cpu.insert("period".into(), json!(period));
        }
        if !cpu.is_empty() {
            resources["cpu"] = Value::Object(cpu);
        }
        if let Some(p) = self.pids_limit {
            resources["pids"] = json!({"limit": p});
        }
        let mut linux = json!({
            "resources": resources,
            "cgroupsPath": self.cgroups_path,
            "namespaces": self.host.linux(&self.netns),
        });
        if let Some(profile) = super::seccomp::linux_seccomp(
            &self.security.seccomp,
            &capabilities(&self.security),
            privileged,
        ) {
            linux["seccomp"] = profile;
        }
        if !self.security.sysctls.is_empty() {
            linux["sysctl"] = Value::Object(
                self.security
                    .sysctls
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect(),
            );
        }
        if !privileged && !self.security.unmasked_proc {
            linux["maskedPaths"] = json!([
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
                "/sys/devices/virtual/powercap"
            ]);
            linux["readonlyPaths"] = json!([
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ]);
        }
        let mut doc = json!({
            "ociVersion": "1.0.2",
            "process": self.process(&self.args),
            "root": {"path": "rootfs", "readonly": self.security.read_only_root},
            "mounts": mounts,
            "linux": linux,
        });
        // A host name needs a UTS namespace of the container's own.
        if !self.host.network {
            doc["hostname"] = json!(self.hostname);
        }
        let spec: oci_spec::runtime::Spec =
            serde_json::from_value(doc).map_err(|e| OciError::Spec(e.to_string()))?;
        serde_json::to_vec(&spec).map_err(|e| OciError::Spec(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn argv_follows_kubernetes_rules() {
        let img = ImageDefaults {
            entrypoint: s(&["/ep"]),
            cmd: s(&["cmd"]),
            ..Default::default()
        };
        assert_eq!(argv(&[], &[], &img), s(&["/ep", "cmd"]));
        assert_eq!(argv(&[], &s(&["a"]), &img), s(&["/ep", "a"]));
        assert_eq!(argv(&s(&["/c"]), &[], &img), s(&["/c"]));
        assert_eq!(argv(&s(&["/c"]), &s(&["a"]), &img), s(&["/c", "a"]));
    }

    #[test]
    fn env_of_the_pod_wins() {
        let img = vec![("PATH".into(), "/bin".into()), ("A".into(), "1".into())];
        let pod = vec![("A".into(), "2".into())];
        assert_eq!(
            merge_env(&img, &pod),
            vec![("PATH".into(), "/bin".into()), ("A".into(), "2".into())]
        );
    }

    #[test]
    fn capabilities_table() {
        let sec = |add: &[&str], drop: &[&str]| SecurityOptions {
            cap_add: s(add),
            cap_drop: s(drop),
            ..Default::default()
        };
        assert_eq!(capabilities(&sec(&[], &[])).len(), DEFAULT_CAPS.len());
        let c = capabilities(&sec(&["NET_ADMIN"], &["KILL"]));
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_KILL".to_string()));
        assert_eq!(
            capabilities(&sec(&["NET_BIND_SERVICE"], &["ALL"])),
            s(&["CAP_NET_BIND_SERVICE"])
        );
        assert_eq!(capabilities(&sec(&["ALL"], &[])).len(), ALL_CAPS.len());
    }

    #[test]
    fn spec_parses_as_an_oci_spec() {
        let c = OciContainer {
            id: "c1".into(),
            hostname: "pod".into(),
            args: s(&["/bin/sh", "-c", "true"]),
            env: vec![("A".into(), "1".into())],
            netns: "/run/netns/x".into(),
            mounts: vec![Mount {
                host_path: "/tmp/v".into(),
                guest_path: "/data".into(),
                read_only: true,
            }],
            cgroups_path: "/skiff/n/pod1/c1".into(),
            memory_limit: Some(64 << 20),
            cpu_quota: Some((50_000, 100_000)),
            pids_limit: Some(100),
            security: SecurityOptions {
                read_only_root: true,
                no_new_privileges: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let v: Value = serde_json::from_slice(&c.spec().unwrap()).unwrap();
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["namespaces"][4]["path"], "/run/netns/x");
        assert!(
            v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["destination"] == "/data"
                    && m["options"].as_array().unwrap().contains(&json!("ro")))
        );
        let empty = OciContainer::default();
        assert!(empty.spec().unwrap_err().to_string().contains("no command"));
        // The host's namespaces: none of the container's own but mount.
        let host = OciContainer {
            host: HostNamespaces {
                network: true,
                pid: true,
                ipc: true,
            },
            ..c
        };
        let v: Value = serde_json::from_slice(&host.spec().unwrap()).unwrap();
        assert_eq!(v["linux"]["namespaces"], json!([{"type": "mount"}]));
        assert!(v.get("hostname").is_none());
    }
}
