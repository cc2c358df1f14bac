//! Events about pods, as the kubelet records them (`kubectl describe` shows them).
//!
//! **A repeat of the same event (same pod, container, type, reason and
//! message) within ten minutes bumps the first one's `count` and
//! `lastTimestamp` instead of creating another, as client-go's event
//! correlator does, so a probe failing every period stays one object.**
//! Events recorded while no API server answers are held (the latest 2,048)
//! and sent in order once one does.

use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::status::now;

/// How long a repeated event is folded into the first one.
const AGGREGATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
/// Events remembered for folding repeats (oldest forgotten first).
const REMEMBERED: usize = 4096;
/// Events held while no server answers (the oldest dropped beyond).
const HELD: usize = 2048;
/// How often held events are offered to the API again.
const RESEND_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// Events recorded while no server answered, oldest first.
    held: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Event>>>,
    sending: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
            held: Default::default(),
            sending: Default::default(),
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
            // Written here, not to the API, while no server answers: sent
            // in order once one does.
            Err(kube::Error::Api(e)) => tracing::debug!(error = %e, "cannot record event"),
            Err(e) => {
                tracing::debug!(error = %e, "no api server takes the event; holding it");
                self.hold(ev);
            }
        }
    }

    /// Keep an event that could not be sent, and send what is held, oldest
    /// first, once a server answers.
    fn hold(&self, ev: Event) {
        {
            let mut held = self.held.lock().expect("held events");
            if held.len() >= HELD {
                held.pop_front();
            }
            held.push_back(ev);
        }
        if self.sending.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let next = me.held.lock().expect("held events").pop_front();
                let Some(ev) = next else {
                    me.sending
                        .store(false, std::sync::atomic::Ordering::Release);
                    return;
                };
                let ns = ev.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(me.client.clone(), &ns);
                match api.create(&PostParams::default(), &ev).await {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(_) => {
                        me.held.lock().expect("held events").push_front(ev);
                        tokio::time::sleep(RESEND_EVERY).await;
                    }
                }
            }
        });
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
