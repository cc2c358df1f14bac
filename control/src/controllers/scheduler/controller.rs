//! The scheduling controller: one key stands for "the pending pods"; a pass
//! places every pending pod that fits and explains the ones that do not,
//! reading pods, nodes and RuntimeClasses from informer caches and binding
//! through `pods/binding`. It is queued by pods that become pending, by bound
//! pods that stop using their node's resources, and by node and RuntimeClass
//! changes; pods left pending are looked at again every second.
//!
//! **A pass counts each pod it binds against its node before placing the
//! next, so one pass never overfills a node.**

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, PodCondition};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use super::{NodeInfo, PodNeeds, pick};
use crate::controllers::events;
use crate::controllers::framework::{Action, Controller, Informer, Key, Queue, Reconciler, Result};
use crate::controllers::registration::Ctx;

const NAME: &str = "default-scheduler";

/// How soon pods that fit nowhere are tried again.
const RETRY_PENDING: Duration = Duration::from_secs(1);

pub struct Scheduler {
    pub client: Client,
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub classes: Arc<Informer<RuntimeClass>>,
    pub images: Option<crate::imagestore::Images>,
}

/// The one key the scheduler works on.
fn pending_key() -> Key {
    Key::new("", "pending-pods")
}

/// Waiting for this scheduler to place it.
pub fn pending(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
        .is_empty()
        && p.metadata.deletion_timestamp.is_none()
        && matches!(
            spec.and_then(|s| s.scheduler_name.as_deref())
                .unwrap_or_default(),
            "" | NAME
        )
}

/// Bound to a node and counted against it (not finished).
fn holds_node(p: &Pod) -> bool {
    let bound = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    bound
        && !matches!(
            crate::controllers::podutil::phase(p),
            "Succeeded" | "Failed"
        )
}

impl Scheduler {
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        let (q, pods): (_, Weak<Informer<Pod>>) = (queue.clone(), Arc::downgrade(&self.pods));
        self.pods.on(move |old, new| {
            let gone = pods
                .upgrade()
                .is_some_and(|i| i.get(&Key::of(new)).is_none());
            let held_before = old.is_some_and(holds_node);
            let holds_now = !gone && holds_node(new);
            if (!gone && pending(new)) || held_before != holds_now {
                q.add(pending_key());
            }
        });
        let q = queue.clone();
        self.nodes.on(move |_, _| q.add(pending_key()));
        let q = queue.clone();
        self.classes.on(move |_, _| q.add(pending_key()));
    }

    fn pods_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Put `pod` on `node` through `pods/binding`.
    async fn bind(&self, pod: &Pod, node: &str) -> Result<()> {
        let b = Binding {
            metadata: ObjectMeta {
                name: Some(pod.name_any()),
                namespace: pod.namespace(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.into()),
                ..Default::default()
            },
        };
        self.pods_api(&pod.namespace().unwrap_or_default())
            .create_subresource::<Binding, Value>(
                "binding",
                &pod.name_any(),
                &PostParams::default(),
                &b,
            )
            .await?;
        Ok(())
    }

    /// Set PodScheduled=False with the reason, and record an event when it changed.
    async fn unschedulable(&self, pod: &Pod, message: &str) -> Result<()> {
        let conds = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let same = conds.iter().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.message.as_deref() == Some(message)
        });
        if same {
            return Ok(());
        }
        let mut new = pod.clone();
        let mut list: Vec<PodCondition> = conds
            .into_iter()
            .filter(|c| c.type_ != "PodScheduled")
            .collect();
        list.push(PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(message.into()),
            last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        });
        new.status.get_or_insert_with(Default::default).conditions = Some(list);
        let pp = PostParams {
            field_manager: Some(NAME.into()),
            ..Default::default()
        };
        self.pods_api(&pod.namespace().unwrap_or_default())
            .replace_status(&pod.name_any(), &pp, &new)
            .await?;
        events::record(&self.client, NAME, pod, true, "FailedScheduling", message).await;
        Ok(())
    }
}

impl Reconciler for Scheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    /// One pass: place every pending pod that fits, explain the ones that do not.
    async fn reconcile(&self, _key: &Key) -> Result<Action> {
        let pods = self.pods.list("");
        let waiting: Vec<&Arc<Pod>> = pods.iter().filter(|p| pending(p)).collect();
        if waiting.is_empty() {
            return Ok(Action::await_change());
        }
        let mut infos: Vec<NodeInfo> = Vec::new();
        for n in self.nodes.list("") {
            infos.push(NodeInfo::from_node(&n));
        }
        for p in pods.iter().filter(|p| holds_node(p)) {
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
            if let Some(n) = infos.iter_mut().find(|n| Some(n.name.as_str()) == node) {
                n.add(p);
            }
        }
        let classes: BTreeMap<String, Arc<RuntimeClass>> = self
            .classes
            .list("")
            .into_iter()
            .map(|c| (c.name_any(), c))
            .collect();
        let mut image_kinds = HashMap::new();
        let mut left = false;
        for p in waiting {
            let class = p
                .spec
                .as_ref()
                .and_then(|s| s.runtime_class_name.clone())
                .unwrap_or_default();
            let (handler, scheduling) = if class.is_empty() {
                // No RuntimeClass: container images need a node that runs them.
                let handler = match &self.images {
                    Some(images) => {
                        super::image_runtime::handler_for(images, p, &mut image_kinds).await
                    }
                    None => None,
                };
                (handler, None)
            } else {
                match classes.get(&class) {
                    Some(c) => (Some(c.handler.clone()), c.scheduling.clone()),
                    None => {
                        left = true;
                        self.unschedulable(p, &format!("RuntimeClass \"{class}\" not found"))
                            .await?;
                        continue;
                    }
                }
            };
            let needs = PodNeeds::from_pod(p, handler, scheduling.as_ref());
            match pick(&needs, &infos) {
                Ok(node) => {
                    let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
                    match self.bind(p, &node).await {
                        Ok(()) => {
                            if let Some(n) = infos.iter_mut().find(|n| n.name == node) {
                                n.add(p);
                            }
                            events::record(
                                &self.client,
                                NAME,
                                p.as_ref(),
                                false,
                                "Scheduled",
                                &format!("Successfully assigned {ns}/{name} to {node}"),
                            )
                            .await;
                        }
                        Err(e) => {
                            left = true;
                            tracing::debug!(pod = name, error = %e, "bind failed");
                        }
                    }
                }
                Err(why) => {
                    left = true;
                    self.unschedulable(p, &why).await?;
                }
            }
        }
        Ok(if left {
            Action::requeue(RETRY_PENDING)
        } else {
            Action::await_change()
        })
    }
}

/// Start the scheduler (one worker: a pass sees every pending pod).
pub fn start(ctx: &mut Ctx<'_>) {
    let pods = ctx.informer::<Pod>();
    let nodes = ctx.informer::<Node>();
    let classes = ctx.informer::<RuntimeClass>();
    let s = Arc::new(Scheduler {
        client: ctx.client.clone(),
        pods: pods.clone(),
        nodes: nodes.clone(),
        classes: classes.clone(),
        images: ctx.settings.images.clone(),
    });
    let q = Queue::new();
    s.watch(&q);
    q.add(pending_key());
    ctx.run(
        Controller::new(s, q)
            .after_sync(vec![(&pods).into(), (&nodes).into(), (&classes).into()])
            .resync(|| vec![pending_key()]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};

    fn pod(node: Option<&str>, scheduler: Option<&str>, phase: &str, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                deletion_timestamp: deleting.then(|| Time(k8s_openapi::jiff::Timestamp::now())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                scheduler_name: scheduler.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn which_pods_wait_and_which_hold_a_node() {
        // (node, scheduler, phase, deleting) -> (pending, holds_node)
        let cases = [
            (None, None, "Pending", false, true, false),
            (None, Some(NAME), "Pending", false, true, false),
            (None, Some("other"), "Pending", false, false, false),
            (None, None, "Pending", true, false, false),
            (Some("n1"), None, "Running", false, false, true),
            (Some("n1"), None, "Running", true, false, true),
            (Some("n1"), None, "Succeeded", false, false, false),
            (Some("n1"), None, "Failed", false, false, false),
        ];
        for (node, sched, phase, deleting, want_pending, want_holds) in cases {
            let p = pod(node, sched, phase, deleting);
            assert_eq!(
                pending(&p),
                want_pending,
                "{node:?} {sched:?} {phase} {deleting}"
            );
            assert_eq!(
                holds_node(&p),
                want_holds,
                "{node:?} {sched:?} {phase} {deleting}"
            );
        }
    }
}
