//! NetworkPolicy as nftables rules for this node's pods (pure: objects in,
//! one script out). A pod selected by a policy with `Ingress` (or `Egress`)
//! among its types is isolated that way: only what some rule of some policy
//! selecting it allows passes (the union of the policies), on top of
//! replies to allowed connections. Peers are pods (by `podSelector` in the
//! policy's namespace, by `namespaceSelector`, or both) resolved to their
//! addresses, or `ipBlock`s with `except`; ports are numbers, ranges
//! (`endPort`) or names resolved against the pod that receives.
//!
//! **A connection passes only if the sender's egress and the receiver's
//! ingress both allow it; traffic to and from the node itself (its DNS, the
//! activator, probes) is not subject to policy.**

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_common::labels::selector_matches;

/// A pod as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    /// Container ports: (name, number, protocol).
    pub ports: Vec<(String, u16, String)>,
}

/// Everything the rules are made from.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The pods of this node (those the rules isolate).
    pub local: Vec<PodView>,
    /// Every pod of the cluster with an address on the pod network (peers).
    pub all: Vec<PodView>,
    /// Namespace labels by name.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub policies: Vec<NetworkPolicy>,
}

/// The table name of a node's policies.
pub fn table_name(node: &str) -> String {
    let clean: String = node
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("skiff_np_{clean}")
}

fn policy_types(p: &NetworkPolicy) -> (bool, bool) {
    let spec = p.spec.as_ref();
    match spec.and_then(|s| s.policy_types.as_ref()) {
        Some(t) => (
            t.iter().any(|x| x == "Ingress"),
            t.iter().any(|x| x == "Egress"),
        ),
        // As Kubernetes defaults it: always Ingress, Egress when it has
        // egress rules.
        None => (true, spec.and_then(|s| s.egress.as_ref()).is_some()),
    }
}

fn selects(p: &NetworkPolicy, pod: &PodView) -> bool {
    p.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
        && p.spec.as_ref().is_some_and(|s| {
            // No podSelector (or an empty one): every pod of the namespace.
            s.pod_selector
                .as_ref()
                .is_none_or(|sel| selector_matches(sel, &pod.labels))
        })
}

/// What a peer admits: addresses of pods, or address blocks.
#[derive(Clone)]
enum Admits<'a> {
    Pods(Vec<&'a PodView>),
    Block { cidr: String, except: Vec<String> },
}

fn ns_labels<'a>(inputs: &'a Inputs, ns: &str) -> Option<&'a BTreeMap<String, String>> {
    inputs.namespaces.get(ns)
}

fn peer<'a>(inputs: &'a Inputs, policy_ns: &str, peer: &NetworkPolicyPeer) -> Admits<'a> {
    if let Some(b) = &peer.ip_block {
        return Admits::Block {
            cidr: b.cidr.clone(),
            except: b.except.clone().unwrap_or_default(),
        };
    }
    let everything = LabelSelector::default();
    let pods = inputs
        .all
        .iter()
        .filter(|p| match &peer.namespace_selector {
            Some(sel) => ns_labels(inputs, &p.namespace).is_some_and(|l| selector_matches(sel, l)),
            None => p.namespace == policy_ns,
        })
        .filter(|p| selector_matches(peer.pod_selector.as_ref().unwrap_or(&everything), &p.labels))
        .collect();
    Admits::Pods(pods)
}

/// A port spec as nft matches: protocol, and a port or range on `target`
/// (`None`: a named port `target` does not have).
fn port_match(p: &NetworkPolicyPort, target: &PodView) -> Option<(String, Option<String>)> {
    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
    let number = match &p.port {
        None => return Some((proto, None)),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok()?,
        Some(IntOrString::String(name)) => target
            .ports
            .iter()
            .find(|(n, _, pr)| n == name && pr.eq_ignore_ascii_case(&proto))
            .map(|(_, n, _)| *n)?,
    };
    let range = match p.end_port {
        Some(end) if end > i32::from(number) => format!("{number}-{end}"),
        _ => number.to_string(),
    };
    Some((proto, Some(range)))
}

/// The nft matches of one rule's ports on `target` (one line each; an
/// empty list: any port).
fn port_clauses(ports: Option<&Vec<NetworkPolicyPort>>, target: &PodView) -> Vec<String> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![String::new()];
    };
    ports
        .iter()
        .filter_map(|p| port_match(p, target))
        .map(|(proto, range)| match range {
            Some(r) => format!(" {proto} dport {r}"),
            None => format!(" meta l4proto {proto}"),
        })
        .collect()
}

fn set(ips: impl IntoIterator<Item = String>) -> Option<String> {
    let v: Vec<String> = ips.into_iter().collect();
    (!v.is_empty()).then(|| format!("{{ {} }}", v.join(", ")))
}

/// Address sets above this size are named sets of the table, written once
/// however many rules use them; smaller ones are written inline.
const INLINE_SET: usize = 4;

/// The named address sets of one script, by content.
#[derive(Default)]
struct Sets {
    by_content: BTreeMap<Vec<Ipv4Addr>, String>,
    text: String,
}

impl Sets {
    /// What an nft rule matches for `ips`: one address, an inline set, or
    /// `@pN`; `None` for no address at all.
    fn of(&mut self, mut ips: Vec<Ipv4Addr>) -> Option<String> {
        ips.sort();
        ips.dedup();
        match ips.len() {
            0 => None,
            n if n <= INLINE_SET => set(ips.iter().map(Ipv4Addr::to_string)),
            _ => {
                let next = self.by_content.len();
                let text = &mut self.text;
                let name = self.by_content.entry(ips).or_insert_with_key(|ips| {
                    let name = format!("p{next}");
                    let list: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
                    let _ = writeln!(
                        text,
                        "  set {name} {{\n    type ipv4_addr\n    elements = {{ {} }}\n  }}",
                        list.join(", ")
                    );
                    name
                });
                Some(format!("@{name}"))
            }
        }
    }
}

/// Chains by content: pods whose rules are the same share one chain (named
/// after the first such pod).
#[derive(Default)]
struct Chains {
    by_content: BTreeMap<Vec<String>, String>,
    text: String,
}

impl Chains {
    fn of(&mut self, prefix: &str, i: usize, rules: Vec<String>) -> String {
        let text = &mut self.text;
        self.by_content
            .entry(rules)
            .or_insert_with_key(|rules| {
                let name = format!("{prefix}_{i}");
                let _ = writeln!(text, "  chain {name} {{");
                for a in rules {
                    let _ = writeln!(text, "    {}", a.trim_start());
                }
                let _ = writeln!(text, "    counter drop\n  }}");
                name
            })
            .clone()
    }
}

/// The script: the whole table, replaced in one transaction. Peer address
/// sets are named once (`Sets`), pods with the same rules share a chain
/// (`Chains`), and the forward hook finds a pod's chain by a verdict map.
pub fn render(table: &str, inputs: &Inputs) -> String {
    let mut sets = Sets::default();
    let mut chains = Chains::default();
    // A peer of a policy admits the same whichever local pod it is for.
    let mut memo: std::collections::HashMap<*const NetworkPolicyPeer, Admits> =
        std::collections::HashMap::new();
    let mut peer = |ns: &str, pr: &NetworkPolicyPeer| -> Admits {
        memo.entry(pr as *const _)
            .or_insert_with(|| peer(inputs, ns, pr))
            .clone()
    };
    let mut out_map: Vec<String> = Vec::new();
    let mut in_map: Vec<String> = Vec::new();
    for (i, pod) in inputs.local.iter().enumerate() {
        let selecting: Vec<&NetworkPolicy> =
            inputs.policies.iter().filter(|p| selects(p, pod)).collect();
        let (mut isolated_in, mut isolated_out) = (false, false);
        let mut allow_in = Vec::new();
        let mut allow_out = Vec::new();
        for p in &selecting {
            let (ing, eg) = policy_types(p);
            isolated_in |= ing;
            isolated_out |= eg;
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            let spec = p.spec.as_ref();
            if ing {
                for rule in spec.and_then(|s| s.ingress.as_ref()).into_iter().flatten() {
                    let ports = port_clauses(rule.ports.as_ref(), pod);
                    let peers = rule.from.as_ref().filter(|f| !f.is_empty());
                    let sources: Vec<String> = match peers {
                        None => vec![String::new()],
                        Some(list) => list
                            .iter()
                            .filter_map(|pr| match peer(ns, pr) {
                                Admits::Pods(pods) => sets
                                    .of(pods.iter().map(|p| p.ip).collect())
                                    .map(|s| format!(" ip saddr {s}")),
                                Admits::Block { cidr, except } => Some(format!(
                                    " ip saddr {cidr}{}",
                                    set(except)
                                        .map_or(String::new(), |e| format!(" ip saddr != {e}"))
                                )),
                            })
                            .collect(),
                    };
                    for src in &sources {
                        for port in &ports {
                            allow_in.push(format!("{src}{port} accept"));
                        }
                    }
                }
            }
            if eg {
                for rule in spec.and_then(|s| s.egress.as_ref()).into_iter().flatten() {
                    let peers = rule.to.as_ref().filter(|f| !f.is_empty());
                    match peers {
                        None => {
                            for port in port_clauses(rule.ports.as_ref(), pod) {
                                allow_out.push(format!("{port} return"));
                            }
                        }
                        Some(list) => {
                            for pr in list {
                                match peer(ns, pr) {
                                    Admits::Pods(pods) => {
                                        // Ports are the receiver's: named ones
                                        // resolve per peer pod, so peers group
                                        // by what their ports come to.
                                        let mut by_port: BTreeMap<String, Vec<Ipv4Addr>> =
                                            BTreeMap::new();
                                        for target in &pods {
                                            for port in port_clauses(rule.ports.as_ref(), target) {
                                                by_port.entry(port).or_default().push(target.ip);
                                            }
                                        }
                                        for (port, ips) in by_port {
                                            let one = (ips.len() == 1).then(|| ips[0].to_string());
                                            if let Some(d) = one.or_else(|| sets.of(ips)) {
                                                allow_out
                                                    .push(format!(" ip daddr {d}{port} return"));
                                            }
                                        }
                                    }
                                    Admits::Block { cidr, except } => {
                                        let ex = set(except)
                                            .map_or(String::new(), |e| format!(" ip daddr != {e}"));
                                        for port in port_clauses(rule.ports.as_ref(), pod) {
                                            allow_out
                                                .push(format!(" ip daddr {cidr}{ex}{port} return"));
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if isolated_out {
            let c = chains.of("out", i, allow_out);
            out_map.push(format!("{} : jump {c}", pod.ip));
        }
        if isolated_in {
            let c = chains.of("in", i, allow_in);
            in_map.push(format!("{} : jump {c}", pod.ip));
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "table ip {table}\ndelete table ip {table}\ntable ip {table} {{"
    );
    s.push_str(&sets.text);
    // Egress of the sender first (allowed: on), then the receiver's ingress.
    let mut dispatch = String::new();
    if !out_map.is_empty() {
        let _ = writeln!(dispatch, "    ip saddr vmap {{ {} }}", out_map.join(", "));
    }
    if !in_map.is_empty() {
        let _ = writeln!(dispatch, "    ip daddr vmap {{ {} }}", in_map.join(", "));
    }
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority -10; policy accept;\n    ct state established,related accept\n{dispatch}  }}"
    );
    s.push_str(&chains.text);
    s.push_str("}\n");
    s
}

/// The script that removes the table.
pub fn remove(table: &str) -> String {
    format!("table ip {table}\ndelete table ip {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> PodView {
        PodView {
            namespace: ns.into(),
            name: name.into(),
            ip: ip.parse().unwrap(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: vec![("http".into(), 8080, "TCP".into())],
        }
    }

    /// The body of chain `name` in a script.
    fn chain<'a>(script: &'a str, name: &str) -> &'a str {
        let start = script.find(&format!("chain {name} {{")).expect("the chain");
        let body = &script[start..];
        &body[..body.find("\n  }").expect("its end")]
    }

    fn policy(v: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(v).unwrap()
    }

    fn inputs(policies: Vec<NetworkPolicy>) -> Inputs {
        let web = pod("shop", "web", "10.88.0.5", &[("app", "web")]);
        let db = pod("shop", "db", "10.88.0.6", &[("app", "db")]);
        let other = pod("ops", "probe", "10.88.1.7", &[("app", "probe")]);
        Inputs {
            local: vec![web.clone(), db.clone()],
            all: vec![web, db, other],
            namespaces: BTreeMap::from([
                (
                    "shop".into(),
                    BTreeMap::from([("team".to_string(), "shop".to_string())]),
                ),
                (
                    "ops".into(),
                    BTreeMap::from([("team".to_string(), "ops".to_string())]),
                ),
            ]),
            policies,
        }
    }

    #[test]
    fn no_policy_isolates_nothing() {
        let s = render("t", &inputs(vec![]));
        assert!(!s.contains("jump"), "{s}");
        assert!(s.contains("ct state established,related accept"));
    }

    #[test]
    fn default_deny_then_an_allow_by_label_and_named_port() {
        let deny = policy(json!({"metadata": {"name": "deny", "namespace": "shop"},
            "spec": {"podSelector": {}}}));
        let s = render("t", &inputs(vec![deny.clone()]));
        assert!(
            s.contains("ip daddr vmap { 10.88.0.5 : jump in_0, 10.88.0.6 : jump in_0 }"),
            "pods with the same rules share a chain: {s}"
        );
        assert!(!s.contains("jump out_"), "ingress only by default: {s}");
        let allow = policy(
            json!({"metadata": {"name": "web-from-db", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                    "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100, "protocol": "UDP"}]}]}}),
        );
        let s = render("t", &inputs(vec![deny, allow]));
        let web = chain(&s, "in_0");
        assert!(
            web.contains("ip saddr { 10.88.0.6 } tcp dport 8080 accept"),
            "{web}"
        );
        assert!(
            web.contains("ip saddr { 10.88.0.6 } udp dport 9000-9100 accept"),
            "{web}"
        );
        assert!(web.trim_end().ends_with("counter drop"));
        let db = chain(&s, "in_1");
        assert!(!db.contains("accept"), "db stays denied: {db}");
    }

    #[test]
    fn namespace_selectors_ip_blocks_and_egress() {
        let p = policy(json!({"metadata": {"name": "p", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]}],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.85.0.0/16", "except": ["10.85.3.0/24"]}}],
                            "ports": [{"port": 443}]},
                           {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "http"}]}]}}));
        let s = render("t", &inputs(vec![p]));
        assert!(s.contains("ip saddr { 10.88.1.7 } accept"), "{s}");
        assert!(
            s.contains("ip saddr vmap { 10.88.0.5 : jump out_0 }"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr 10.85.0.0/16 ip daddr != { 10.85.3.0/24 } tcp dport 443 return"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr 10.88.0.6 tcp dport 8080 return"),
            "{s}"
        );
        // The sender's egress is checked before the receiver's ingress.
        assert!(s.find("jump out_0").unwrap() < s.find("jump in_0").unwrap());
    }

    #[test]
    fn large_peer_sets_are_named_once_and_alike_pods_share_a_chain() {
        let mut i = inputs(vec![policy(
            json!({"metadata": {"name": "p", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}]}],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "web"}}}], "ports": [{"port": "http"}]}]}}),
        )]);
        let webs: Vec<PodView> = (0..6)
            .map(|n| {
                pod(
                    "shop",
                    &format!("w{n}"),
                    &format!("10.88.2.{n}"),
                    &[("tier", "web")],
                )
            })
            .collect();
        i.all.extend(webs);
        let db2 = pod("shop", "db2", "10.88.0.9", &[("app", "db")]);
        i.local.push(db2.clone());
        i.all.push(db2);
        let s = render("t", &i);
        assert_eq!(s.matches("set p0 {").count(), 1, "{s}");
        assert!(!s.contains("set p1"), "one set for the same addresses: {s}");
        assert!(
            s.contains(
                "elements = { 10.88.2.0, 10.88.2.1, 10.88.2.2, 10.88.2.3, 10.88.2.4, 10.88.2.5 }"
            ),
            "{s}"
        );
        let db = chain(&s, "in_1");
        assert!(db.contains("ip saddr @p0 accept"), "{db}");
        assert!(chain(&s, "out_1").contains("ip daddr @p0 tcp dport 8080 return"));
        assert!(
            s.contains("10.88.0.6 : jump in_1, 10.88.0.9 : jump in_1"),
            "both db pods share a chain: {s}"
        );
        assert!(!s.contains("chain in_2"), "{s}");
    }

    #[test]
    fn a_rule_without_peers_or_ports_allows_everything_and_an_empty_peer_set_nothing() {
        let open = policy(json!({"metadata": {"name": "open", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}}));
        let s = render("t", &inputs(vec![open]));
        assert!(s.contains("\n    accept\n"), "{s}");
        let none = policy(json!({"metadata": {"name": "none", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "nobody"}}}]}]}}));
        let s = render("t", &inputs(vec![none]));
        let web = chain(&s, "in_0");
        assert!(!web.contains("accept"), "{web}");
    }
}
