//! The Node authorizer: what a node's credential (user `system:node:NAME`
//! in group `system:nodes`) may do, as Kubernetes' Node authorizer and
//! NodeRestriction admission decide it together: read what a node needs to
//! run pods and route Services; write only its own Node, its Lease, the
//! status of pods bound to it and events; read a Secret, ConfigMap,
//! ServiceAccount or claim only when a pod bound to it refers to it, and ask
//! tokens only for those pods' accounts.
//!
//! **Pure: the pods bound to each node and what they refer to come from a
//! [`Graph`] (kept by [`GraphCache`] from the store's watch); a node is
//! never allowed anything on another node's objects.** Skiff extras beyond
//! Kubernetes: the activator scales Deployments (`deployments/scale`) and
//! the image pulls read `/v2/` (and write what they copied from registries).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::{Attributes, UserInfo};

/// The group of every node credential.
pub const NODES_GROUP: &str = "system:nodes";
/// The user name prefix of node credentials.
pub const NODE_PREFIX: &str = "system:node:";

/// The node a user is, if it is a node's credential.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_PREFIX)?;
    (user.in_group(NODES_GROUP) && !name.is_empty()).then_some(name)
}

/// What the pods bound to one node refer to, by namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRefs {
    pub pods: BTreeSet<(String, String)>,
    pub secrets: BTreeSet<(String, String)>,
    pub config_maps: BTreeSet<(String, String)>,
    pub accounts: BTreeSet<(String, String)>,
    pub claims: BTreeSet<(String, String)>,
}

/// One pod's part of the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodRefs {
    node: String,
    namespace: String,
    name: String,
    secrets: Vec<String>,
    config_maps: Vec<String>,
    account: String,
    claims: Vec<String>,
}

impl PodRefs {
    fn of(pod: &Pod) -> Option<PodRefs> {
        let spec = pod.spec.as_ref()?;
        let node = spec.node_name.clone().filter(|n| !n.is_empty())?;
        let mut r = PodRefs {
            node,
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            account: spec
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            ..Default::default()
        };
        for s in spec.image_pull_secrets.iter().flatten() {
            r.secrets.push(s.name.clone());
        }
        for v in spec.volumes.iter().flatten() {
            if let Some(n) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                r.secrets.push(n);
            }
            if let Some(c) = &v.config_map {
                r.config_maps.push(c.name.clone());
            }
            if let Some(c) = &v.persistent_volume_claim {
                r.claims.push(c.claim_name.clone());
            }
            for s in v
                .projected
                .as_ref()
                .and_then(|p| p.sources.as_ref())
                .into_iter()
                .flatten()
            {
                if let Some(x) = &s.secret {
                    r.secrets.push(x.name.clone());
                }
                if let Some(x) = &s.config_map {
                    r.config_maps.push(x.name.clone());
                }
            }
        }
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in containers {
            for f in c.env_from.iter().flatten() {
                if let Some(x) = &f.secret_ref {
                    r.secrets.push(x.name.clone());
                }
                if let Some(x) = &f.config_map_ref {
                    r.config_maps.push(x.name.clone());
                }
            }
            for e in c.env.iter().flatten() {
                let Some(from) = &e.value_from else { continue };
                if let Some(x) = &from.secret_key_ref {
                    r.secrets.push(x.name.clone());
                }
                if let Some(x) = &from.config_map_key_ref {
                    r.config_maps.push(x.name.clone());
                }
            }
        }
        Some(r)
    }
}

/// Pods by store key, and what each node's pods refer to.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pods: HashMap<String, PodRefs>,
    nodes: HashMap<String, NodeRefs>,
}

impl Graph {
    /// Record the pod at `key` (a pod not bound to a node is forgotten).
    pub fn put(&mut self, key: &str, pod: &Pod) {
        self.remove(key);
        if let Some(r) = PodRefs::of(pod) {
            self.pods.insert(key.to_string(), r);
            self.rebuild(&self.pods[key].node.clone());
        }
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(old) = self.pods.remove(key) {
            self.rebuild(&old.node);
        }
    }

    /// Recompute one node's references from its pods.
    fn rebuild(&mut self, node: &str) {
        let mut refs = NodeRefs::default();
        for p in self.pods.values().filter(|p| p.node == node) {
            let ns = &p.namespace;
            let pair = |n: &String| (ns.clone(), n.clone());
            refs.pods.insert(pair(&p.name));
            refs.secrets.extend(p.secrets.iter().map(pair));
            refs.config_maps.extend(p.config_maps.iter().map(pair));
            refs.claims.extend(p.claims.iter().map(pair));
            refs.accounts.insert(pair(&p.account));
        }
        if refs.pods.is_empty() {
            self.nodes.remove(node);
        } else {
            self.nodes.insert(node.to_string(), refs);
        }
    }

    /// What node `node`'s pods refer to.
    pub fn refs(&self, node: &str) -> Option<&NodeRefs> {
        self.nodes.get(node)
    }

    /// Whether pod `ns/name` is bound to `node`.
    pub fn on_node(&self, node: &str, ns: &str, name: &str) -> bool {
        self.refs(node)
            .is_some_and(|r| r.pods.contains(&(ns.to_string(), name.to_string())))
    }
}

/// Cluster ConfigMaps every node reads (network settings, API servers).
const NODE_CONFIG_MAPS: &[(&str, &str)] = &[
    ("kube-system", "skiff-cluster"),
    ("kube-system", "skiff-apiservers"),
];

/// Whether the Node authorizer lets node `node` do `a`; when it does not,
/// RBAC decides (and binds nothing to nodes by default).
pub fn allows(graph: &Graph, node: &str, a: &Attributes) -> bool {
    let Attributes::Resource {
        verb,
        group,
        resource,
        subresource,
        namespace,
        name,
    } = a
    else {
        // Image pulls from the cluster registry, and copies into it of what
        // the node pulled from other registries (never deletes).
        return matches!(a, Attributes::NonResource { verb, path }
            if matches!(verb.as_str(), "get" | "head" | "post" | "put" | "patch")
                && path.starts_with("/v2/"));
    };
    let read = matches!(verb.as_str(), "get" | "list" | "watch");
    let ns = namespace.as_deref().unwrap_or("");
    let own = name.as_deref() == Some(node);
    let named = |set: fn(&NodeRefs) -> &BTreeSet<(String, String)>| {
        name.as_ref().is_some_and(|n| {
            graph
                .refs(node)
                .is_some_and(|r| set(r).contains(&(ns.to_string(), n.clone())))
        })
    };
    match (group.as_str(), resource.as_str(), subresource.as_deref()) {
        // What running pods and routing Services needs to see.
        ("", "pods" | "services" | "endpoints" | "nodes", None)
        | ("discovery.k8s.io", "endpointslices", None)
        | ("node.k8s.io", "runtimeclasses", None)
        | ("apps", "deployments", None)
        | ("autoscaling", "horizontalpodautoscalers", None)
        // What enforcing NetworkPolicy needs to see (namespaces: labels).
        | ("networking.k8s.io", "networkpolicies", None)
        | ("", "namespaces", None)
        // What every node's Ingress router serves.
        | ("networking.k8s.io", "ingresses" | "ingressclasses", None)
            if read =>
        {
            true
        }
        // Its own Node (created under its own name: see `admit_create`).
        ("", "nodes", None) if verb == "create" => true,
        ("", "nodes", None | Some("status")) => {
            own && matches!(verb.as_str(), "get" | "update" | "patch" | "delete")
        }
        ("coordination.k8s.io", "leases", None) => {
            ns == "kube-node-lease"
                && (verb == "create"
                    || (own && matches!(verb.as_str(), "get" | "update" | "patch")))
        }
        // Pods bound to it: their status, and the final delete.
        ("", "pods", Some("status")) => {
            matches!(verb.as_str(), "get" | "update" | "patch") && named(|r| &r.pods)
        }
        ("", "pods", None) if verb == "delete" => named(|r| &r.pods),
        ("", "events", None) | ("events.k8s.io", "events", None) => {
            matches!(verb.as_str(), "create" | "update" | "patch" | "get")
        }
        // What its pods refer to, by name only.
        ("", "secrets", None) => verb == "get" && named(|r| &r.secrets),
        ("", "configmaps", None) => {
            verb == "get"
                && (named(|r| &r.config_maps)
                    || name
                        .as_deref()
                        .is_some_and(|n| NODE_CONFIG_MAPS.contains(&(ns, n))))
        }
        ("", "persistentvolumeclaims", None) => verb == "get" && named(|r| &r.claims),
        ("", "serviceaccounts", None) => verb == "get" && named(|r| &r.accounts),
        ("", "serviceaccounts", Some("token")) => verb == "create" && named(|r| &r.accounts),
        // The activator wakes a Deployment that scaled to zero.
        ("apps", "deployments", Some("scale")) => {
            matches!(verb.as_str(), "get" | "update" | "patch")
        }
        _ => false,
    }
}

/// Whether `a` is a `get` of a Secret an Ingress of its namespace names in
/// `spec.tls` (every node's Ingress router serves every Ingress's TLS),
/// judged on this replica's Ingresses.
pub fn ingress_tls_secret(objects: &crate::storage::Objects, a: &Attributes) -> bool {
    let Attributes::Resource {
        verb,
        group,
        resource,
        subresource: None,
        namespace: Some(ns),
        name: Some(name),
    } = a
    else {
        return false;
    };
    if verb != "get" || !group.is_empty() || resource != "secrets" {
        return false;
    }
    let Some(t) = objects
        .registry
        .by_kind("networking.k8s.io/v1", "Ingress")
        .cloned()
    else {
        return false;
    };
    objects
        .store
        .list_local(&t.ns_prefix(Some(ns)), usize::MAX)
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| objects.decode(kv).ok())
        .any(|ing| {
            ing.pointer("/spec/tls")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .any(|t| t.get("secretName").and_then(serde_json::Value::as_str) == Some(name))
        })
}

/// The pods-per-node graph, kept current from the store's watch on pods.
#[derive(Clone, Default)]
pub struct GraphCache {
    current: Arc<RwLock<Graph>>,
}

impl GraphCache {
    /// Read the graph.
    pub fn read<T>(&self, f: impl FnOnce(&Graph) -> T) -> T {
        f(&self.current.read().expect("node graph"))
    }

    /// The graph from this replica's pods as they are now (for a request
    /// the cached graph may not have caught up with).
    pub fn fresh(&self, objects: &crate::storage::Objects) -> Graph {
        let mut graph = Graph::default();
        let prefix = pods_prefix(objects);
        for kv in objects
            .store
            .list_local(&prefix, usize::MAX)
            .unwrap_or_default()
        {
            if let Some(pod) = decode_pod(objects, &kv) {
                graph.put(&kv.key, &pod);
            }
        }
        graph
    }

    /// Load every pod, then follow changes until the task is dropped (a lost
    /// watch reloads everything).
    pub async fn start(&self, objects: crate::storage::Objects) -> tokio::task::JoinHandle<()> {
        let prefix = pods_prefix(&objects);
        let mut revision = self.reload(&objects, &prefix).await.unwrap_or(0);
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                match objects.store.watch(&prefix, revision) {
                    Ok(mut w) => loop {
                        match w.next().await {
                            Ok(ev) => {
                                revision = ev.revision;
                                cache.apply(&objects, &ev);
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "pod watch for the node graph ended");
                                break;
                            }
                        }
                    },
                    Err(e) => tracing::debug!(error = %e, "pod watch for the node graph refused"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                match cache.reload(&objects, &prefix).await {
                    Ok(r) => revision = r,
                    Err(e) => {
                        tracing::warn!(error = %e.message, "cannot load pods for the node graph");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    }

    fn apply(&self, objects: &crate::storage::Objects, ev: &crate::store::Event) {
        let mut g = self.current.write().expect("node graph");
        match ev.kind {
            crate::store::EventKind::Delete => g.remove(&ev.kv.key),
            crate::store::EventKind::Put => match decode_pod(objects, &ev.kv) {
                Some(pod) => g.put(&ev.kv.key, &pod),
                None => g.remove(&ev.kv.key),
            },
        }
    }

    async fn reload(
        &self,
        objects: &crate::storage::Objects,
        prefix: &str,
    ) -> crate::model::status::ApiResult<u64> {
        let mut graph = Graph::default();
        let mut start: Option<String> = None;
        let mut revision = 0;
        loop {
            let (kvs, rev) = objects.store.list(prefix, start.as_deref(), 1000).await?;
            revision = revision.max(rev);
            for kv in &kvs {
                if let Some(pod) = decode_pod(objects, kv) {
                    graph.put(&kv.key, &pod);
                }
            }
            match kvs.last() {
                Some(last) if kvs.len() == 1000 => start = Some(format!("{}\u{0}", last.key)),
                _ => break,
            }
        }
        *self.current.write().expect("node graph") = graph;
        Ok(revision)
    }
}

fn pods_prefix(objects: &crate::storage::Objects) -> String {
    match objects.registry.by_kind("v1", "Pod") {
        Some(t) => t.prefix(),
        None => "/core/pods/".to_string(),
    }
}

fn decode_pod(objects: &crate::storage::Objects, kv: &crate::store::KeyValue) -> Option<Pod> {
    objects
        .decode(kv)
        .ok()
        .and_then(|v| serde_json::from_value::<Pod>(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, node: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"nodeName": node, "serviceAccountName": "robot",
                "volumes": [{"name": "s", "secret": {"secretName": "db"}},
                            {"name": "c", "configMap": {"name": "conf"}}],
                "containers": [{"name": "c", "image": "x",
                    "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "api-key", "key": "k"}}}]}]}
        }))
        .unwrap()
    }

    fn res(
        verb: &str,
        group: &str,
        resource: &str,
        sub: Option<&str>,
        ns: &str,
        name: Option<&str>,
    ) -> Attributes {
        Attributes::resource(
            verb,
            group,
            resource,
            sub,
            Some(ns).filter(|n| !n.is_empty()),
            name,
        )
    }

    #[test]
    fn a_node_reaches_its_own_pods_objects_and_nothing_of_another_node() {
        let mut g = Graph::default();
        g.put("/pods/a/web", &pod("a", "web", "n1"));
        g.put("/pods/a/other", &pod("b", "other", "n2"));
        let cases = [
            (res("get", "", "secrets", None, "a", Some("db")), true),
            (res("get", "", "secrets", None, "a", Some("api-key")), true),
            (
                res("get", "", "secrets", None, "a", Some("unrelated")),
                false,
            ),
            (res("list", "", "secrets", None, "a", None), false),
            (res("get", "", "secrets", None, "b", Some("db")), false),
            (res("get", "", "configmaps", None, "a", Some("conf")), true),
            (
                res(
                    "get",
                    "",
                    "configmaps",
                    None,
                    "kube-system",
                    Some("skiff-cluster"),
                ),
                true,
            ),
            (
                res("get", "", "configmaps", None, "kube-system", Some("other")),
                false,
            ),
            (
                res(
                    "create",
                    "",
                    "serviceaccounts",
                    Some("token"),
                    "a",
                    Some("robot"),
                ),
                true,
            ),
            (
                res(
                    "create",
                    "",
                    "serviceaccounts",
                    Some("token"),
                    "a",
                    Some("admin"),
                ),
                false,
            ),
            (
                res("patch", "", "pods", Some("status"), "a", Some("web")),
                true,
            ),
            (
                res("patch", "", "pods", Some("status"), "b", Some("other")),
                false,
            ),
            (res("delete", "", "pods", None, "b", Some("other")), false),
            (res("create", "", "pods", None, "a", None), false),
            (
                res("patch", "", "nodes", Some("status"), "", Some("n1")),
                true,
            ),
            (
                res("patch", "", "nodes", Some("status"), "", Some("n2")),
                false,
            ),
            (res("delete", "", "nodes", None, "", Some("n2")), false),
            (res("watch", "", "nodes", None, "", None), true),
            (
                res(
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    None,
                    "kube-node-lease",
                    Some("n1"),
                ),
                true,
            ),
            (
                res(
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    None,
                    "kube-node-lease",
                    Some("n2"),
                ),
                false,
            ),
            (res("list", "", "pods", None, "", None), true),
            (res("create", "", "events", None, "a", None), true),
            (
                res(
                    "create",
                    "rbac.authorization.k8s.io",
                    "clusterrolebindings",
                    None,
                    "",
                    None,
                ),
                false,
            ),
            (
                res(
                    "patch",
                    "apps",
                    "deployments",
                    Some("scale"),
                    "a",
                    Some("web"),
                ),
                true,
            ),
            (
                res("patch", "apps", "deployments", None, "a", Some("web")),
                false,
            ),
        ];
        for (a, want) in cases {
            assert_eq!(allows(&g, "n1", &a), want, "{a:?}");
        }
        let v2 = Attributes::NonResource {
            verb: "get".into(),
            path: "/v2/acc/hello/manifests/v1".into(),
        };
        assert!(allows(&g, "n1", &v2));
        let copy = |verb: &str| Attributes::NonResource {
            verb: verb.into(),
            path: "/v2/r.example/app/blobs/uploads/".into(),
        };
        assert!(
            allows(&g, "n1", &copy("post")),
            "nodes copy pulled images in"
        );
        assert!(!allows(&g, "n1", &copy("delete")), "but never delete");
        // When the pod goes, so does the node's reach.
        g.remove("/pods/a/web");
        assert!(!allows(
            &g,
            "n1",
            &res("get", "", "secrets", None, "a", Some("db"))
        ));
    }

    #[test]
    fn only_node_credentials_are_nodes() {
        assert_eq!(
            node_of(&UserInfo::new("system:node:n1", &[NODES_GROUP])),
            Some("n1")
        );
        assert_eq!(node_of(&UserInfo::new("system:node:n1", &[])), None);
        assert_eq!(node_of(&UserInfo::new("alice", &[NODES_GROUP])), None);
    }
}
