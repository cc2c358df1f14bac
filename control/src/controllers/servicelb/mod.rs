//! ServiceLB, as k3s has it: a `type: LoadBalancer` Service is served by every
//! node's proxy on the Service's port, so its ingress addresses are the
//! InternalIPs of the Ready nodes (loopback addresses excepted: a node that
//! only has 127.0.0.1 cannot take outside traffic); other Services carry no
//! load-balancer status. Services and nodes are read from informer caches; a
//! Service is looked at when it changes and when any node does.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::controllers::framework::{
    Action, Controller, ControllerError, Informer, Key, Queue, Reconciler, Result, enqueue_self,
};
use crate::controllers::registration::{Ctx, all_keys};

/// A string field of a JSON object ("" when absent).
fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// The InternalIPs of the Ready nodes, sorted, each once.
pub fn ready_internal_ips(nodes: &[Value]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
        })
        .filter_map(|n| {
            n.pointer("/status/addresses")?
                .as_array()?
                .iter()
                .find(|a| s(a, "/type") == "InternalIP")
                .map(|a| s(a, "/address").to_string())
        })
        .filter(|ip| !ip.is_empty())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The ingress list every LoadBalancer Service should show (loopback
/// addresses excepted).
pub fn ingress(nodes: &[Value]) -> Vec<Value> {
    ready_internal_ips(nodes)
        .into_iter()
        .filter(|ip| {
            ip.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect()
}

pub struct ServiceLb {
    pub client: Client,
    pub services: Arc<Informer<Service>>,
    pub nodes: Arc<Informer<Node>>,
}

pub(crate) fn to_value<T: serde::Serialize>(what: &'static str, o: &T) -> Result<Value> {
    serde_json::to_value(o).map_err(|source| ControllerError::Encode { what, source })
}

/// The status `svc` should carry given the ingress of the Ready nodes, or
/// `None` when its ingress is that already.
pub fn wanted_status(svc: &Value, want: &[Value]) -> Option<Value> {
    let is_lb = s(svc, "/spec/type") == "LoadBalancer";
    let status = if is_lb && !want.is_empty() {
        json!({"loadBalancer": {"ingress": want}})
    } else {
        json!({"loadBalancer": {}})
    };
    let current = svc.get("status").cloned().unwrap_or(json!({}));
    let same = current
        .pointer("/loadBalancer/ingress")
        .unwrap_or(&json!(null))
        == status
            .pointer("/loadBalancer/ingress")
            .unwrap_or(&json!(null));
    (!same).then_some(status)
}

impl ServiceLb {
    /// Queue a Service on its own changes, and every Service when a node comes,
    /// goes or changes the ingress it adds.
    pub fn watch(&self, queue: &Arc<Queue>) {
        self.services.on(enqueue_self(queue));
        let (q, services) = (queue.clone(), Arc::downgrade(&self.services));
        let nodes = Arc::downgrade(&self.nodes);
        self.nodes.on(move |old, new| {
            // Only a node coming, going, or changing its ingress matters.
            let gone = nodes
                .upgrade()
                .is_some_and(|i| i.get(&Key::of(new)).is_none());
            let ingress_of = |n: &Node| {
                serde_json::to_value(n)
                    .map(|v| ingress(std::slice::from_ref(&v)))
                    .unwrap_or_default()
            };
            if !gone && old.is_some_and(|o| ingress_of(o) == ingress_of(new)) {
                return;
            }
            if let Some(services) = services.upgrade() {
                for svc in services.list("") {
                    q.add(Key::of(svc.as_ref()));
                }
            }
        });
    }
}

impl Reconciler for ServiceLb {
    fn name(&self) -> &'static str {
        "servicelb"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(svc) = self.services.get(key) else {
            return Ok(Action::await_change());
        };
        let mut nodes = Vec::new();
        for n in self.nodes.list("") {
            nodes.push(to_value("node", n.as_ref())?);
        }
        let mut v = to_value("service", svc.as_ref())?;
        let Some(status) = wanted_status(&v, &ingress(&nodes)) else {
            return Ok(Action::await_change());
        };
        v["status"] = status;
        let new: Service = serde_json::from_value(v).map_err(|source| ControllerError::Encode {
            what: "service",
            source,
        })?;
        let pp = PostParams {
            field_manager: Some("servicelb".into()),
            ..Default::default()
        };
        if let Err(e) = Api::<Service>::namespaced(self.client.clone(), &key.ns)
            .replace_status(&key.name, &pp, &new)
            .await
        {
            tracing::debug!(service = %key.name, error = %e, "load balancer status");
            return Err(e.into());
        }
        Ok(Action::await_change())
    }
}

/// Keep LoadBalancer Services' ingress equal to the Ready nodes' addresses.
pub fn start(ctx: &mut Ctx<'_>) {
    let services = ctx.informer::<Service>();
    let nodes = ctx.informer::<Node>();
    let c = Arc::new(ServiceLb {
        client: ctx.client.clone(),
        services: services.clone(),
        nodes: nodes.clone(),
    });
    let q = Queue::new();
    c.watch(&q);
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![(&services).into(), (&nodes).into()])
            .resync(all_keys(&services)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ip: &str, ready: &str) -> Value {
        json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": ready}]}})
    }

    #[test]
    fn ready_non_loopback_nodes_only() {
        let nodes = [
            node("10.87.1.2", "True"),
            node("127.0.0.1", "True"),
            node("10.87.1.3", "False"),
            node("10.87.1.2", "True"),
        ];
        assert_eq!(
            ingress(&nodes),
            vec![json!({"ip": "10.87.1.2", "ipMode": "VIP"})]
        );
    }

    #[test]
    fn status_only_when_ingress_differs() {
        let want = vec![json!({"ip": "10.87.1.2", "ipMode": "VIP"})];
        let lb = |status: Value| json!({"spec": {"type": "LoadBalancer"}, "status": status});
        let plain = json!({"spec": {"type": "ClusterIP"}});
        // (service, ready-node ingress) -> status to write
        let cases = [
            (
                lb(json!({})),
                want.clone(),
                Some(json!({"loadBalancer": {"ingress": want}})),
            ),
            (
                lb(json!({"loadBalancer": {"ingress": want}})),
                want.clone(),
                None,
            ),
            (
                lb(json!({"loadBalancer": {"ingress": want}})),
                vec![],
                Some(json!({"loadBalancer": {}})),
            ),
            (lb(json!({})), vec![], None),
            (plain.clone(), want.clone(), None),
            (
                json!({"spec": {"type": "ClusterIP"}, "status": {"loadBalancer": {"ingress": want}}}),
                want.clone(),
                Some(json!({"loadBalancer": {}})),
            ),
        ];
        for (i, (svc, ingress, status)) in cases.into_iter().enumerate() {
            assert_eq!(wanted_status(&svc, &ingress), status, "case {i}");
        }
    }
}
