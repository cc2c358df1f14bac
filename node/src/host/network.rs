//! Removing a node's network pieces from the host for `skiff uninstall`: the
//! veths on its bridge, the bridge, its routes to other nodes' pods, and the
//! `unreachable`/`local` routes of the cluster and Service CIDRs. Routes are
//! listed with `ip -j route` (a one-off admin command, not a hot path).
//!
//! **The CIDRs' `unreachable` routes go last, and only when no other route into
//! the cluster CIDR is left (another node on this host still needs them).**

use std::process::Command;

use serde_json::Value;

use super::{Footprint, Removed};
use crate::net::{Cidr, link};

fn ip_json(args: &[&str]) -> Vec<Value> {
    Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Vec<Value>>(&o.stdout).ok())
        .unwrap_or_default()
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One route of `ip -j route show table all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Cidr,
    pub kind: String,
    pub table: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
}

fn parse_routes(v: &[Value]) -> Vec<Route> {
    v.iter()
        .filter_map(|r| {
            let dst = r.get("dst")?.as_str()?;
            let dst = if dst.contains('/') {
                dst.to_string()
            } else {
                format!("{dst}/32")
            };
            let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
            Some(Route {
                dst: dst.parse().ok()?,
                kind: s("type").unwrap_or_else(|| "unicast".into()),
                table: s("table").unwrap_or_else(|| "main".into()),
                gateway: s("gateway"),
                dev: s("dev"),
            })
        })
        .collect()
}

fn inside(outer: Cidr, inner: Cidr) -> bool {
    outer.contains(inner.base) && inner.prefix >= outer.prefix
}

/// The routes `f` owns in `routes`: those to other nodes' pods (via a gateway,
/// inside the cluster CIDR), and, when `last` (no other node's route into the
/// cluster CIDR is left), the CIDRs' `unreachable` and `local` routes.
pub fn owned(f: &Footprint, routes: &[Route]) -> Vec<Route> {
    let (Ok(cluster), Ok(service)) = (
        f.cluster_cidr.parse::<Cidr>(),
        f.service_cidr.parse::<Cidr>(),
    ) else {
        return Vec::new();
    };
    let mut out: Vec<Route> = routes
        .iter()
        .filter(|r| r.gateway.is_some() && inside(cluster, r.dst) && r.dst != cluster)
        .cloned()
        .collect();
    let others = routes.iter().any(|r| {
        inside(cluster, r.dst)
            && r.dst != cluster
            && r.gateway.is_none()
            && r.dev.as_deref() != Some(f.bridge.as_str())
    });
    if !others {
        out.extend(
            routes
                .iter()
                .filter(|r| {
                    (r.kind == "unreachable" && (r.dst == cluster || r.dst == service))
                        || (r.kind == "local" && r.table == "local" && r.dst == service)
                })
                .cloned(),
        );
    }
    out
}

/// Remove the bridge (with its veths) and the routes of `f`.
pub async fn remove(f: &Footprint, removed: &mut Removed) {
    for l in ip_json(&["link", "show", "master", &f.bridge]) {
        if let Some(name) = l.get("ifname").and_then(Value::as_str)
            && ip(&["link", "del", name])
        {
            removed.links.push(name.to_string());
        }
    }
    if let Ok(h) = link::connect()
        && link::index(&h, &f.bridge).await.ok().flatten().is_some()
        && link::delete(&h, &f.bridge).await.is_ok()
    {
        removed.links.push(f.bridge.clone());
    }
    let routes = parse_routes(&ip_json(&["-4", "route", "show", "table", "all"]));
    for r in owned(f, &routes) {
        let dst = r.dst.to_string();
        let mut args = vec!["route", "del"];
        if r.kind != "unicast" {
            args.push(&r.kind);
        }
        args.push(&dst);
        if let Some(g) = &r.gateway {
            args.extend(["via", g]);
        }
        args.extend(["table", &r.table]);
        if ip(&args) {
            removed.routes.push(format!("{} {dst}", r.kind));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owned_routes_table() {
        let f = Footprint::of(
            "n0",
            "skb0",
            "10.88.0.0/16".parse().unwrap(),
            "10.96.0.0/16".parse().unwrap(),
        );
        let table = |extra: Value| {
            let mut v = vec![
                json!({"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"}),
                json!({"type": "unreachable", "dst": "10.88.0.0/16"}),
                json!({"type": "unreachable", "dst": "10.96.0.0/16"}),
                json!({"type": "local", "dst": "10.96.0.0/16", "dev": "lo", "table": "local"}),
                json!({"dst": "10.88.0.0/24", "dev": "skb0"}),
                json!({"dst": "10.88.1.0/24", "gateway": "192.0.2.7", "dev": "eth0"}),
                json!({"type": "unreachable", "dst": "10.89.0.0/16"}),
            ];
            v.extend(extra.as_array().cloned().unwrap_or_default());
            parse_routes(&v)
        };
        let kinds = |rs: Vec<Route>| -> Vec<String> {
            rs.iter().map(|r| format!("{} {}", r.kind, r.dst)).collect()
        };
        assert_eq!(
            kinds(owned(&f, &table(json!([])))),
            vec![
                "unicast 10.88.1.0/24",
                "unreachable 10.88.0.0/16",
                "unreachable 10.96.0.0/16",
                "local 10.96.0.0/16"
            ]
        );
        // Another node's bridge on this host keeps the shared routes.
        assert_eq!(
            kinds(owned(
                &f,
                &table(json!([{"dst": "10.88.2.0/24", "dev": "skb1"}]))
            )),
            vec!["unicast 10.88.1.0/24"]
        );
    }
}
