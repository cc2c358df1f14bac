//! ControllerRevisions for DaemonSets and StatefulSets: each distinct pod
//! template is kept as an `apps/v1` ControllerRevision whose data is the patch
//! `{"spec":{"template":{..., "$patch":"replace"}}}` (what `kubectl rollout
//! undo` applies back), numbered in the order templates were used, and trimmed
//! to `revisionHistoryLimit`.
//!
//! **A template that matches an older revision reuses it with the next number
//! (a rollback), so one template never has two revisions.**

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::framework::{ControllerError, Result};
use super::owners::claim;

/// The label on pods (and revisions) naming their revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The revision data for a template: a patch that puts the template back.
pub fn template_patch(t: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(t).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision holds, if its data is a template patch.
pub fn template_of(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// FNV-32a of the revision data (salted by the collision count), in the
/// vowel-free alphabet Kubernetes uses for names.
pub fn hash(data: &Value, collisions: i32) -> String {
    super::deployment::salted_hash(&serde_json::to_vec(data).unwrap_or_default(), collisions)
}

pub fn number(cr: &ControllerRevision) -> i64 {
    cr.revision.unwrap_or(0)
}

/// What `sync` settled on.
pub struct Synced {
    /// The revision of the current template.
    pub update: Arc<ControllerRevision>,
    /// Every revision the owner controls (including `update`).
    pub all: Vec<Arc<ControllerRevision>>,
    /// The collision count used to name `update`.
    pub collisions: i32,
}

/// Everything `sync` needs to know about the owner.
pub struct Owner<'a> {
    pub client: &'a Client,
    pub ns: &'a str,
    pub name: &'a str,
    pub reference: OwnerReference,
    pub deleting: bool,
    pub selector: &'a LabelSelector,
    pub template: &'a PodTemplateSpec,
    pub collisions: i32,
}

/// Claim the owner's revisions and make sure its current template has one with
/// the highest number.
pub async fn sync(o: &Owner<'_>, candidates: Vec<Arc<ControllerRevision>>) -> Result<Synced> {
    let api: Api<ControllerRevision> = Api::namespaced(o.client.clone(), o.ns);
    let mut all = claim(&api, &o.reference, o.deleting, o.selector, candidates).await?;
    let data = template_patch(o.template);
    let max = all.iter().map(|r| number(r)).max().unwrap_or(0);
    let mut same: Vec<_> = all.iter().filter(|r| r.data.0 == data).cloned().collect();
    same.sort_by_key(|r| number(r));
    if let Some(found) = same.pop() {
        if number(&found) < max {
            // Back to an older template: it becomes the newest revision.
            let mut bumped = (*found).clone();
            bumped.revision = Some(max + 1);
            let made = Arc::new(
                api.replace(&found.name_any(), &PostParams::default(), &bumped)
                    .await?,
            );
            all.retain(|r| r.uid() != made.uid());
            all.push(made.clone());
            return Ok(Synced {
                update: made,
                all,
                collisions: o.collisions,
            });
        }
        return Ok(Synced {
            update: found,
            all,
            collisions: o.collisions,
        });
    }
    let mut labels: BTreeMap<String, String> = o
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for collisions in o.collisions..o.collisions + 8 {
        let h = hash(&data, collisions);
        labels.insert(REVISION_LABEL.into(), h.clone());
        let name = format!("{}-{h}", o.name);
        let cr = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(o.ns.into()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![o.reference.clone()]),
                ..Default::default()
            },
            data: RawExtension(data.clone()),
            revision: Some(max + 1),
        };
        match api.create(&PostParams::default(), &cr).await {
            Ok(made) => {
                tracing::info!(owner = o.name, revision = %name, number = max + 1, "created controller revision");
                let made = Arc::new(made);
                all.push(made.clone());
                return Ok(Synced {
                    update: made,
                    all,
                    collisions,
                });
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours with the same data (a cache behind): use it; else a
                // hash collision: try the next salt.
                let there = api.get(&name).await?;
                if there.data.0 == data && super::podutil::controlled_by(&there, &o.reference.uid) {
                    let there = Arc::new(there);
                    all.retain(|r| r.uid() != there.uid());
                    all.push(there.clone());
                    return Ok(Synced {
                        update: there,
                        all,
                        collisions,
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControllerError::Invalid(format!(
        "no free controller revision name for {}",
        o.name
    )))
}

/// Delete the oldest revisions not in `live` beyond `limit`.
pub async fn trim(
    client: &Client,
    ns: &str,
    all: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: i32,
) -> Result<()> {
    let mut old: Vec<_> = all
        .iter()
        .filter(|r| !live.contains(&r.name_any()))
        .collect();
    let limit = limit.max(0) as usize;
    if old.len() <= limit {
        return Ok(());
    }
    old.sort_by_key(|r| number(r));
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    for r in old.iter().take(old.len() - limit) {
        let dp = DeleteParams::default().preconditions(Preconditions {
            uid: r.uid(),
            resource_version: None,
        });
        match api.delete(&r.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn patch_round_trips_and_hash_is_stable() {
        let t = template("a:v1");
        let p = template_patch(&t);
        assert_eq!(p["spec"]["template"]["$patch"], "replace");
        let cr = ControllerRevision {
            metadata: Default::default(),
            data: RawExtension(p.clone()),
            revision: Some(1),
        };
        assert_eq!(template_of(&cr), Some(t));
        assert_eq!(hash(&p, 0), hash(&p, 0));
        assert_ne!(hash(&p, 0), hash(&p, 1));
        assert_ne!(hash(&p, 0), hash(&template_patch(&template("a:v2")), 0));
        assert!(
            hash(&p, 0)
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }
}
