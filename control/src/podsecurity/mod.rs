//! Pod Security admission: the `privileged`, `baseline` and `restricted`
//! levels of the Pod Security Standards, chosen per namespace with the labels
//! `pod-security.kubernetes.io/{enforce,audit,warn}[-version]`, and a cluster
//! default for namespaces without them (`baseline` enforced: Kubernetes
//! defaults to `privileged`, Skiff does not).
//!
//! **Enforce refuses a pod (403, with every failed check named); warn turns
//! the findings into response warnings; workload templates are only warned
//! about, as Kubernetes does.** Every version label is read as `latest`.

pub mod checks;

use serde_json::Value;

pub use checks::Violation;

/// A level of the Pod Security Standards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        Level::parse(s).ok_or_else(|| {
            format!("{s:?} is not a Pod Security level (privileged, baseline, restricted)")
        })
    }
}

/// The label prefix of the three modes.
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// The levels of one namespace: what is refused, and what is warned about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub enforce: Level,
    pub warn: Level,
    pub audit: Level,
}

impl Policy {
    /// Every mode at `level`.
    pub fn uniform(level: Level) -> Policy {
        Policy {
            enforce: level,
            warn: level,
            audit: level,
        }
    }

    /// The policy a namespace's labels give, over `default` for the modes it
    /// does not label. A label that names no level enforces `restricted`
    /// (a typo never opens a namespace up).
    pub fn of_namespace(ns: Option<&Value>, default: Policy) -> Policy {
        let label = |mode: &str| {
            ns.and_then(|n| n.pointer("/metadata/labels"))
                .and_then(|l| l.get(format!("{LABEL_PREFIX}{mode}")))
                .and_then(Value::as_str)
                .map(|v| Level::parse(v).unwrap_or(Level::Restricted))
        };
        Policy {
            enforce: label("enforce").unwrap_or(default.enforce),
            warn: label("warn").unwrap_or(default.warn),
            audit: label("audit").unwrap_or(default.audit),
        }
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::uniform(Level::Baseline)
    }
}

/// What a pod spec (with its object's metadata) fails at `level`.
pub fn evaluate(level: Level, meta: &Value, spec: &Value) -> Vec<Violation> {
    match level {
        Level::Privileged => Vec::new(),
        Level::Baseline => checks::baseline(meta, spec),
        Level::Restricted => {
            // Restricted's capability and seccomp checks replace baseline's.
            let mut out: Vec<Violation> = checks::baseline(meta, spec)
                .into_iter()
                .filter(|v| v.check != "non-default capabilities" && v.check != "seccompProfile")
                .collect();
            out.extend(checks::restricted(spec));
            out
        }
    }
}

/// Kubernetes' wording of a set of findings at `level`, after "violates" or
/// "would violate".
pub fn describe(level: Level, found: &[Violation]) -> String {
    let parts: Vec<String> = found
        .iter()
        .map(|v| format!("{} ({})", v.check, v.detail))
        .collect();
    format!(
        "PodSecurity \"{}:latest\": {}",
        level.as_str(),
        parts.join(", ")
    )
}

/// Where the pod spec and its metadata are in an object of `kind` (a Pod or
/// an object with a pod template): the metadata sits beside the spec.
pub fn pod_parts<'a>(group: &str, kind: &str, obj: &'a Value) -> Option<(&'a Value, &'a Value)> {
    let (spec, _) = crate::model::podspec::spec_of(group, kind)?;
    let meta = format!("{}metadata", spec.strip_suffix("spec").unwrap_or(spec));
    static EMPTY: Value = Value::Null;
    Some((obj.pointer(&meta).unwrap_or(&EMPTY), obj.pointer(spec)?))
}

/// The labels of a namespace that name no level, as admission causes.
pub fn invalid_labels(ns: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(labels) = ns.pointer("/metadata/labels").and_then(Value::as_object) {
        for mode in ["enforce", "warn", "audit"] {
            let key = format!("{LABEL_PREFIX}{mode}");
            if let Some(v) = labels.get(&key).and_then(Value::as_str)
                && Level::parse(v).is_none()
            {
                out.push((key, v.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
