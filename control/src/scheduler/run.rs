//! The scheduling loop: on the leader, level-triggered over all pods and nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::controllers::support::{leader_loop, list_all, s, writer};
use crate::model::meta::{new_uid, now_rfc3339};
use crate::model::status::ApiResult;
use crate::storage::{Objects, WriteOptions};

use super::{NodeInfo, PodNeeds, pick};

const NAME: &str = "default-scheduler";

fn wo() -> WriteOptions {
    writer(NAME)
}

/// Run the scheduler until the process ends.
pub async fn run(objects: Objects) {
    leader_loop(
        objects,
        "scheduler",
        &["/core/pods/", "/core/nodes/"],
        Duration::from_secs(1),
        |o| async move { pass(&o).await },
    )
    .await;
}

/// One pass: place every pending pod that fits, explain the ones that do not.
async fn pass(o: &Objects) -> ApiResult<()> {
    let pods = list_all(o, "v1", "Pod").await?;
    let nodes = list_all(o, "v1", "Node").await?;
    let classes: BTreeMap<String, Value> = list_all(o, "node.k8s.io/v1", "RuntimeClass")
        .await?
        .into_iter()
        .map(|c| (s(&c, "/metadata/name").to_string(), c))
        .collect();
    let mut infos: Vec<NodeInfo> = nodes.iter().map(NodeInfo::from_node).collect();
    for p in &pods {
        let node = s(p, "/spec/nodeName");
        let done = matches!(s(p, "/status/phase"), "Succeeded" | "Failed");
        if !node.is_empty()
            && !done
            && let Some(n) = infos.iter_mut().find(|n| n.name == node)
        {
            n.add(p);
        }
    }
    let mut image_kinds = std::collections::HashMap::new();
    for p in &pods {
        let pending = s(p, "/spec/nodeName").is_empty()
            && p.pointer("/metadata/deletionTimestamp").is_none()
            && matches!(s(p, "/spec/schedulerName"), "" | NAME);
        if !pending {
            continue;
        }
        let class = s(p, "/spec/runtimeClassName");
        let (handler, scheduling) = if class.is_empty() {
            // No RuntimeClass: container images need a node that runs them.
            (
                super::images::handler_for(o, p, &mut image_kinds).await,
                None,
            )
        } else {
            match classes.get(class) {
                Some(c) => (Some(s(c, "/handler").to_string()), c.get("scheduling")),
                None => {
                    unschedulable(o, p, &format!("RuntimeClass \"{class}\" not found")).await?;
                    continue;
                }
            }
        };
        let needs = PodNeeds::from_pod(p, handler, scheduling);
        match pick(&needs, &infos) {
            Ok(node) => {
                let (ns, name) = (s(p, "/metadata/namespace"), s(p, "/metadata/name"));
                match o.bind(ns, name, &node).await {
                    Ok(_) => {
                        if let Some(n) = infos.iter_mut().find(|n| n.name == node) {
                            n.add(p);
                        }
                        event(
                            o,
                            p,
                            "Normal",
                            "Scheduled",
                            &format!("Successfully assigned {ns}/{name} to {node}"),
                        )
                        .await;
                    }
                    Err(e) => tracing::debug!(pod = name, error = %e.message, "bind failed"),
                }
            }
            Err(why) => unschedulable(o, p, &why).await?,
        }
    }
    Ok(())
}

/// Set PodScheduled=False with the reason, and record an event when it changed.
async fn unschedulable(o: &Objects, pod: &Value, message: &str) -> ApiResult<()> {
    let conds = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let same = conds.iter().any(|c| {
        s(c, "/type") == "PodScheduled" && s(c, "/status") == "False" && s(c, "/message") == message
    });
    if same {
        return Ok(());
    }
    let mut new = pod.clone();
    let mut list: Vec<Value> = conds
        .into_iter()
        .filter(|c| s(c, "/type") != "PodScheduled")
        .collect();
    list.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": now_rfc3339()}));
    new["status"]["conditions"] = Value::Array(list);
    let Some(t) = o.registry.by_kind("v1", "Pod").cloned() else {
        return Ok(());
    };
    let (ns, name) = (s(pod, "/metadata/namespace"), s(pod, "/metadata/name"));
    o.update(&t, Some(ns), name, new, Some("status"), &wo())
        .await?;
    event(o, pod, "Warning", "FailedScheduling", message).await;
    Ok(())
}

/// Record an event about a pod (best effort).
pub async fn event(o: &Objects, pod: &Value, kind: &str, reason: &str, message: &str) {
    let Some(t) = o.registry.by_kind("v1", "Event").cloned() else {
        return;
    };
    let ns = s(pod, "/metadata/namespace");
    let now = now_rfc3339();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{}", s(pod, "/metadata/name"), &new_uid()[..8]), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": s(pod, "/metadata/name"), "namespace": ns, "uid": s(pod, "/metadata/uid")},
        "reason": reason, "message": message, "type": kind, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": NAME},
        "reportingComponent": NAME,
    });
    if let Err(e) = o.create(&t, Some(ns), ev, &wo()).await {
        tracing::debug!(error = %e.message, "cannot record event");
    }
}
