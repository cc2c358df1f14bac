//! A pod namespace's `resolv.conf`, kept where `ip netns exec` (and so any
//! process a test or an operator starts in the pod's namespace) finds it:
//! `/etc/netns/<namespace>/resolv.conf`, built from the pod's `dnsPolicy` and
//! `dnsConfig` as the kubelet builds it, with the node's cluster DNS first.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::PodSpec;

use super::NetError;

fn dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

/// The file's text for a pod of namespace `pod_ns` with `spec`.
pub fn render(pod_ns: &str, spec: &PodSpec, nameserver: Ipv4Addr, domain: &str) -> String {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let config = spec.dns_config.as_ref();
    let list = |l: Option<&Vec<String>>| -> Vec<String> { l.cloned().unwrap_or_default() };
    let (mut servers, mut search, mut options) = match policy {
        "None" => (vec![], vec![], vec![]),
        _ => (
            vec![nameserver.to_string()],
            vec![
                format!("{pod_ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
            vec!["ndots:5".to_string()],
        ),
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

    #[test]
    fn cluster_first_and_none() {
        let ns: Ipv4Addr = "10.88.0.1".parse().unwrap();
        let t = render("shop", &spec(json!({})), ns, "cluster.local");
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
            ns,
            "cluster.local",
        );
        assert_eq!(
            t,
            "nameserver 10.88.0.9\nsearch a.b\noptions ndots:2 edns0\n"
        );
        let t = render(
            "x",
            &spec(json!({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})),
            ns,
            "cluster.local",
        );
        assert!(t.ends_with("options ndots:1\n"));
    }
}
