//! The load-balancer status of the Ingresses Skiff's router serves
//! (`skiff_common::ingress::served`): every node runs the router, so an
//! Ingress's `status.loadBalancer.ingress` is the InternalIPs of the Ready
//! nodes (loopback ones too: the router listens on every address of its
//! host). Ingresses of other classes are left alone. An Ingress is looked at
//! when it changes, and all of them when a node or an IngressClass does.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::controllers::framework::{
    Action, Controller, ControllerError, Informer, Key, Queue, Reconciler, Result, enqueue_self,
};
use crate::controllers::registration::{Ctx, all_keys};
use crate::controllers::servicelb::{ready_internal_ips, to_value};

/// The ingress list a served Ingress should show: the Ready nodes'
/// InternalIPs (loopback ones too).
pub fn addresses(nodes: &[Value]) -> Vec<Value> {
    ready_internal_ips(nodes)
        .into_iter()
        .map(|ip| json!({"ip": ip}))
        .collect()
}

/// The status an Ingress should carry, or `None` when it does already (or
/// is not ours to set).
pub fn wanted_status(ingress: &Value, classes: &[Value], want: &[Value]) -> Option<Value> {
    if !skiff_common::ingress::served(ingress, classes) {
        return None;
    }
    let status = if want.is_empty() {
        json!({"loadBalancer": {}})
    } else {
        json!({"loadBalancer": {"ingress": want}})
    };
    let now = ingress
        .pointer("/status/loadBalancer/ingress")
        .cloned()
        .unwrap_or(Value::Null);
    let next = status
        .pointer("/loadBalancer/ingress")
        .cloned()
        .unwrap_or(Value::Null);
    (now != next).then_some(status)
}

pub struct IngressStatus {
    pub client: Client,
    pub ingresses: Arc<Informer<Ingress>>,
    pub classes: Arc<Informer<IngressClass>>,
    pub nodes: Arc<Informer<Node>>,
}

impl IngressStatus {
    fn watch(&self, queue: &Arc<Queue>) {
        self.ingresses.on(enqueue_self(queue));
        let all = |q: Arc<Queue>, ingresses: std::sync::Weak<Informer<Ingress>>| {
            move || {
                if let Some(i) = ingresses.upgrade() {
                    for ing in i.list("") {
                        q.add(Key::of(ing.as_ref()));
                    }
                }
            }
        };
        let every = all(queue.clone(), Arc::downgrade(&self.ingresses));
        self.nodes.on(move |_, _| every());
        let every = all(queue.clone(), Arc::downgrade(&self.ingresses));
        self.classes.on(move |_, _| every());
    }
}

impl Reconciler for IngressStatus {
    fn name(&self) -> &'static str {
        "ingress-status"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(ing) = self.ingresses.get(key) else {
            return Ok(Action::await_change());
        };
        let mut nodes = Vec::new();
        for n in self.nodes.list("") {
            nodes.push(to_value("node", n.as_ref())?);
        }
        let mut classes = Vec::new();
        for c in self.classes.list("") {
            classes.push(to_value("ingressclass", c.as_ref())?);
        }
        let mut v = to_value("ingress", ing.as_ref())?;
        let Some(status) = wanted_status(&v, &classes, &addresses(&nodes)) else {
            return Ok(Action::await_change());
        };
        v["status"] = status;
        let new: Ingress = serde_json::from_value(v).map_err(|source| ControllerError::Encode {
            what: "ingress",
            source,
        })?;
        let pp = PostParams {
            field_manager: Some("ingress-status".into()),
            ..Default::default()
        };
        Api::<Ingress>::namespaced(self.client.clone(), &key.ns)
            .replace_status(&key.name, &pp, &new)
            .await?;
        Ok(Action::await_change())
    }
}

/// Keep served Ingresses' load-balancer status equal to the Ready nodes.
pub fn start(ctx: &mut Ctx<'_>) {
    let ingresses = ctx.informer::<Ingress>();
    let classes = ctx.informer::<IngressClass>();
    let nodes = ctx.informer::<Node>();
    let c = Arc::new(IngressStatus {
        client: ctx.client.clone(),
        ingresses: ingresses.clone(),
        classes: classes.clone(),
        nodes: nodes.clone(),
    });
    let q = Queue::new();
    c.watch(&q);
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![
                (&ingresses).into(),
                (&classes).into(),
                (&nodes).into(),
            ])
            .resync(all_keys(&ingresses)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_ingresses_show_the_ready_nodes() {
        let node = |ip: &str, ready: &str| {
            json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": ready}]}})
        };
        let want = addresses(&[
            node("10.0.0.2", "True"),
            node("127.0.0.1", "True"),
            node("10.0.0.3", "False"),
        ]);
        assert_eq!(
            want,
            vec![json!({"ip": "10.0.0.2"}), json!({"ip": "127.0.0.1"})]
        );
        let classes = [
            json!({"metadata": {"name": "skiff"}, "spec": {"controller": skiff_common::ingress::CONTROLLER}}),
        ];
        let ours = json!({"spec": {"ingressClassName": "skiff"}});
        let theirs = json!({"spec": {"ingressClassName": "nginx"}});
        assert_eq!(
            wanted_status(&ours, &classes, &want),
            Some(json!({"loadBalancer": {"ingress": want}}))
        );
        assert_eq!(wanted_status(&theirs, &classes, &want), None);
        let done = json!({"spec": {"ingressClassName": "skiff"}, "status": {"loadBalancer": {"ingress": want}}});
        assert_eq!(wanted_status(&done, &classes, &want), None);
        assert_eq!(
            wanted_status(&done, &classes, &[]),
            Some(json!({"loadBalancer": {}}))
        );
    }
}
