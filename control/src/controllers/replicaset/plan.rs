//! The ReplicaSet's plan: given how many pods it wants and its active pods,
//! how many to create and which to delete in one pass.
//!
//! **At most `BURST` pods are created or deleted in one pass; surplus pods go
//! in Kubernetes' `ActivePods` order (see `podutil::deletion_order`).**

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::controllers::podutil::deletion_order;

/// At most this many pods are created or deleted in one pass (Kubernetes' burst).
pub const BURST: usize = 500;

/// What one pass does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create from the template.
    pub create: usize,
    /// Pods to delete, first to go first.
    pub delete: Vec<Arc<Pod>>,
}

/// Create or delete so `active` becomes `want` (within the burst).
pub fn plan(want: usize, mut active: Vec<Arc<Pod>>) -> Plan {
    let have = active.len();
    if have < want {
        return Plan {
            create: want.min(have + BURST) - have,
            delete: Vec::new(),
        };
    }
    if have > want {
        deletion_order(&mut active);
        active.truncate((have - want).min(BURST));
        return Plan {
            create: 0,
            delete: active,
        };
    }
    Plan::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    /// A pod: name, node (scheduled or not), phase, ready.
    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(1_000).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.then(|| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(2_000).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    /// What, pods wanted, active pods, pods to create, pods to delete.
    type Case = (&'static str, usize, Vec<Arc<Pod>>, usize, Vec<&'static str>);

    fn names(p: &Plan) -> Vec<String> {
        p.delete
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn plan_table() {
        let running = |n: &str| pod(n, Some("node"), "Running", true);
        let cases: Vec<Case> = vec![
            ("from nothing", 3, vec![], 3, vec![]),
            ("one short", 3, vec![running("a"), running("b")], 1, vec![]),
            ("steady", 2, vec![running("a"), running("b")], 0, vec![]),
            (
                "unscheduled goes before scheduled",
                1,
                vec![running("a"), pod("b", None, "Pending", false)],
                0,
                vec!["b"],
            ),
            (
                "pending before running, not ready before ready",
                1,
                vec![
                    running("a"),
                    pod("b", Some("node"), "Running", false),
                    pod("c", Some("node"), "Pending", false),
                ],
                0,
                vec!["c", "b"],
            ),
            ("to zero", 0, vec![running("a")], 0, vec!["a"]),
            ("burst caps creates", BURST + 10, vec![], BURST, vec![]),
        ];
        for (what, want, active, create, delete) in cases {
            let p = plan(want, active);
            assert_eq!(p.create, create, "{what}");
            assert_eq!(names(&p), delete, "{what}");
        }
    }

    #[test]
    fn burst_caps_deletes() {
        let active: Vec<Arc<Pod>> = (0..BURST + 5)
            .map(|i| pod(&format!("p{i}"), Some("n"), "Running", true))
            .collect();
        assert_eq!(plan(0, active).delete.len(), BURST);
    }
}
