//! ClusterRole aggregation, as Kubernetes' `clusterrole-aggregation`
//! controller: a ClusterRole with an `aggregationRule` gets the rules of
//! every other ClusterRole its selectors match (in name order, each rule
//! once). This is how a CRD's operator extends `view`, `edit` and `admin`:
//! a ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-view`.
//!
//! **Level-triggered: any ClusterRole change re-evaluates every aggregated
//! role; a role is written only when its rules differ.**

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::Api;
use kube::api::PostParams;

use crate::controllers::framework::{Action, Controller, Informer, Key, Queue, Reconciler, Result};
use crate::controllers::podutil::selector_matches;
use crate::controllers::registration::Ctx;

pub struct Aggregation {
    client: kube::Client,
    roles: Arc<Informer<ClusterRole>>,
}

/// The rules `role` aggregates from `all`: those of each other role some
/// selector matches, by name, without repeats.
pub fn aggregate(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .clone()
        .unwrap_or_default();
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            let labels = r.metadata.labels.clone().unwrap_or_default();
            selectors.iter().any(|s| selector_matches(s, &labels))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for r in sources {
        for rule in r.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

impl Reconciler for Aggregation {
    fn name(&self) -> &'static str {
        "clusterrole-aggregation"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(role) = self.roles.get(key) else {
            return Ok(Action::await_change());
        };
        let Some(rules) = aggregate(&role, &self.roles.list("")) else {
            return Ok(Action::await_change());
        };
        if role.rules.clone().unwrap_or_default() == rules {
            return Ok(Action::await_change());
        }
        let mut updated = (*role).clone();
        updated.rules = Some(rules);
        let api: Api<ClusterRole> = Api::all(self.client.clone());
        api.replace(&key.name, &PostParams::default(), &updated)
            .await?;
        tracing::info!(role = %key.name, "aggregated rules");
        Ok(Action::await_change())
    }
}

pub fn start(ctx: &mut Ctx<'_>) {
    let roles = ctx.informer::<ClusterRole>();
    let c = Arc::new(Aggregation {
        client: ctx.client.clone(),
        roles: roles.clone(),
    });
    let q = Queue::new();
    let aggregated = {
        let roles = roles.clone();
        move || -> Vec<Key> {
            roles
                .list("")
                .iter()
                .filter(|r| r.aggregation_rule.is_some())
                .map(|r| Key::new("", r.metadata.name.as_deref().unwrap_or("")))
                .collect()
        }
    };
    {
        let (q, aggregated) = (q.clone(), aggregated.clone());
        roles.on(move |_, r| {
            q.add(Key::new("", r.metadata.name.as_deref().unwrap_or("")));
            for k in aggregated() {
                q.add(k);
            }
        });
    }
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![(&roles).into()])
            .resync(aggregated),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(
        name: &str,
        labels: &[(&str, &str)],
        verbs: &[&str],
        agg: Option<&str>,
    ) -> Arc<ClusterRole> {
        let mut v = serde_json::json!({"metadata": {"name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>()},
            "rules": [{"verbs": verbs, "apiGroups": [""], "resources": ["pods"]}]});
        if let Some(l) = agg {
            v["aggregationRule"] =
                serde_json::json!({"clusterRoleSelectors": [{"matchLabels": {l: "true"}}]});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn aggregated_roles_take_matching_rules_in_name_order_once() {
        let view = role("view", &[], &["get"], Some("to-view"));
        let all = vec![
            view.clone(),
            role("z-crd", &[("to-view", "true")], &["list"], None),
            role("a-crd", &[("to-view", "true")], &["get"], None),
            role("b-dup", &[("to-view", "true")], &["get"], None),
            role("other", &[("to-edit", "true")], &["delete"], None),
        ];
        let rules = aggregate(&view, &all).unwrap();
        let verbs: Vec<Vec<String>> = rules.iter().map(|r| r.verbs.clone()).collect();
        assert_eq!(
            verbs,
            vec![vec!["get".to_string()], vec!["list".to_string()]]
        );
        assert!(aggregate(&all[1], &all).is_none(), "no aggregationRule");
    }
}
