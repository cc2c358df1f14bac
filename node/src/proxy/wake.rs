//! Which Services wake a Deployment: those whose selector picks the pods of
//! a Deployment that scales to zero (the `skiff.dev/scale-to-zero-after`
//! annotation, or a HorizontalPodAutoscaler with `minReplicas: 0` on it).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use skiff_common::scale::{SCALE_TO_ZERO_AFTER, parse_duration};

/// A Deployment's name, its pods' labels and the Deployment as last seen
/// (a node cut off from its servers starts a pod from its template).
type Waker = (String, BTreeMap<String, String>, Arc<Deployment>);

/// The scale-to-zero Deployments of each namespace with their pod labels.
#[derive(Debug, Default, Clone)]
pub struct Wakers {
    by_namespace: BTreeMap<String, Vec<Waker>>,
}

impl Wakers {
    pub fn build(deployments: &[Deployment], hpas: &[HorizontalPodAutoscaler]) -> Wakers {
        let mut by_namespace: BTreeMap<String, Vec<Waker>> = BTreeMap::new();
        for d in deployments {
            let (Some(ns), Some(name)) = (&d.metadata.namespace, &d.metadata.name) else {
                continue;
            };
            let annotated = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SCALE_TO_ZERO_AFTER))
                .is_some_and(|v| parse_duration(v).is_ok());
            let by_hpa = hpas.iter().any(|h| {
                h.metadata.namespace.as_ref() == Some(ns)
                    && h.spec.min_replicas == Some(0)
                    && h.spec.scale_target_ref.kind == "Deployment"
                    && &h.spec.scale_target_ref.name == name
            });
            if !(annotated || by_hpa) {
                continue;
            }
            let labels = d
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            by_namespace.entry(ns.clone()).or_default().push((
                name.clone(),
                labels,
                Arc::new(d.clone()),
            ));
        }
        Wakers { by_namespace }
    }

    /// The scale-to-zero Deployment whose pods `selector` picks, if any.
    pub fn behind(
        &self,
        namespace: &str,
        selector: Option<&BTreeMap<String, String>>,
    ) -> Option<String> {
        let sel = selector.filter(|s| !s.is_empty())?;
        self.by_namespace
            .get(namespace)?
            .iter()
            .find(|(_, labels, _)| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map(|(name, _, _)| name.clone())
    }

    /// The scale-to-zero Deployment `namespace/name` as last seen.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Arc<Deployment>> {
        self.by_namespace
            .get(namespace)?
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, d)| d.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotated_or_hpa_zero_deployments_wake() {
        let d = |name: &str, ann: Option<&str>| -> Deployment {
            let mut v = json!({"metadata": {"name": name, "namespace": "d"},
                "spec": {"selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name, "tier": "x"}}}}});
            if let Some(a) = ann {
                v["metadata"]["annotations"] = json!({SCALE_TO_ZERO_AFTER: a});
            }
            serde_json::from_value(v).unwrap()
        };
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "h", "namespace": "d"},
            "spec": {"minReplicas": 0, "maxReplicas": 3,
                     "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "c"}}}))
        .unwrap();
        let w = Wakers::build(
            &[
                d("a", Some("30s")),
                d("b", None),
                d("c", None),
                d("e", Some("-1s")),
            ],
            &[hpa],
        );
        let sel = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
        assert_eq!(w.behind("d", Some(&sel("a"))), Some("a".into()));
        assert_eq!(w.behind("d", Some(&sel("b"))), None);
        assert_eq!(w.behind("d", Some(&sel("c"))), Some("c".into()));
        assert_eq!(w.behind("d", Some(&sel("e"))), None);
        assert_eq!(w.behind("other", Some(&sel("a"))), None);
        assert_eq!(w.behind("d", None), None);
    }
}
