//! The kinds the API serves: one `ResourceType` per kind (group, version, kind,
//! plural, scope, subresources, typed decoding, schema) and the `Registry` that
//! looks them up.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
    certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, networking::v1 as networking, node::v1 as node,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::validate::{self, Cause};

/// Maps a k8s-openapi scope marker to "namespaced or not".
pub trait ScopeFlag {
    const NAMESPACED: bool;
}
impl ScopeFlag for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl ScopeFlag for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// A served resource type.
#[derive(Clone)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub plural: &'static str,
    pub singular: String,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub subresources: &'static [&'static str],
    /// Decode into the typed struct: required fields, types and enums are checked
    /// there; returns the object as the typed struct serialises it.
    pub decode: fn(&Value) -> Result<Value, Vec<Cause>>,
    /// The JSON schema of the kind (for OpenAPI).
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// The name of the kind's schema (`io.k8s.api.core.v1.Pod`).
    pub schema_name: String,
}

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key prefix of this type (all namespaces).
    pub fn prefix(&self) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/{g}/{}/", self.plural)
    }

    /// The store key prefix within one namespace (cluster-scoped: the whole type).
    pub fn ns_prefix(&self, ns: Option<&str>) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.prefix()),
            _ => format!("{}_/{name}", self.prefix()),
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

fn decode_as<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, Vec<Cause>> {
    validate::decode_typed::<T>(v)
}

fn schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

fn entry<T>(
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
) -> ResourceType
where
    T: k8s_openapi::Resource
        + k8s_openapi::ListableResource
        + DeserializeOwned
        + Serialize
        + schemars::JsonSchema,
    T::Scope: ScopeFlag,
{
    ResourceType {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        list_kind: T::LIST_KIND,
        plural: T::URL_PATH_SEGMENT,
        singular: T::KIND.to_ascii_lowercase(),
        short_names,
        categories,
        namespaced: <T::Scope as ScopeFlag>::NAMESPACED,
        subresources,
        decode: decode_as::<T>,
        schema: schema_of::<T>,
        schema_name: <T as schemars::JsonSchema>::schema_name().into_owned(),
    }
}

const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const SCALE: &[&str] = &["status", "scale"];

/// All served types, looked up by (group, version, plural) and by kind.
pub struct Registry {
    types: Vec<ResourceType>,
    by_path: BTreeMap<(String, String, String), usize>,
    /// JSON schemas of every type (and what they reference), by schema name.
    definitions: serde_json::Map<String, Value>,
}

impl Registry {
    pub fn builtin() -> Registry {
        let types = vec![
            entry::<core::Namespace>(&["ns"], &[], &["status", "finalize"]),
            entry::<core::Pod>(
                &["po"],
                ALL,
                &["status", "binding", "log", "exec", "eviction"],
            ),
            entry::<core::Service>(&["svc"], ALL, STATUS),
            entry::<core::Endpoints>(&["ep"], &[], &[]),
            entry::<core::ConfigMap>(&["cm"], &[], &[]),
            entry::<core::ResourceQuota>(&["quota"], &[], STATUS),
            entry::<core::LimitRange>(&["limits"], &[], &[]),
            entry::<core::Secret>(&[], &[], &[]),
            entry::<core::ServiceAccount>(&["sa"], &[], &["token"]),
            entry::<core::Node>(&["no"], &[], STATUS),
            entry::<core::Event>(&["ev"], &[], &[]),
            entry::<core::PersistentVolume>(&["pv"], &[], STATUS),
            entry::<core::PersistentVolumeClaim>(&["pvc"], &[], STATUS),
            entry::<apps::Deployment>(&["deploy"], ALL, SCALE),
            entry::<apps::ReplicaSet>(&["rs"], ALL, SCALE),
            entry::<apps::StatefulSet>(&["sts"], ALL, SCALE),
            entry::<apps::DaemonSet>(&["ds"], ALL, STATUS),
            entry::<apps::ControllerRevision>(&[], &[], &[]),
            entry::<batch::Job>(&[], ALL, STATUS),
            entry::<batch::CronJob>(&["cj"], ALL, STATUS),
            entry::<autoscaling::HorizontalPodAutoscaler>(&["hpa"], ALL, STATUS),
            entry::<coordination::Lease>(&[], &[], &[]),
            entry::<discovery::EndpointSlice>(&[], &[], &[]),
            entry::<node::RuntimeClass>(&[], &[], &[]),
            entry::<scheduling::PriorityClass>(&["pc"], &[], &[]),
            entry::<core::PodTemplate>(&[], &[], &[]),
            entry::<policy::PodDisruptionBudget>(&["pdb"], &[], STATUS),
            entry::<networking::Ingress>(&["ing"], &[], STATUS),
            entry::<networking::IngressClass>(&[], &[], &[]),
            entry::<networking::NetworkPolicy>(&["netpol"], &[], &[]),
            entry::<rbac::Role>(&[], &[], &[]),
            entry::<rbac::ClusterRole>(&[], &[], &[]),
            entry::<rbac::RoleBinding>(&[], &[], &[]),
            entry::<rbac::ClusterRoleBinding>(&[], &[], &[]),
            entry::<certificates::CertificateSigningRequest>(
                &["csr"],
                &[],
                &["status", "approval"],
            ),
        ];
        let by_path = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    (
                        t.group.to_string(),
                        t.version.to_string(),
                        t.plural.to_string(),
                    ),
                    i,
                )
            })
            .collect();
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        for t in &types {
            (t.schema)(&mut generator);
        }
        let definitions = generator.take_definitions(true);
        Registry {
            types,
            by_path,
            definitions,
        }
    }

    /// The JSON schemas of the served types, by schema name.
    pub fn definitions(&self) -> &serde_json::Map<String, Value> {
        &self.definitions
    }

    /// Check an object against its type's schema (required fields, types, enums).
    pub fn check_schema(&self, t: &ResourceType, obj: &Value) -> Vec<Cause> {
        let root = serde_json::json!({"$ref": format!("#/components/schemas/{}", t.schema_name)});
        let mut causes = Vec::new();
        validate::schema(obj, &root, &self.definitions, "", &mut causes);
        causes
    }

    pub fn all(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .map(|&i| &self.types[i])
    }

    /// The type of an object given its apiVersion and kind.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.kind == kind && t.api_version() == api_version)
    }

    /// Groups (name, versions) in serving order; "" is the core group.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for t in &self.types {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, vs)) if !vs.contains(&t.version) => vs.push(t.version),
                Some(_) => {}
                None => out.push((t.group, vec![t.version])),
            }
        }
        out
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceType> + 'a {
        self.types
            .iter()
            .filter(move |t| t.group == group && t.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_table() {
        let r = Registry::builtin();
        let cases = [
            ("", "v1", "pods", "Pod", true),
            ("", "v1", "namespaces", "Namespace", false),
            ("apps", "v1", "deployments", "Deployment", true),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                "ClusterRole",
                false,
            ),
            (
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
                true,
            ),
        ];
        for (g, v, plural, kind, ns) in cases {
            let t = r.lookup(g, v, plural).unwrap();
            assert_eq!((t.kind, t.namespaced), (kind, ns));
        }
        assert_eq!(r.all().len(), 35);
        let pod = r.by_kind("v1", "Pod").unwrap();
        assert_eq!(pod.key(Some("default"), "x"), "/core/pods/default/x");
        assert_eq!(pod.schema_name, "io.k8s.api.core.v1.Pod");
    }
}
