//! Events about pods, as the kubelet records them (`kubectl describe` shows them).

use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::status::now;

/// Records events for one node.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    node: String,
}

/// The pod (and container) an event is about.
#[derive(Debug, Clone)]
pub struct Subject {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container: Option<String>,
}

impl Recorder {
    pub fn new(client: Client, node: String) -> Recorder {
        Recorder { client, node }
    }

    /// Record a `Normal` (`warning` false) or `Warning` event. Failures are logged.
    pub async fn record(&self, s: &Subject, warning: bool, reason: &str, message: &str) {
        let ty = if warning { "Warning" } else { "Normal" };
        tracing::info!(pod = %format!("{}/{}", s.namespace, s.name), reason, message, "event");
        let mut involved = json!({"kind": "Pod", "apiVersion": "v1", "namespace": s.namespace,
            "name": s.name, "uid": s.uid});
        if let Some(c) = &s.container {
            involved["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
        }
        let suffix: u64 = rand_suffix();
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{suffix:x}", s.name), "namespace": s.namespace},
            "involvedObject": involved,
            "reason": reason, "message": message, "type": ty,
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet", "reportingInstance": self.node,
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
        });
        let Ok(ev) = serde_json::from_value::<Event>(ev) else {
            return;
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &s.namespace);
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::debug!(error = %e, "cannot record event");
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
