//! A pod namespace's `resolv.conf`, kept where `ip netns exec` (and so any
//! process a test or an operator starts in the pod's namespace) finds it:
//! `/etc/netns/<namespace>/resolv.conf`, built from the pod's `dnsPolicy` and
//! `dnsConfig` as the kubelet builds it: the node's cluster DNS first, or
//! the node's own `resolv.conf` for `dnsPolicy: Default`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::PodSpec;

use super::NetError;

fn dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

/// Where a pod's resolver configuration comes from.
pub struct Sources<'a> {
    /// The cluster DNS (the node's bridge address), when the node has one.
    pub cluster: Option<Ipv4Addr>,
    pub domain: &'a str,
    /// The node's `resolv.conf` text (the agent's `--resolv-conf`).
    pub node: &'a str,
    /// The pod shares the node's network.
    pub host_network: bool,
}

/// Nameservers, search domains and options of a `resolv.conf` text.
fn parse(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut search, mut options) = (vec![], vec![], vec![]);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(str::to_string)),
            Some("search" | "domain") => search = words.map(str::to_string).collect(),
            Some("options") => options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    (servers, search, options)
}

/// The file's text for a pod of namespace `pod_ns` with `spec`, as the
/// kubelet builds it: `ClusterFirst` (the default) the cluster DNS with the
/// cluster's search domains (the node's file for a pod on the node's
/// network), `ClusterFirstWithHostNet` the cluster DNS even there, `Default`
/// the node's file, `None` only `dnsConfig`; `dnsConfig` added to each.
pub fn render(pod_ns: &str, spec: &PodSpec, from: &Sources<'_>) -> String {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let config = spec.dns_config.as_ref();
    let list = |l: Option<&Vec<String>>| -> Vec<String> { l.cloned().unwrap_or_default() };
    let domain = from.domain;
    let cluster = |server: Ipv4Addr| {
        (
            vec![server.to_string()],
            vec![
                format!("{pod_ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
            vec!["ndots:5".to_string()],
        )
    };
    let (mut servers, mut search, mut options) = match (policy, from.cluster) {
        ("None", _) => (vec![], vec![], vec![]),
        ("ClusterFirstWithHostNet", Some(server)) => cluster(server),
        ("ClusterFirst", Some(server)) if !from.host_network => cluster(server),
        _ => parse(from.node),
    };
    servers.extend(list(config.and_then(|c| c.nameservers.as_ref())));
    search.extend(list(config.and_then(|c| c.searches.as_ref())));
    for o in config
        .and_then(|c| c.options.as_ref())
        .into_iter()
        .flatten()
    {
        let Some(name) = o.name.as_deref() else {
            continue;
        };
        options.retain(|x| x.split(':').next() != Some(name));
        match o.value.as_deref() {
            Some(v) => options.push(format!("{name}:{v}")),
            None => options.push(name.to_string()),
        }
    }
    let mut out = String::new();
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Write the file of namespace `netns`.
pub fn write(netns: &str, text: &str) -> Result<(), NetError> {
    let d = dir(netns);
    std::fs::create_dir_all(&d).map_err(|e| NetError::io(format!("create {}", d.display()), e))?;
    let f = d.join("resolv.conf");
    std::fs::write(&f, text).map_err(|e| NetError::io(format!("write {}", f.display()), e))
}

/// Remove the files of namespace `netns` (whatever exists).
pub fn remove(netns: &str) {
    let _ = std::fs::remove_dir_all(dir(netns));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("a pod spec")
    }

    fn from(node: &str, host_network: bool) -> Sources<'_> {
        Sources {
            cluster: Some("10.88.0.1".parse().unwrap()),
            domain: "cluster.local",
            node,
            host_network,
        }
    }

    #[test]
    fn default_is_the_nodes_file_plus_dns_config() {
        let node = "# generated\nnameserver 10.99.0.53\nsearch corp.example\noptions timeout:2\n";
        let default = spec(json!({"dnsPolicy": "Default", "dnsConfig": {"searches": ["x.y"]}}));
        assert_eq!(
            render("shop", &default, &from(node, false)),
            "nameserver 10.99.0.53\nsearch corp.example x.y\noptions timeout:2\n"
        );
        // ClusterFirst on the node's network falls back to the node's file;
        // ClusterFirstWithHostNet keeps the cluster DNS.
        let first = render("shop", &spec(json!({})), &from(node, true));
        assert!(first.starts_with("nameserver 10.99.0.53\n"), "{first}");
        let with = spec(json!({"dnsPolicy": "ClusterFirstWithHostNet"}));
        assert!(render("shop", &with, &from(node, true)).starts_with("nameserver 10.88.0.1\n"));
    }

    #[test]
    fn cluster_first_and_none() {
        let ns = from("nameserver 10.99.0.53\n", false);
        let t = render("shop", &spec(json!({})), &ns);
        assert_eq!(
            t,
            "nameserver 10.88.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let t = render(
            "shop",
            &spec(
                json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.88.0.9"],
                "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
            ),
            &ns,
        );
        assert_eq!(
            t,
            "nameserver 10.88.0.9\nsearch a.b\noptions ndots:2 edns0\n"
        );
        let t = render(
            "x",
            &spec(json!({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})),
            &ns,
        );
        assert!(t.ends_with("options ndots:1\n"));
    }
}
