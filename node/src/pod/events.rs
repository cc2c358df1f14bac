//! Events about pods, as the kubelet records them (`kubectl describe` shows them).
//!
//! **A repeat of the same event (same pod, container, type, reason and
//! message) within ten minutes bumps the first one's `count` and
//! `lastTimestamp` instead of creating another, as client-go's event
//! correlator does, so a probe failing every period stays one object.**

use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::status::now;

/// How long a repeated event is folded into the first one.
const AGGREGATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
/// Events remembered for folding repeats (oldest forgotten first).
const REMEMBERED: usize = 4096;

/// An event recorded recently: its name, count and when it was first sent.
#[derive(Debug, Clone)]
struct Recent {
    name: String,
    count: u32,
    first: std::time::Instant,
}

/// Records events for one node.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    node: String,
    recent: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Recent>>>,
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
        Recorder {
            client,
            node,
            recent: Default::default(),
        }
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
        let key = format!(
            "{}/{}/{}/{}/{ty}/{reason}/{message}",
            s.namespace,
            s.name,
            s.uid,
            s.container.as_deref().unwrap_or("")
        );
        self.emit(&s.namespace, &s.name, key, involved, ty, reason, message)
            .await;
    }

    /// Record an event about any object (`kind` of `api_version`).
    pub async fn record_object(
        &self,
        (kind, api_version): (&str, &str),
        (namespace, name, uid): (&str, &str, &str),
        warning: bool,
        reason: &str,
        message: &str,
    ) {
        let ty = if warning { "Warning" } else { "Normal" };
        tracing::info!(object = %format!("{kind} {namespace}/{name}"), reason, message, "event");
        let involved = json!({"kind": kind, "apiVersion": api_version, "namespace": namespace,
            "name": name, "uid": uid});
        let key = format!("{kind}/{namespace}/{name}/{uid}/{ty}/{reason}/{message}");
        self.emit(namespace, name, key, involved, ty, reason, message)
            .await;
    }

    /// Create the event, or bump the count of the same one recorded lately.
    #[allow(clippy::too_many_arguments)]
    async fn emit(
        &self,
        namespace: &str,
        name: &str,
        key: String,
        involved: serde_json::Value,
        ty: &str,
        reason: &str,
        message: &str,
    ) {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let repeat = {
            let mut recent = self.recent.lock().expect("recent events");
            match recent.get_mut(&key) {
                Some(r) if r.first.elapsed() < AGGREGATE_WINDOW => {
                    r.count += 1;
                    Some((r.name.clone(), r.count))
                }
                _ => None,
            }
        };
        if let Some((name, count)) = repeat {
            let patch = json!({"count": count, "lastTimestamp": now()});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot update event; recording a new one");
                    self.recent.lock().expect("recent events").remove(&key);
                }
            }
        }
        let suffix: u64 = rand_suffix();
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{name}.{suffix:x}"), "namespace": namespace},
            "involvedObject": involved,
            "reason": reason, "message": message, "type": ty,
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet", "reportingInstance": self.node,
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
        });
        let Ok(ev) = serde_json::from_value::<Event>(ev) else {
            return;
        };
        match api.create(&PostParams::default(), &ev).await {
            Ok(created) => {
                let mut recent = self.recent.lock().expect("recent events");
                if recent.len() >= REMEMBERED {
                    recent.retain(|_, r| r.first.elapsed() < AGGREGATE_WINDOW);
                    if recent.len() >= REMEMBERED {
                        recent.clear();
                    }
                }
                recent.insert(
                    key,
                    Recent {
                        name: created.metadata.name.unwrap_or_default(),
                        count: 1,
                        first: std::time::Instant::now(),
                    },
                );
            }
            Err(e) => tracing::debug!(error = %e, "cannot record event"),
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
