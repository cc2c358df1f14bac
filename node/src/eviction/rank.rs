//! Which pod goes first when a node runs short, as the kubelet's eviction
//! manager ranks them: pods using more than they requested, then lower
//! priority, then the larger use above the request. Pods at or above
//! `system-cluster-critical` priority are never chosen.

use std::cmp::Ordering;

use super::thresholds::Resource;

/// Priority from which a pod is critical (`system-cluster-critical`).
pub const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// What a pod uses of one resource and what it asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
    pub requested: u64,
}

impl Usage {
    fn exceeds(self) -> bool {
        self.used > self.requested
    }

    fn above_request(self) -> i128 {
        i128::from(self.used) - i128::from(self.requested)
    }
}

/// A pod the node could evict.
#[derive(Debug, Clone, Default)]
pub struct Candidate {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    pub memory: Usage,
    pub storage: Usage,
    /// Processes and threads of the pod (0 when unknown).
    pub pids: u64,
    /// Memory in use per container, for the eviction message.
    pub containers: Vec<(String, u64, u64)>,
}

impl Candidate {
    pub fn critical(&self) -> bool {
        self.priority >= CRITICAL_PRIORITY
    }

    fn usage(&self, r: Resource) -> Usage {
        match r {
            Resource::Memory => self.memory,
            Resource::EphemeralStorage => self.storage,
            Resource::Pids => Usage {
                used: self.pids,
                requested: 0,
            },
        }
    }
}

/// Compare two candidates for eviction under pressure on `r`: `Less` goes
/// first.
pub fn order(a: &Candidate, b: &Candidate, r: Resource) -> Ordering {
    let (ua, ub) = (a.usage(r), b.usage(r));
    let by_exceeding = || ub.exceeds().cmp(&ua.exceeds());
    let by_priority = || a.priority.cmp(&b.priority);
    let by_usage = || ub.above_request().cmp(&ua.above_request());
    match r {
        // The kubelet ranks PID pressure by priority, then by processes.
        Resource::Pids => by_priority().then_with(by_usage),
        _ => by_exceeding().then_with(by_priority).then_with(by_usage),
    }
}

/// The candidates that may be evicted, first one first.
pub fn rank(candidates: &[Candidate], r: Resource) -> Vec<&Candidate> {
    let mut v: Vec<&Candidate> = candidates.iter().filter(|c| !c.critical()).collect();
    v.sort_by(|a, b| order(a, b, r));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, priority: i32, used: u64, requested: u64) -> Candidate {
        Candidate {
            name: name.into(),
            priority,
            memory: Usage { used, requested },
            storage: Usage { used, requested },
            pids: used,
            ..Default::default()
        }
    }

    fn names(v: Vec<&Candidate>) -> Vec<&str> {
        v.into_iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn qos_order_falls_out_of_the_ranking() {
        // A BestEffort pod (no request, some use) goes before a Burstable
        // pod within its request, which goes before a Guaranteed pod using
        // less than its request.
        let pods = vec![
            pod("guaranteed", 0, 100, 500),
            pod("burstable-within", 0, 100, 200),
            pod("besteffort", 0, 10, 0),
            pod("burstable-over", 0, 300, 200),
        ];
        assert_eq!(
            names(rank(&pods, Resource::Memory)),
            [
                "burstable-over",
                "besteffort",
                "burstable-within",
                "guaranteed"
            ]
        );
    }

    #[test]
    fn priority_before_usage_and_critical_pods_stay() {
        let pods = vec![
            pod("low-big", -10, 900, 0),
            pod("high-big", 1000, 2000, 0),
            pod("low-small", -10, 100, 0),
            pod("critical", CRITICAL_PRIORITY, 10_000, 0),
        ];
        assert_eq!(
            names(rank(&pods, Resource::EphemeralStorage)),
            ["low-big", "low-small", "high-big"]
        );
        assert_eq!(
            names(rank(&pods, Resource::Pids)),
            ["low-big", "low-small", "high-big"]
        );
    }
}
