//! ServiceLB, as k3s has it: a `type: LoadBalancer` Service is served by every
//! node's proxy on the Service's port, so its ingress addresses are the
//! InternalIPs of the Ready nodes (loopback addresses excepted: a node that
//! only has 127.0.0.1 cannot take outside traffic); other Services carry no
//! load-balancer status.

use std::time::Duration;

use serde_json::{Value, json};

use super::support::{leader_loop, list_all, s, writer};
use crate::model::status::ApiResult;
use crate::storage::Objects;

/// The ingress list every LoadBalancer Service should show.
pub fn ingress(nodes: &[Value]) -> Vec<Value> {
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
        .filter(|ip| {
            ip.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect()
}

async fn pass(o: Objects) -> ApiResult<()> {
    let Some(t) = o.registry.by_kind("v1", "Service").cloned() else {
        return Ok(());
    };
    let want = ingress(&list_all(&o, "v1", "Node").await?);
    for svc in list_all(&o, "v1", "Service").await? {
        let is_lb = s(&svc, "/spec/type") == "LoadBalancer";
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
        if same {
            continue;
        }
        let mut new = svc.clone();
        new["status"] = status;
        let (ns, name) = (s(&svc, "/metadata/namespace"), s(&svc, "/metadata/name"));
        if let Err(e) = o
            .update(
                &t,
                Some(ns),
                name,
                new,
                Some("status"),
                &writer("servicelb"),
            )
            .await
        {
            tracing::debug!(service = name, error = %e.message, "load balancer status");
        }
    }
    Ok(())
}

/// Keep LoadBalancer Services' ingress equal to the Ready nodes' addresses.
pub async fn run(o: Objects) {
    leader_loop(
        o,
        "servicelb",
        &["/core/services/", "/core/nodes/"],
        Duration::from_secs(30),
        pass,
    )
    .await;
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
}
