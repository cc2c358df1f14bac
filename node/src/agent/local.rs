//! Pods this node starts on its own while no API server answers. A
//! connection to a scaled-to-zero Service on a node cut off from its servers
//! cannot scale the Deployment, so the activator asks for a pod here, made
//! from the Deployment's template as the node last saw it: the Service still
//! wakes. When a server answers again the node makes the wake-up it owed
//! (scales the Deployment from zero), keeps its own pod serving until one of
//! the Deployment's pods is Ready, and then stops it gracefully; it stops it
//! as well when the Deployment is gone or was scaled to zero meanwhile.
//!
//! **A node-started pod never reaches the API: it has a uid of its own, one
//! per Deployment at most, and lives only until the cluster's pod replaces
//! it.**

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams};
use rand::Rng;
use tokio::sync::watch;
use tracing::Instrument;

use super::cache::Offline;
use crate::activator::{match_labels, pod_ready};
use crate::pod::{self, NodeCtx};

/// The annotation naming the Deployment a node started a pod for.
pub const STARTED_OFFLINE: &str = "skiff.dev/started-offline-for";

/// How often the hand-over is checked once a server answers.
const HANDOVER_EVERY: Duration = Duration::from_secs(1);

struct Local {
    uid: String,
    name: String,
    tx: watch::Sender<Option<Pod>>,
    /// The Deployment was scaled from zero (or found above it) since.
    owed_scale: bool,
}

/// The pods this node started for Deployments while cut off.
#[derive(Clone)]
pub struct LocalPods {
    ctx: Arc<NodeCtx>,
    offline: Offline,
    by_deployment: Arc<Mutex<HashMap<(String, String), Local>>>,
}

/// A pod of `d`'s template bound to `node`, with a uid of the node's own.
fn pod_of(d: &Deployment, node: &str) -> Option<Pod> {
    let ns = d.metadata.namespace.clone()?;
    let name = d.metadata.name.clone()?;
    let template = d.spec.template.clone();
    let mut spec = template.spec?;
    spec.node_name = Some(node.to_string());
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(STARTED_OFFLINE.to_string(), name.clone());
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rng.random_range(0..27)]))
        .collect();
    let b: [u8; 16] = rng.random();
    let uid = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    );
    Some(Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-offline-{suffix}")),
            namespace: Some(ns),
            uid: Some(uid),
            labels: meta.labels,
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

impl LocalPods {
    pub fn new(ctx: Arc<NodeCtx>, offline: Offline) -> LocalPods {
        LocalPods {
            ctx,
            offline,
            by_deployment: Arc::default(),
        }
    }

    /// Whether no API server answers now.
    pub fn offline(&self) -> bool {
        self.offline.is()
    }

    /// The uids of the pods started here (the start-up sweep spares them).
    pub fn uids(&self) -> Vec<String> {
        let m = self.by_deployment.lock().expect("local pods");
        m.values().map(|l| l.uid.clone()).collect()
    }

    /// Start a pod for `d` unless one runs already: its name, and whether
    /// it was started now.
    pub fn start(&self, d: &Deployment) -> Option<(String, bool)> {
        let key = (d.metadata.namespace.clone()?, d.metadata.name.clone()?);
        let mut m = self.by_deployment.lock().expect("local pods");
        if let Some(l) = m.get(&key) {
            return Some((l.name.clone(), false));
        }
        let pod = pod_of(d, &self.ctx.node)?;
        let (name, uid) = (pod.metadata.name.clone()?, pod.metadata.uid.clone()?);
        tracing::warn!(
            deployment = %format!("{}/{}", key.0, key.1),
            pod = %name,
            "no api server answers: starting a pod of the Deployment from this node's last view"
        );
        let (tx, rx) = watch::channel(Some(pod));
        let span = tracing::info_span!("pod", pod = %format!("{}/{name}", key.0), uid = %uid);
        tokio::spawn(pod::run(self.ctx.clone(), rx).instrument(span));
        m.insert(
            key,
            Local {
                uid,
                name: name.clone(),
                tx,
                owed_scale: true,
            },
        );
        Some((name, true))
    }

    fn stop(&self, key: &(String, String), why: &str) {
        if let Some(l) = self.by_deployment.lock().expect("local pods").remove(key) {
            tracing::info!(
                deployment = %format!("{}/{}", key.0, key.1),
                pod = %l.name,
                "stopping the pod this node started while cut off: {why}"
            );
            let _ = l.tx.send(None);
        }
    }

    /// Hand the node-started pods over to the cluster whenever a server
    /// answers (runs for ever).
    pub async fn hand_over(self) {
        loop {
            tokio::time::sleep(HANDOVER_EVERY).await;
            self.offline.until_back().await;
            let keys: Vec<(String, String)> = {
                let m = self.by_deployment.lock().expect("local pods");
                m.keys().cloned().collect()
            };
            for key in keys {
                if let Err(e) = self.hand_over_one(&key).await {
                    tracing::debug!(error = %e, "hand-over not done yet");
                }
            }
        }
    }

    async fn hand_over_one(&self, key: &(String, String)) -> Result<(), kube::Error> {
        let (ns, name) = key;
        let api: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), ns);
        let Some(d) = api.get_opt(name).await? else {
            self.stop(key, "the Deployment is gone");
            return Ok(());
        };
        let replicas = d.spec.replicas.unwrap_or(1);
        let owed = {
            let m = self.by_deployment.lock().expect("local pods");
            m.get(key).is_some_and(|l| l.owed_scale)
        };
        if owed {
            if replicas == 0 {
                let patch = serde_json::json!({"spec": {"replicas": 1}});
                api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                tracing::info!(deployment = %format!("{ns}/{name}"), "scaled from zero (woken while cut off)");
            }
            if let Some(l) = self.by_deployment.lock().expect("local pods").get_mut(key) {
                l.owed_scale = false;
            }
            return Ok(());
        }
        if replicas == 0 {
            self.stop(key, "the Deployment is at zero replicas");
            return Ok(());
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let list = pods
            .list(&ListParams::default().labels(&match_labels(&d)))
            .await?;
        if list.items.iter().any(pod_ready) {
            self.stop(key, "a pod of the Deployment is Ready");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_started_pod_is_the_template_bound_here_with_its_own_uid() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                    "spec": {"containers": [{"name": "app", "image": "acc/hello:v1"}]}}}
        }))
        .unwrap();
        let p = pod_of(&d, "edge-1").unwrap();
        let a = pod_of(&d, "edge-1").unwrap();
        assert!(
            p.metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("web-offline-")
        );
        assert_eq!(p.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some("edge-1")
        );
        assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "web");
        let ann = p.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            (ann["a"].as_str(), ann[STARTED_OFFLINE].as_str()),
            ("b", "web")
        );
        let uid = p.metadata.uid.as_deref().unwrap();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.as_bytes()[14], b'4');
        assert_ne!(uid, a.metadata.uid.as_deref().unwrap());
        // No template spec: nothing to start.
        let empty: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "d"},
            "spec": {"selector": {}, "template": {}}
        }))
        .unwrap();
        assert!(pod_of(&empty, "n").is_none());
    }
}
