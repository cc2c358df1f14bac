//! Eviction thresholds in the kubelet's notation (`--eviction-hard`):
//! `memory.available<100Mi,nodefs.available<10%`, each a signal, `<`, and a
//! quantity or a percentage of the signal's capacity.

use std::fmt;

/// What the node watches (the kubelet's eviction signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Memory not in use (MemAvailable).
    MemoryAvailable,
    /// Free bytes on the filesystem of pod volumes (emptyDir).
    NodefsAvailable,
    /// Free inodes there.
    NodefsInodesFree,
    /// Free bytes on the filesystem of images and container layers.
    ImagefsAvailable,
    /// Free inodes there.
    ImagefsInodesFree,
    /// Process ids left before `kernel.pid_max`.
    PidAvailable,
}

/// The node condition a signal's pressure shows as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    MemoryPressure,
    DiskPressure,
    PidPressure,
}

impl Condition {
    pub const ALL: [Condition; 3] = [
        Condition::MemoryPressure,
        Condition::DiskPressure,
        Condition::PidPressure,
    ];

    /// The condition's type in the Node's status.
    pub fn type_name(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
            Condition::PidPressure => "PIDPressure",
        }
    }

    /// The taint the node lifecycle controller puts on a node under it.
    pub fn taint(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "node.kubernetes.io/memory-pressure",
            Condition::DiskPressure => "node.kubernetes.io/disk-pressure",
            Condition::PidPressure => "node.kubernetes.io/pid-pressure",
        }
    }

    /// `(reason, message)` of the condition when true and when false, as
    /// the kubelet words them.
    pub fn words(self, on: bool) -> (&'static str, &'static str) {
        match (self, on) {
            (Condition::MemoryPressure, true) => (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (Condition::MemoryPressure, false) => (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (Condition::DiskPressure, true) => {
                ("KubeletHasDiskPressure", "kubelet has disk pressure")
            }
            (Condition::DiskPressure, false) => {
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            }
            (Condition::PidPressure, true) => (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (Condition::PidPressure, false) => (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        }
    }
}

/// What pods are ranked by when a signal's threshold is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Memory,
    EphemeralStorage,
    Pids,
}

impl Signal {
    const NAMES: [(&'static str, Signal); 6] = [
        ("memory.available", Signal::MemoryAvailable),
        ("nodefs.available", Signal::NodefsAvailable),
        ("nodefs.inodesFree", Signal::NodefsInodesFree),
        ("imagefs.available", Signal::ImagefsAvailable),
        ("imagefs.inodesFree", Signal::ImagefsInodesFree),
        ("pid.available", Signal::PidAvailable),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("", |(n, _)| n)
    }

    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            Signal::PidAvailable => Condition::PidPressure,
            _ => Condition::DiskPressure,
        }
    }

    pub fn resource(self) -> Resource {
        match self.condition() {
            Condition::MemoryPressure => Resource::Memory,
            Condition::DiskPressure => Resource::EphemeralStorage,
            Condition::PidPressure => Resource::Pids,
        }
    }

    /// The resource's name in the kubelet's eviction message.
    pub fn resource_name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
            _ => "ephemeral-storage",
        }
    }

    /// Whether the signal counts bytes (printed as a quantity).
    fn bytes(self) -> bool {
        matches!(
            self,
            Signal::MemoryAvailable | Signal::NodefsAvailable | Signal::ImagefsAvailable
        )
    }
}

/// A threshold's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An amount (bytes, inodes or pids).
    Quantity(u64),
    /// A fraction of the signal's capacity, 0..=1.
    Percentage(f64),
}

/// `signal < value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: Value,
}

/// What was measured of one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub available: u64,
    pub capacity: u64,
}

impl Threshold {
    /// The threshold in the signal's units, for a given capacity.
    pub fn amount(&self, capacity: u64) -> u64 {
        match self.value {
            Value::Quantity(q) => q,
            Value::Percentage(p) => (capacity as f64 * p).round() as u64,
        }
    }

    /// Whether `seen` is below the threshold.
    pub fn met(&self, seen: Observed) -> bool {
        seen.available < self.amount(seen.capacity)
    }

    /// `amount` as the kubelet prints it (`100Mi`, `5%` of inodes as a count).
    pub fn show(&self, n: u64) -> String {
        if self.signal.bytes() {
            bytes(n)
        } else {
            n.to_string()
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            Value::Quantity(q) => write!(f, "{}<{}", self.signal.name(), self.show(q)),
            Value::Percentage(p) => write!(f, "{}<{}%", self.signal.name(), p * 100.0),
        }
    }
}

/// A byte count as a Kubernetes quantity: the largest binary suffix that
/// divides it (`100Mi`, `52756Ki`, `17`).
pub fn bytes(n: u64) -> String {
    for (suffix, unit) in [
        ("Ei", 1u64 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{}{suffix}", n / unit);
        }
    }
    if n >= 1 << 10 {
        return format!("{}Ki", n / 1024);
    }
    n.to_string()
}

/// The kubelet's default hard thresholds, with Skiff's disk figures: the
/// kubelet's 10% (nodefs) and 15% (imagefs) evict with tens of gigabytes
/// free on a large disk, so Skiff uses 5% for both.
pub const DEFAULT_HARD: &str = "memory.available<100Mi,nodefs.available<5%,nodefs.inodesFree<5%,imagefs.available<5%,imagefs.inodesFree<5%";

/// The thresholds of one flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds(pub Vec<Threshold>);

/// `parse`, for a command-line flag.
pub fn flag(spec: &str) -> Result<Thresholds, String> {
    parse(spec).map(Thresholds)
}

/// Parse `--eviction-hard`: comma-separated thresholds; an empty string is
/// none. A signal named twice, an operator other than `<`, a negative or
/// malformed quantity, or a percentage outside 0–100 is an error.
pub fn parse(spec: &str) -> Result<Vec<Threshold>, String> {
    let mut out: Vec<Threshold> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('<')
            .ok_or_else(|| format!("{part:?}: expected SIGNAL<VALUE (only `<` is supported)"))?;
        let name = name.trim();
        let signal = Signal::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                let known: Vec<&str> = Signal::NAMES.iter().map(|(n, _)| *n).collect();
                format!(
                    "{name:?}: unknown eviction signal (known: {})",
                    known.join(", ")
                )
            })?;
        if out.iter().any(|t| t.signal == signal) {
            return Err(format!("{name:?} is given twice"));
        }
        let value = value.trim();
        let value = if let Some(p) = value.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: {value:?} is not a percentage"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{part:?}: a percentage is between 0 and 100"));
            }
            Value::Percentage(p / 100.0)
        } else {
            let q = skiff_common::quantity::parse(value)
                .filter(|q| *q >= 0.0 && q.is_finite())
                .ok_or_else(|| format!("{part:?}: {value:?} is not a quantity"))?;
            Value::Quantity(q.ceil() as u64)
        };
        out.push(Threshold { signal, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubelet_notation() {
        let t = parse("memory.available<100Mi, nodefs.available<10%,pid.available<1000").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].signal, Signal::MemoryAvailable);
        assert_eq!(t[0].value, Value::Quantity(100 << 20));
        assert_eq!(t[1].value, Value::Percentage(0.1));
        assert_eq!(t[2].signal.condition(), Condition::PidPressure);
        assert_eq!(t[0].to_string(), "memory.available<100Mi");
        assert_eq!(t[1].to_string(), "nodefs.available<10%");
        assert!(parse("").unwrap().is_empty());
        assert_eq!(parse(DEFAULT_HARD).unwrap().len(), 5);
    }

    #[test]
    fn refuses_what_the_kubelet_refuses() {
        for bad in [
            "memory.available>1Gi",
            "memory.free<1Gi",
            "memory.available<lots",
            "memory.available<-1",
            "nodefs.available<120%",
            "memory.available<1Gi,memory.available<2Gi",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn met_against_capacity() {
        let t = parse("nodefs.available<10%").unwrap()[0];
        let seen = |available| Observed {
            available,
            capacity: 1000,
        };
        assert!(t.met(seen(99)));
        assert!(!t.met(seen(100)));
        assert_eq!(bytes(100 << 20), "100Mi");
        assert_eq!(bytes((1 << 20) + 1024), "1025Ki");
        assert_eq!(bytes(17), "17");
        assert_eq!(bytes(1 << 50), "1Pi");
    }
}
