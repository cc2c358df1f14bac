//! OpenAPI v3 documents generated from the typed model (k8s-openapi + schemars):
//! the `/openapi/v3` index and one document per group-version, with the paths,
//! GVK extensions and `fieldValidation` parameters kubectl looks for.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::model::{Registry, ResourceType};

/// All documents, built once.
pub struct OpenApi {
    /// "api/v1", "apis/apps/v1" -> (hash, document bytes)
    docs: BTreeMap<String, (String, Vec<u8>)>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn gvk(t: &ResourceType) -> Value {
    json!({"group": t.group, "version": t.version, "kind": t.kind})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn query_param(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": ty}, "uniqueItems": true})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "uniqueItems": true})
}

fn op(
    t: &ResourceType,
    action: &str,
    id: &str,
    body_ref: Option<&str>,
    resp_ref: &str,
    extra: &[Value],
) -> Value {
    let mut params: Vec<Value> = extra.to_vec();
    if matches!(action, "post" | "put" | "patch") {
        params.push(query_param("dryRun", "string"));
        params.push(query_param("fieldManager", "string"));
        params.push(query_param("fieldValidation", "string"));
    }
    if action == "patch" {
        params.push(query_param("force", "boolean"));
    }
    if matches!(action, "list" | "watch") {
        for p in [
            "labelSelector",
            "fieldSelector",
            "continue",
            "resourceVersion",
        ] {
            params.push(query_param(p, "string"));
        }
        params.push(query_param("limit", "integer"));
        params.push(query_param("watch", "boolean"));
        params.push(query_param("timeoutSeconds", "integer"));
        params.push(query_param("allowWatchBookmarks", "boolean"));
    }
    let mut o = json!({
        "operationId": id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref(resp_ref)}}}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(t),
    });
    if let Some(b) = body_ref {
        let media: &[&str] = if action == "patch" {
            &[
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ]
        } else {
            &["application/json", "application/yaml"]
        };
        let content: Map<String, Value> = media
            .iter()
            .map(|m| {
                let schema = if action == "patch" {
                    json!({"type": "object"})
                } else {
                    schema_ref(b)
                };
                ((*m).to_string(), json!({"schema": schema}))
            })
            .collect();
        o["requestBody"] = json!({"content": content, "required": true});
    }
    o
}

fn paths_for(t: &ResourceType, paths: &mut Map<String, Value>) {
    let base = if t.group.is_empty() {
        format!("/api/{}", t.version)
    } else {
        format!("/apis/{}/{}", t.group, t.version)
    };
    let scoped = if t.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", t.plural)
    } else {
        format!("{base}/{}", t.plural)
    };
    let mut scope_params = vec![];
    if t.namespaced {
        scope_params.push(path_param("namespace"));
    }
    let name_params: Vec<Value> = scope_params
        .iter()
        .cloned()
        .chain([path_param("name")])
        .collect();
    let schema = t.schema_name.as_str();
    let list_schema = format!("{}List", schema);
    let id = format!("{}{}", t.kind, t.version);
    paths.insert(
        scoped.clone(),
        json!({
            "get": op(t, "list", &format!("list{id}"), None, &list_schema, &scope_params),
            "post": op(t, "post", &format!("create{id}"), Some(schema), schema, &scope_params),
            "delete": op(t, "deletecollection", &format!("deletecollection{id}"), None, "io.k8s.apimachinery.pkg.apis.meta.v1.Status", &scope_params),
        }),
    );
    paths.insert(
        format!("{scoped}/{{name}}"),
        json!({
            "get": op(t, "get", &format!("read{id}"), None, schema, &name_params),
            "put": op(t, "put", &format!("replace{id}"), Some(schema), schema, &name_params),
            "patch": op(t, "patch", &format!("patch{id}"), Some(schema), schema, &name_params),
            "delete": op(t, "delete", &format!("delete{id}"), None, schema, &name_params),
        }),
    );
    if t.namespaced {
        paths.insert(
            format!("{base}/{}", t.plural),
            json!({"get": op(t, "list", &format!("list{id}ForAllNamespaces"), None, &list_schema, &[])}),
        );
    }
    for sub in t.subresources {
        match *sub {
            "status" => {
                paths.insert(
                    format!("{scoped}/{{name}}/status"),
                    json!({
                        "get": op(t, "get", &format!("read{id}Status"), None, schema, &name_params),
                        "put": op(t, "put", &format!("replace{id}Status"), Some(schema), schema, &name_params),
                        "patch": op(t, "patch", &format!("patch{id}Status"), Some(schema), schema, &name_params),
                    }),
                );
            }
            "scale" => {
                let scale = "io.k8s.api.autoscaling.v1.Scale";
                let mut g = op(
                    t,
                    "get",
                    &format!("read{id}Scale"),
                    None,
                    scale,
                    &name_params,
                );
                g["x-kubernetes-group-version-kind"] =
                    json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
                let mut p = op(
                    t,
                    "patch",
                    &format!("patch{id}Scale"),
                    Some(scale),
                    scale,
                    &name_params,
                );
                p["x-kubernetes-group-version-kind"] =
                    json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
                let mut u = op(
                    t,
                    "put",
                    &format!("replace{id}Scale"),
                    Some(scale),
                    scale,
                    &name_params,
                );
                u["x-kubernetes-group-version-kind"] =
                    json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
                paths.insert(
                    format!("{scoped}/{{name}}/scale"),
                    json!({"get": g, "put": u, "patch": p}),
                );
            }
            _ => {}
        }
    }
}

/// Mark list fields with the strategic-merge-patch metadata kubectl reads
/// (`x-kubernetes-patch-merge-key`, `x-kubernetes-patch-strategy`), from the same
/// table the server merges with.
fn add_patch_extensions(schemas: &mut Map<String, Value>) {
    for (name, schema) in schemas.iter_mut() {
        let parent = if name.ends_with(".Container") || name.ends_with(".EphemeralContainer") {
            "containers"
        } else {
            ""
        };
        let Some(Value::Object(props)) = schema.get_mut("properties") else {
            continue;
        };
        for (field, prop) in props.iter_mut() {
            let Value::Object(p) = prop else { continue };
            let is_array = p.get("type") == Some(&json!("array"));
            if !is_array {
                continue;
            }
            if let Some(key) = crate::model::mergekeys::merge_key(parent, field) {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            } else if field == "finalizers" {
                p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            }
        }
    }
}

impl OpenApi {
    pub fn build(reg: &Registry) -> OpenApi {
        let mut docs = BTreeMap::new();
        for (group, versions) in reg.groups() {
            for version in versions {
                let settings = schemars::generate::SchemaSettings::openapi3();
                let mut generator = settings.into_generator();
                let mut paths = Map::new();
                let types: Vec<&ResourceType> = reg.in_group_version(group, version).collect();
                for t in &types {
                    (t.schema)(&mut generator);
                    paths_for(t, &mut paths);
                }
                generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
                generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
                let mut schemas = generator.take_definitions(true);
                add_patch_extensions(&mut schemas);
                for t in &types {
                    if let Some(Value::Object(s)) = schemas.get_mut(&t.schema_name) {
                        s.insert("x-kubernetes-group-version-kind".into(), json!([gvk(t)]));
                    }
                    schemas.insert(
                        format!("{}List", t.schema_name),
                        json!({
                            "type": "object",
                            "description": format!("{} is a list of {}.", t.list_kind, t.kind),
                            "required": ["items"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "items": {"type": "array", "items": schema_ref(&t.schema_name)},
                                "metadata": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
                            },
                            "x-kubernetes-group-version-kind": [{"group": t.group, "version": t.version, "kind": t.list_kind}],
                        }),
                    );
                }
                if let Some(Value::Object(s)) = schemas.get_mut("io.k8s.api.autoscaling.v1.Scale") {
                    s.insert(
                        "x-kubernetes-group-version-kind".into(),
                        json!([{"group": "autoscaling", "version": "v1", "kind": "Scale"}]),
                    );
                }
                if !schemas.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta") {
                    generator
                        .subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>(
                        );
                    schemas.extend(generator.take_definitions(true));
                }
                let doc = json!({
                    "openapi": "3.0.0",
                    "info": {"title": "Kubernetes", "version": "v1.37.0"},
                    "paths": paths,
                    "components": {"schemas": schemas},
                });
                let bytes = serde_json::to_vec(&doc).expect("json");
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                docs.insert(
                    gv_path(group, version),
                    (format!("{:016X}", h.finish()), bytes),
                );
            }
        }
        OpenApi { docs }
    }

    /// The `/openapi/v3` index.
    pub fn index(&self) -> Value {
        let paths: Map<String, Value> = self
            .docs
            .iter()
            .map(|(k, (hash, _))| {
                (
                    k.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={hash}")}),
                )
            })
            .collect();
        json!({"paths": paths})
    }

    /// One group-version document (`api/v1`, `apis/apps/v1`).
    pub fn document(&self, gv: &str) -> Option<&[u8]> {
        self.docs.get(gv).map(|(_, b)| b.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_gvk_and_field_validation() {
        let reg = Registry::builtin();
        let api = OpenApi::build(&reg);
        assert!(
            api.index()["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        let doc: Value = serde_json::from_slice(api.document("api/v1").unwrap()).unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(pod["properties"]["spec"].is_object());
        let s = serde_json::to_string(&doc).unwrap();
        assert!(!s.contains("#/$defs"), "refs point into components");
        let containers =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        let ports =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    }
}
