//! The pods bound to this node: list, then watch (re-listing after any break),
//! and hand each pod's latest object to its worker.
//!
//! **One worker per pod uid; a pod gone from the API is cleaned up by its worker,
//! and address records and volumes of pods unknown at start-up are released.**

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::watch;
use tracing::Instrument;

use super::AgentError;
use crate::pod::{self, NodeCtx};

/// Live pods on this node: `namespace/name` → uid (the logs endpoint reads it).
#[derive(Clone, Default)]
pub struct Pods(Arc<Mutex<HashMap<String, String>>>);

impl Pods {
    pub fn uid(&self, ns: &str, name: &str) -> Option<String> {
        self.0
            .lock()
            .expect("pods")
            .get(&format!("{ns}/{name}"))
            .cloned()
    }

    fn set(&self, ns: &str, name: &str, uid: Option<&str>) {
        let mut m = self.0.lock().expect("pods");
        let key = format!("{ns}/{name}");
        match uid {
            Some(u) => {
                m.insert(key, u.to_string());
            }
            None => {
                m.remove(&key);
            }
        }
    }
}

struct Workers {
    ctx: Arc<NodeCtx>,
    pods: Pods,
    by_uid: HashMap<String, watch::Sender<Option<Pod>>>,
}

/// The pod's `namespace`, `name` and `uid` ("" when unset).
fn meta(p: &Pod) -> (String, String, String) {
    let m = &p.metadata;
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    (s(&m.namespace), s(&m.name), s(&m.uid))
}

impl Workers {
    fn upsert(&mut self, pod: Pod) {
        let (ns, name, uid) = meta(&pod);
        if uid.is_empty() {
            return;
        }
        if let Some(tx) = self.by_uid.get(&uid) {
            let _ = tx.send(Some(pod));
            return;
        }
        self.pods.set(&ns, &name, Some(&uid));
        let (tx, rx) = watch::channel(Some(pod));
        let span = tracing::info_span!("pod", pod = %format!("{ns}/{name}"), uid = %uid);
        tokio::spawn(pod::run(self.ctx.clone(), rx).instrument(span));
        self.by_uid.insert(uid, tx);
    }

    fn remove(&mut self, pod: &Pod) {
        let (ns, name, uid) = meta(pod);
        if let Some(tx) = self.by_uid.remove(&uid) {
            let _ = tx.send(None);
        }
        if self.pods.uid(&ns, &name).as_deref() == Some(uid.as_str()) {
            self.pods.set(&ns, &name, None);
        }
    }
}

/// Watch this node's pods until the API becomes unreachable for good.
pub async fn watch(
    ctx: Arc<NodeCtx>,
    pods: Pods,
    local: super::local::LocalPods,
) -> Result<(), AgentError> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={}", ctx.node);
    let mut workers = Workers {
        ctx: ctx.clone(),
        pods,
        by_uid: HashMap::new(),
    };
    let mut first = true;
    loop {
        let list = match api.list(&ListParams::default().fields(&selector)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing pods failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let rv = list.metadata.resource_version.clone().unwrap_or_default();
        let items = list.items;
        let mut live: std::collections::HashSet<String> = items.iter().map(|p| meta(p).2).collect();
        if first {
            // Pods this node started while cut off are not the API's.
            live.extend(local.uids());
            first = false;
            for uid in ctx.net.recorded() {
                if !live.contains(&uid) {
                    tracing::info!(uid, "releasing the network of a pod that is gone");
                    let _ = ctx.net.detach(&uid).await;
                }
            }
            // Containers an earlier run of the agent left running: those of
            // pods still here are adopted by their workers, the others go.
            let keep = |id: &str| {
                live.iter()
                    .any(|u| !u.is_empty() && id.starts_with(u.as_str()))
            };
            for rt in &ctx.runtimes {
                rt.sweep(&keep).await;
            }
            // Volumes of pods deleted while the agent was away.
            if let Ok(dirs) = std::fs::read_dir(&ctx.pods_dir) {
                for d in dirs.flatten() {
                    let uid = d.file_name().to_string_lossy().into_owned();
                    if !live.contains(&uid) {
                        tracing::info!(uid, "removing the volumes of a pod that is gone");
                        ctx.pod_dir(&uid).remove(&*ctx.volume_media);
                    }
                }
            }
        }
        let gone: Vec<String> = workers
            .by_uid
            .keys()
            .filter(|u| !live.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(tx) = workers.by_uid.remove(&uid) {
                let _ = tx.send(None);
            }
        }
        for p in items {
            workers.upsert(p);
        }
        let params = WatchParams::default().fields(&selector).timeout(290);
        let mut stream = match api.watch(&params, &rv).await {
            Ok(s) => s.boxed(),
            Err(e) => {
                tracing::warn!(error = %e, "watching pods failed; re-listing");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match stream.try_next().await {
                Ok(Some(WatchEvent::Added(p) | WatchEvent::Modified(p))) => workers.upsert(p),
                Ok(Some(WatchEvent::Deleted(p))) => workers.remove(&p),
                Ok(Some(WatchEvent::Bookmark(_))) => {}
                Ok(Some(WatchEvent::Error(e))) => {
                    tracing::debug!(code = e.code, "pod watch ended: {}", e.message);
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "pod watch broke");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}
