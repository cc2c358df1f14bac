//! DefaultIngressClass admission, as Kubernetes has it: an Ingress created
//! without `spec.ingressClassName` (and without the old
//! `kubernetes.io/ingress.class` annotation) gets the IngressClass marked
//! `ingressclass.kubernetes.io/is-default-class: "true"` (the newest, if
//! several are).

use serde_json::Value;

use crate::model::status::ApiResult;

use super::Objects;

pub use skiff_common::ingress::DEFAULT_CLASS;

/// The default class among `classes`: the newest marked one.
pub fn default_class(classes: &[Value]) -> Option<String> {
    classes
        .iter()
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(DEFAULT_CLASS))
                .and_then(Value::as_str)
                == Some("true")
        })
        .max_by(|a, b| {
            let at = |v: &Value| {
                v.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            at(a).cmp(&at(b))
        })
        .and_then(|c| c.pointer("/metadata/name")?.as_str().map(str::to_string))
}

impl Objects {
    pub(super) fn admit_ingress_class(&self, ingress: &mut Value) -> ApiResult<()> {
        let named = ingress
            .pointer("/spec/ingressClassName")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        let annotated = ingress
            .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
            .is_some();
        if named || annotated {
            return Ok(());
        }
        let Some(t) = self
            .registry
            .by_kind("networking.k8s.io/v1", "IngressClass")
            .cloned()
        else {
            return Ok(());
        };
        let classes: Vec<Value> = self
            .store
            .list_local(&t.ns_prefix(None), usize::MAX)?
            .iter()
            .filter_map(|kv| self.decode(kv).ok())
            .collect();
        if let Some(name) = default_class(&classes) {
            if !ingress.get("spec").is_some_and(Value::is_object) {
                ingress["spec"] = serde_json::json!({});
            }
            ingress["spec"]["ingressClassName"] = Value::String(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_marked_class_is_the_default() {
        let class = |name: &str, default: bool, at: &str| {
            json!({"metadata": {"name": name, "creationTimestamp": at,
                "annotations": {DEFAULT_CLASS: if default { "true" } else { "false" }}}})
        };
        assert_eq!(default_class(&[]), None);
        assert_eq!(
            default_class(&[class("a", false, "2026-01-01T00:00:00Z")]),
            None
        );
        assert_eq!(
            default_class(&[
                class("old", true, "2026-01-01T00:00:00Z"),
                class("new", true, "2026-02-01T00:00:00Z"),
                class("x", false, "2026-03-01T00:00:00Z"),
            ]),
            Some("new".into())
        );
    }
}
