//! A container's environment as the kubelet builds it: `envFrom` (ConfigMaps
//! and Secrets, with a prefix), then `env` in order with `$(VAR)` expansion of
//! earlier variables, `valueFrom` ConfigMap/Secret keys, the downward API
//! (`fieldRef`, `resourceFieldRef`); and `$(VAR)` expansion of command and args.
//!
//! **Resolution is pure: the objects it reads are fetched first (`Sources`),
//! so a missing required object or key is an error naming it, never a silently
//! empty value.**

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;

use super::quantity;

/// Why a container's configuration cannot be built (reason
/// `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{kind} {name:?} not found")]
    MissingObject { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldPath {path:?}")]
    Field { path: String },
    #[error("unsupported resource {resource:?} in resourceFieldRef")]
    Resource { resource: String },
    #[error("cannot read {kind} {name:?}: {reason}")]
    Fetch {
        kind: &'static str,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The data of the ConfigMaps and Secrets a pod refers to (`None`: not found).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_maps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// The pod's ServiceAccount tokens, by projection.
    pub tokens: HashMap<super::tokens::TokenRef, String>,
}

/// Which object kind a reference is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

impl Sources {
    /// The data of an object, `Ok(None)` when it is missing and `optional`.
    pub fn data(
        &self,
        kind: Kind,
        name: &str,
        optional: bool,
    ) -> Result<Option<&BTreeMap<String, Vec<u8>>>, ConfigError> {
        let map = match kind {
            Kind::ConfigMap => &self.config_maps,
            Kind::Secret => &self.secrets,
        };
        match map.get(name) {
            Some(Some(d)) => Ok(Some(d)),
            _ if optional => Ok(None),
            _ => Err(ConfigError::MissingObject {
                kind: kind.name(),
                name: name.to_string(),
            }),
        }
    }

    /// One key of an object, `Ok(None)` when it (or the object) is missing and
    /// `optional`.
    pub fn key(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>, ConfigError> {
        let Some(data) = self.data(kind, name, optional)? else {
            return Ok(None);
        };
        match data.get(key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => Err(ConfigError::MissingKey {
                kind: kind.title(),
                namespace: namespace.to_string(),
                name: name.to_string(),
                key: key.to_string(),
            }),
        }
    }

    /// Fetch every named object from the API (missing ones are `None`).
    pub async fn fetch(
        client: &kube::Client,
        namespace: &str,
        refs: &Refs,
    ) -> Result<Sources, ConfigError> {
        let mut s = Sources::default();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        for name in &refs.config_maps {
            let got = cms.get_opt(name).await.map_err(|e| ConfigError::Fetch {
                kind: "configmap",
                name: name.clone(),
                reason: e.to_string(),
            })?;
            let data = got.map(|cm| {
                let mut d: BTreeMap<String, Vec<u8>> = cm
                    .binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                d.extend(
                    cm.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                d
            });
            s.config_maps.insert(name.clone(), data);
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for name in &refs.secrets {
            let got = secrets
                .get_opt(name)
                .await
                .map_err(|e| ConfigError::Fetch {
                    kind: "secret",
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            let data = got.map(|sec| {
                let mut d: BTreeMap<String, Vec<u8>> = sec
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                d.extend(
                    sec.string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                d
            });
            s.secrets.insert(name.clone(), data);
        }
        Ok(s)
    }
}

/// The ConfigMaps and Secrets something refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// ServiceAccount token projections (volumes only).
    pub tokens: BTreeSet<super::tokens::TokenRef>,
}

impl Refs {
    pub fn add(&mut self, kind: Kind, name: &str) {
        match kind {
            Kind::ConfigMap => self.config_maps.insert(name.to_string()),
            Kind::Secret => self.secrets.insert(name.to_string()),
        };
    }

    /// What a container's `env` and `envFrom` refer to.
    pub fn of_container(c: &Container) -> Refs {
        let mut r = Refs::default();
        for e in c.env_from.iter().flatten() {
            if let Some(cm) = &e.config_map_ref {
                r.add(Kind::ConfigMap, &cm.name);
            }
            if let Some(s) = &e.secret_ref {
                r.add(Kind::Secret, &s.name);
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(k) = &from.config_map_key_ref {
                r.add(Kind::ConfigMap, &k.name);
            }
            if let Some(k) = &from.secret_key_ref {
                r.add(Kind::Secret, &k.name);
            }
        }
        r
    }
}

/// What the downward API can tell a container about its pod and node.
#[derive(Debug, Clone)]
pub struct PodFacts {
    /// The pod's metadata (the latest: labels and annotations follow edits).
    pub metadata: ObjectMeta,
    /// The pod's spec as bound.
    pub spec: PodSpec,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    /// What a container without a limit may use: the node's CPU cores (in
    /// millicores) and memory (bytes).
    pub node_cpu_millis: u64,
    pub node_memory: u64,
    /// The `kubernetes` Service's address and port.
    pub api_service: Option<(String, u16)>,
}

impl PodFacts {
    /// The value of a `fieldRef.fieldPath`.
    pub fn field(&self, path: &str) -> Result<String, ConfigError> {
        let (meta, spec) = (&self.metadata, &self.spec);
        let map = |map: &str| match map {
            "labels" => meta.labels.as_ref(),
            _ => meta.annotations.as_ref(),
        };
        let keyed = |prefix: &str, name: &str| -> Option<String> {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(
                map(name)
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default(),
            )
        };
        let all = |name: &str| -> String {
            map(name)
                .map(|m| {
                    let mut lines: Vec<String> =
                        m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                    lines.sort();
                    lines.join("\n")
                })
                .unwrap_or_default()
        };
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        Ok(match path {
            "metadata.name" => text(&meta.name),
            "metadata.namespace" => text(&meta.namespace),
            "metadata.uid" => text(&meta.uid),
            "metadata.labels" => all("labels"),
            "metadata.annotations" => all("annotations"),
            "spec.nodeName" => text(&spec.node_name),
            "spec.serviceAccountName" => match spec.service_account_name.as_deref() {
                None | Some("") => "default".into(),
                Some(s) => s.into(),
            },
            "status.podIP" | "status.podIPs" => self.pod_ip.clone().unwrap_or_default(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.clone(),
            _ => {
                if let Some(v) = keyed("metadata.labels['", "labels") {
                    v
                } else if let Some(v) = keyed("metadata.annotations['", "annotations") {
                    v
                } else {
                    return Err(ConfigError::Field {
                        path: path.to_string(),
                    });
                }
            }
        })
    }

    /// The value of a `resourceFieldRef` of `container` (by name; `this` when
    /// the ref names none), as the kubelet renders it: rounded up in units of
    /// `divisor`, with node capacity standing in for a missing limit.
    pub fn resource(
        &self,
        this: Option<&Container>,
        container_name: Option<&str>,
        resource: &str,
        divisor: Option<&str>,
    ) -> Result<String, ConfigError> {
        let c = match container_name.filter(|n| !n.is_empty()) {
            Some(n) => Some(
                self.spec
                    .containers
                    .iter()
                    .chain(self.spec.init_containers.iter().flatten())
                    .find(|c| c.name == n)
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!("no container {n:?} in the pod"))
                    })?,
            ),
            None => this,
        };
        let (kind, name) = resource
            .split_once('.')
            .ok_or_else(|| ConfigError::Resource {
                resource: resource.into(),
            })?;
        let get = |k: &str| {
            c.and_then(|c| super::resource(c, k, name))
                .and_then(quantity)
        };
        let (node, unit_default) = match name {
            "cpu" => (self.node_cpu_millis as f64 / 1000.0, 1.0),
            "memory" | "ephemeral-storage" => (self.node_memory as f64, 1.0),
            _ => {
                return Err(ConfigError::Resource {
                    resource: resource.into(),
                });
            }
        };
        let value = match kind {
            "limits" => get("limits").unwrap_or(node),
            // An unset request defaults to the limit, as API defaulting does.
            "requests" => get("requests").or_else(|| get("limits")).unwrap_or(0.0),
            _ => {
                return Err(ConfigError::Resource {
                    resource: resource.into(),
                });
            }
        };
        let divisor = match divisor {
            Some(d) => quantity(d)
                .filter(|d| *d > 0.0)
                .ok_or_else(|| ConfigError::Invalid(format!("bad divisor {d:?}")))?,
            None => unit_default,
        };
        // Round up, tolerating float noise (0.5 / 0.001 must be 500, not 501).
        let units = value / divisor;
        let rounded = if (units - units.round()).abs() < 1e-9 {
            units.round()
        } else {
            units.ceil()
        };
        Ok(format!("{}", rounded as u64))
    }
}

/// Kubernetes' `$(VAR)` expansion: `$(NAME)` becomes NAME's value when
/// `lookup` knows it and stays as written otherwise; `$$` is a literal `$`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push_str(&input[last..i]);
                    out.push('$');
                    i += 2;
                    last = i;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        out.push_str(&input[last..i]);
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        last = i;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&input[last..]);
    out
}

/// Whether a name is a valid environment variable name (the kubelet's relaxed
/// rule: printable ASCII other than `=`).
fn valid_env_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| (' '..='~').contains(&c) && c != '=')
}

/// A container's environment, in order, plus keys of `envFrom` sources that
/// were skipped because they are not valid variable names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub vars: Vec<(String, String)>,
    pub skipped: Vec<String>,
}

impl Env {
    fn set(&mut self, name: String, value: String) {
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// Expand `$(VAR)` in a command or an argument with this environment.
    pub fn expand(&self, s: &str) -> String {
        expand(s, |n| self.get(n))
    }
}

/// Build the environment of container `c`.
pub fn resolve(c: &Container, facts: &PodFacts, sources: &Sources) -> Result<Env, ConfigError> {
    let namespace = facts.metadata.namespace.as_deref().unwrap_or("");
    let mut env = Env::default();
    // The API's Service comes first, as the kubelet sets it: `env` and
    // `envFrom` may override it and refer to it.
    if let Some((host, port)) = &facts.api_service {
        let url = format!("tcp://{host}:{port}");
        for (k, v) in [
            ("KUBERNETES_SERVICE_HOST".to_string(), host.clone()),
            ("KUBERNETES_SERVICE_PORT".to_string(), port.to_string()),
            (
                "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
                port.to_string(),
            ),
            ("KUBERNETES_PORT".to_string(), url.clone()),
            (format!("KUBERNETES_PORT_{port}_TCP"), url),
            (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
            (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
            (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.clone()),
        ] {
            env.set(k, v);
        }
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, optional) = if let Some(r) = &from.config_map_ref {
            (Kind::ConfigMap, &r.name, r.optional)
        } else if let Some(r) = &from.secret_ref {
            (Kind::Secret, &r.name, r.optional)
        } else {
            continue;
        };
        let Some(data) = sources.data(kind, name, optional.unwrap_or(false))? else {
            continue;
        };
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            if valid_env_name(&name) {
                env.set(name, String::from_utf8_lossy(v).into_owned());
            } else {
                env.skipped.push(name);
            }
        }
    }
    for e in c.env.iter().flatten() {
        let name = e.name.clone();
        if name.is_empty() {
            continue;
        }
        let value = if let Some(from) = &e.value_from {
            let keyed = |kind: Kind, name: &str, key: &str, optional: Option<bool>| {
                sources.key(kind, namespace, name, key, optional.unwrap_or(false))
            };
            if let Some(r) = &from.config_map_key_ref {
                match keyed(Kind::ConfigMap, &r.name, &r.key, r.optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = &from.secret_key_ref {
                match keyed(Kind::Secret, &r.name, &r.key, r.optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = &from.field_ref {
                facts.field(&r.field_path)?
            } else if let Some(r) = &from.resource_field_ref {
                facts.resource(
                    Some(c),
                    r.container_name.as_deref(),
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                )?
            } else {
                return Err(ConfigError::Invalid(format!(
                    "env {name}: valueFrom names no source"
                )));
            }
        } else {
            env.expand(e.value.as_deref().unwrap_or(""))
        };
        env.set(name, value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("a container")
    }

    fn facts() -> PodFacts {
        PodFacts {
            metadata: serde_json::from_value(json!({"name": "p", "namespace": "ns", "uid": "u-1",
                "labels": {"app": "web", "tier": "front"}, "annotations": {"a.b/c": "x"}}))
            .expect("metadata"),
            spec: serde_json::from_value(json!({"nodeName": "n1", "containers": [
                {"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
                {"name": "d"}]}))
            .expect("a pod spec"),
            pod_ip: Some("10.88.0.5".into()),
            host_ip: "127.0.0.1".into(),
            node_cpu_millis: 4000,
            node_memory: 8 << 30,
            api_service: None,
        }
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        let cm: BTreeMap<String, Vec<u8>> = [
            ("color", "blue"),
            ("size", "3"),
            ("1num", "y"),
            ("naïve", "z"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        s.config_maps.insert("cfg".into(), Some(cm));
        s.config_maps.insert("gone".into(), None);
        s.secrets.insert(
            "sec".into(),
            Some([("password".to_string(), b"hunter2".to_vec())].into()),
        );
        s
    }

    #[test]
    fn expansion_table() {
        let vars = |n: &str| match n {
            "A" => Some("1".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cases = [
            ("plain", "plain"),
            ("$(A)", "1"),
            ("x$(A)y$(A)", "x1y1"),
            ("$(B)", "$(B)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$1"),
            ("$(EMPTY)z", "z"),
            ("$A", "$A"),
            ("$(A", "$(A"),
            ("cost: 5$", "cost: 5$"),
            ("$(", "$("),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, vars), want, "{input}");
        }
    }

    #[test]
    fn env_resolves_in_kubelet_order() {
        let c = container(json!({
            "name": "c",
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"},
                        {"secretRef": {"name": "sec"}}],
            "env": [
                {"name": "A", "value": "one"},
                {"name": "B", "value": "$(A)-two-$(NOPE)-$$(A)"},
                {"name": "CM_color", "value": "override"},
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                {"name": "OPTKEY", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": true}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "ANN", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['a.b/c']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "REQ_MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
                {"name": "D_CPU", "valueFrom": {"resourceFieldRef": {"containerName": "d", "resource": "limits.cpu"}}},
            ]
        }));
        let env = resolve(&c, &facts(), &sources()).unwrap();
        let want = [
            ("CM_1num", Some("y")),
            ("CM_naïve", None),
            ("CM_color", Some("override")),
            ("CM_size", Some("3")),
            ("password", Some("hunter2")),
            ("A", Some("one")),
            ("B", Some("one-two-$(NOPE)-$(A)")),
            ("COLOR", Some("blue")),
            ("PW", Some("hunter2")),
            ("OPT", None),
            ("OPTKEY", None),
            ("POD", Some("p")),
            ("APP", Some("web")),
            ("ANN", Some("x")),
            ("IP", Some("10.88.0.5")),
            ("SA", Some("default")),
            ("CPU_M", Some("500")),
            ("CPU", Some("1")),
            ("MEM_MI", Some("64")),
            ("REQ_MEM", Some("67108864")),
            ("D_CPU", Some("4")),
        ];
        for (name, value) in want {
            assert_eq!(env.get(name).as_deref(), value, "{name} in {env:?}");
        }
        assert_eq!(env.skipped, vec!["CM_naïve".to_string()]);
        // envFrom first, then env in order.
        assert_eq!(env.vars[0].0, "CM_1num");
        assert_eq!(env.expand("--color=$(COLOR)"), "--color=blue");
    }

    #[test]
    fn missing_required_sources_name_the_object() {
        let cases = [
            (
                json!({"envFrom": [{"configMapRef": {"name": "gone"}}]}),
                "configmap \"gone\" not found",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]}),
                "couldn't find key nope in ConfigMap ns/cfg",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}}]}),
                "secret \"other\" not found",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}),
                "unsupported fieldPath \"spec.bogus\"",
            ),
        ];
        for (c, want) in cases {
            let err = resolve(&container(c.clone()), &facts(), &sources()).unwrap_err();
            assert_eq!(err.to_string(), want, "{c}");
        }
    }

    #[test]
    fn refs_of_a_container() {
        let c = container(json!({
            "envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "s"}}],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "b", "key": "k"}}}],
        }));
        let r = Refs::of_container(&c);
        assert_eq!(
            r.config_maps.into_iter().collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert_eq!(r.secrets.into_iter().collect::<Vec<_>>(), vec!["s"]);
    }
}
