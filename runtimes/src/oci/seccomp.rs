//! Seccomp for containers: `RuntimeDefault` is Skiff's own profile, which
//! refuses (EPERM) the system calls container runtimes' default profiles keep
//! from containers (kernel modules, mounts, new namespaces, keyrings, clocks,
//! reboot, BPF, perf, userfaultfd...) unless the container holds the
//! capability that would make them legitimate; `Localhost` is a profile file
//! the node keeps; `Unconfined` (and privileged containers) get none.
//!
//! **The profile allows by default and refuses a list: a program that works
//! under Docker's allow-list also works here, and what the allow-list exists
//! to keep out is kept out.** `clone3` answers ENOSYS, so libc falls back to
//! `clone`, whose namespace flags are checked.

use serde_json::{Value, json};

/// Which profile a container runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// No filter (asked for, and allowed, or privileged).
    Unconfined,
    /// Skiff's default profile.
    #[default]
    RuntimeDefault,
    /// A profile the node read from its profile directory (OCI
    /// `linux.seccomp` JSON).
    Localhost(Value),
}

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Refused whatever the capabilities.
const ALWAYS: &[&str] = &[
    "add_key",
    "create_module",
    "get_kernel_syms",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "nfsservctl",
    "query_module",
    "request_key",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    "_sysctl",
    "sysfs",
];

/// Refused unless the container has the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setns",
            "swapoff",
            "swapon",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    (
        "CAP_SYS_TIME",
        &["clock_adjtime", "clock_settime", "settimeofday", "stime"],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "mbind", "set_mempolicy", "move_pages"],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    (
        "CAP_DAC_READ_SEARCH",
        &["open_by_handle_at", "name_to_handle_at"],
    ),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd"]),
];

/// `clone` flags that make namespaces (refused without CAP_SYS_ADMIN).
const NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

fn architectures() -> Vec<&'static str> {
    if cfg!(target_arch = "x86_64") {
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    } else if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        Vec::new()
    }
}

/// The `RuntimeDefault` profile (OCI `linux.seccomp`) for a container with
/// the capability set `caps` (`CAP_*` names).
pub fn runtime_default(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut refused: Vec<&str> = ALWAYS.to_vec();
    for (cap, calls) in BY_CAPABILITY {
        if !has(cap) {
            refused.extend_from_slice(calls);
        }
    }
    let mut syscalls = vec![
        json!({"names": refused, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
    ];
    if !has("CAP_SYS_ADMIN") {
        for flag in NAMESPACE_FLAGS {
            syscalls.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": syscalls,
    })
}

/// A `Localhost` profile file: OCI `linux.seccomp` JSON, checked.
pub fn parse_profile(bytes: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(v.clone())
        .map_err(|e| format!("not an OCI seccomp profile: {e}"))?;
    Ok(v)
}

/// The `linux.seccomp` of a container under `profile` with `caps`, if any.
pub fn linux_seccomp(profile: &Seccomp, caps: &[String], privileged: bool) -> Option<Value> {
    if privileged {
        return None;
    }
    match profile {
        Seccomp::Unconfined => None,
        Seccomp::RuntimeDefault => Some(runtime_default(caps)),
        Seccomp::Localhost(v) => Some(v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &Value) -> Vec<String> {
        p["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn capabilities_open_what_they_govern() {
        let plain = runtime_default(&[]);
        let r = refused(&plain);
        for call in ["mount", "unshare", "keyctl", "bpf", "reboot", "init_module"] {
            assert!(r.contains(&call.to_string()), "{call}");
        }
        assert!(!r.contains(&"read".to_string()));
        assert_eq!(
            plain["syscalls"].as_array().unwrap().len(),
            2 + NAMESPACE_FLAGS.len()
        );
        let admin = runtime_default(&["CAP_SYS_ADMIN".into()]);
        let r = refused(&admin);
        assert!(!r.contains(&"mount".to_string()) && r.contains(&"keyctl".to_string()));
        assert_eq!(admin["syscalls"].as_array().unwrap().len(), 2);
        assert_eq!(linux_seccomp(&Seccomp::RuntimeDefault, &[], true), None);
        assert_eq!(linux_seccomp(&Seccomp::Unconfined, &[], false), None);
    }

    #[test]
    fn the_profile_parses_as_oci_seccomp() {
        let p = runtime_default(&[]);
        let parsed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
        assert!(!parsed.syscalls().as_ref().unwrap().is_empty());
    }
}
