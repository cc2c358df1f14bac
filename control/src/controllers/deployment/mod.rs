//! The Deployment controller: one ReplicaSet per pod template (named by the
//! template's hash), rolled forward with RollingUpdate (maxSurge,
//! maxUnavailable, gated on available pods) or Recreate; revisions kept on the
//! ReplicaSets so `kubectl rollout history|undo` work; old ReplicaSets trimmed
//! to revisionHistoryLimit; Progressing and Available conditions and the counts
//! `kubectl rollout status` reads.
//!
//! **Every pass recomputes the whole plan from the cached ReplicaSets and
//! makes at most one scaling step, so a rollout survives any restart.**

use crate::controllers::registration::all_keys;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::controllers::framework::{
    Action, Controller, ControllerError, Informer, Key, Queue, Reconciler, Result, controller_keys,
};
use crate::controllers::owners::{claim, delete_exact};
use crate::controllers::podutil::{controlled_by, controller_ref, terminating};

pub mod plan;

pub use plan::scaled_value;
use plan::{
    Sets, complete, created, new_replicas, replicas, revision, rolling, rs_replicas, rs_status,
    surge_and_unavailable,
};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Annotations of a Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    LAST_APPLIED,
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

pub struct Deployments {
    pub client: Client,
    pub deployments: Arc<Informer<Deployment>>,
    pub sets: Arc<Informer<ReplicaSet>>,
    pub pods: Arc<Informer<Pod>>,
}

impl Deployments {
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.deployments
            .on(crate::controllers::framework::enqueue_self(queue));
        self.sets.on(crate::controllers::owners::enqueue_owners(
            queue,
            &self.deployments,
            "Deployment",
            |o: &Deployment| &o.spec.selector,
        ));
        // Recreate waits for old pods to be gone: a pod's deletion is news.
        let (q, sets) = (queue.clone(), self.sets.clone());
        self.pods.on(move |old, new| {
            if !terminating(new) && old.is_some() {
                return;
            }
            for k in controller_keys(old, new, "ReplicaSet") {
                if let Some(rs) = sets.get(&k) {
                    for d in controller_keys(None, rs.as_ref(), "Deployment") {
                        q.add(d);
                    }
                }
            }
        });
    }

    fn sets_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }
}

/// Kubernetes' hash of a pod template: FNV-32a, printed in decimal, mapped to
/// a vowel-free alphabet so it never spells words. `collisions` salts it.
pub fn template_hash(t: &PodTemplateSpec, collisions: i32) -> String {
    salted_hash(&serde_json::to_vec(t).unwrap_or_default(), collisions)
}

/// FNV-32a of `bytes` (salted by a collision count) in the vowel-free alphabet.
pub fn salted_hash(bytes: &[u8], collisions: i32) -> String {
    let mut bytes = bytes.to_vec();
    if collisions > 0 {
        bytes.extend_from_slice(&collisions.to_le_bytes());
    }
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    safe_encode(&h.to_string())
}

pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// The template without the hash label, for comparing a ReplicaSet's template
/// with the deployment's.
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(HASH_LABEL);
        if l.is_empty() {
            m.labels = None;
        }
    }
    t
}

fn same_template(rs: &ReplicaSet, d: &Deployment) -> bool {
    rs.spec.template.as_ref().map(without_hash) == Some(without_hash(&d.spec.template))
}

fn condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
}

/// Set a condition, keeping its transition time when its status stays.
fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(old) = conds.iter().find(|o| o.type_ == c.type_) {
        if old.status == c.status && old.reason == c.reason && old.message == c.message {
            return;
        }
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    conds.retain(|o| o.type_ != c.type_);
    conds.push(c);
}

fn remove_condition(s: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = s.conditions.as_mut() {
        c.retain(|o| o.type_.as_deref() != Some(type_));
    }
}

fn cond(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Some(Time(Timestamp::now()));
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: now.clone(),
        last_transition_time: now,
    }
}

impl Deployments {
    /// Split the claimed sets into the one matching the template (oldest
    /// first if several) and the rest.
    fn split(&self, d: &Deployment, mut owned: Vec<Arc<ReplicaSet>>) -> Sets {
        owned.sort_by_key(|r| created(r));
        let new = owned.iter().find(|r| same_template(r, d)).cloned();
        let new_uid = new.as_ref().and_then(|r| r.uid());
        let old = owned.into_iter().filter(|r| r.uid() != new_uid).collect();
        Sets { new, old }
    }

    /// Annotations the new ReplicaSet carries: the deployment's own (copied),
    /// its revision, and the replica counts it was last scaled for.
    fn new_annotations(
        &self,
        d: &Deployment,
        existing: &BTreeMap<String, String>,
        revision: i64,
        surge: i32,
    ) -> BTreeMap<String, String> {
        let mut a = existing.clone();
        for (k, v) in d.annotations() {
            if !NOT_COPIED.contains(&k.as_str()) {
                a.insert(k.clone(), v.clone());
            }
        }
        let old_rev: i64 = a.get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0);
        if old_rev < revision {
            if old_rev > 0 {
                let mut hist: Vec<String> = a
                    .get(REVISION_HISTORY)
                    .map(|h| h.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                hist.push(old_rev.to_string());
                a.insert(REVISION_HISTORY.into(), hist.join(","));
            }
            a.insert(REVISION.into(), revision.to_string());
        }
        a.insert(DESIRED_REPLICAS.into(), replicas(d).to_string());
        a.insert(MAX_REPLICAS.into(), (replicas(d) + surge).to_string());
        a
    }

    /// Make sure the new ReplicaSet exists with the next revision; returns it
    /// (`None` when `create` is false and there is none yet).
    async fn sync_new(
        &self,
        d: &Deployment,
        sets: &mut Sets,
        create: bool,
        status: &mut DeploymentStatus,
    ) -> Result<()> {
        let ns = d.namespace().unwrap_or_default();
        let max_old = sets.old.iter().map(|r| revision(r)).max().unwrap_or(0);
        let (surge, _) = surge_and_unavailable(d)?;
        if let Some(rs) = sets.new.clone() {
            let ann = self.new_annotations(d, rs.annotations(), max_old + 1, surge);
            // Only the revision and copied annotations are synced here; the
            // replica annotations change when the set is scaled.
            let mut want = ann.clone();
            for k in [DESIRED_REPLICAS, MAX_REPLICAS] {
                match rs.annotations().get(k) {
                    Some(v) => want.insert(k.into(), v.clone()),
                    None => want.remove(k),
                };
            }
            if &want != rs.annotations() {
                let mut new = (*rs).clone();
                new.metadata.annotations = Some(want);
                let made = self
                    .sets_api(&ns)
                    .replace(&rs.name_any(), &PostParams::default(), &new)
                    .await?;
                sets.new = Some(Arc::new(made));
            }
            if condition(status, "Progressing").is_none() {
                set_condition(
                    status,
                    cond(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set \"{}\"", rs.name_any()),
                    ),
                );
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        let collisions = status.collision_count.unwrap_or(0);
        let hash = template_hash(&d.spec.template, collisions);
        let mut template = d.spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let initial = if rolling(d) {
            new_replicas(d, sets, 0)?
        } else {
            0
        };
        let name = format!("{}-{hash}", d.name_any());
        let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
        let mut ann = self.new_annotations(d, &BTreeMap::new(), max_old + 1, surge);
        ann.insert(DESIRED_REPLICAS.into(), replicas(d).to_string());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels,
                annotations: Some(ann),
                owner_references: Some(vec![controller_ref(d)]),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(initial),
                min_ready_seconds: d.spec.min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        };
        match self.sets_api(&ns).create(&PostParams::default(), &rs).await {
            Ok(made) => {
                tracing::info!(deployment = %d.name_any(), replicaset = %name, "created new replica set");
                set_condition(
                    status,
                    cond(
                        "Progressing",
                        "True",
                        "NewReplicaSetCreated",
                        format!("Created new replica set \"{name}\""),
                    ),
                );
                sets.new = Some(Arc::new(made));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already (a cache behind its own write), or a collision.
                let existing = self.sets_api(&ns).get(&name).await?;
                if controlled_by(&existing, &d.uid().unwrap_or_default())
                    && same_template(&existing, d)
                {
                    sets.new = Some(Arc::new(existing));
                    return Ok(());
                }
                status.collision_count = Some(collisions + 1);
                Err(ControllerError::Invalid(format!(
                    "replica set name {name} collides; retrying with a new hash"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Scale one set to `to`, recording the deployment's size on it.
    async fn scale(&self, d: &Deployment, rs: &ReplicaSet, to: i32) -> Result<bool> {
        let (surge, _) = surge_and_unavailable(d)?;
        let desired = replicas(d).to_string();
        let max = (replicas(d) + surge).to_string();
        let a = rs.annotations();
        if rs_replicas(rs) == to
            && a.get(DESIRED_REPLICAS) == Some(&desired)
            && a.get(MAX_REPLICAS) == Some(&max)
        {
            return Ok(false);
        }
        let mut new = rs.clone();
        new.spec.replicas = Some(to);
        let ann = new
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        ann.insert(DESIRED_REPLICAS.into(), desired);
        ann.insert(MAX_REPLICAS.into(), max);
        self.sets_api(&rs.namespace().unwrap_or_default())
            .replace(&rs.name_any(), &PostParams::default(), &new)
            .await?;
        tracing::debug!(replicaset = %rs.name_any(), from = rs_replicas(rs), to, "scaled");
        Ok(rs_replicas(rs) != to)
    }

    /// A rolling step (see `plan::roll`). Returns whether anything moved.
    async fn roll(&self, d: &Deployment, sets: &Sets) -> Result<bool> {
        let steps = plan::roll(d, sets)?;
        self.apply(d, &steps).await
    }

    /// Make the scaling steps in order; returns whether any changed a size.
    async fn apply(&self, d: &Deployment, steps: &[plan::Scale]) -> Result<bool> {
        let mut moved = false;
        for (rs, to) in steps {
            moved |= self.scale(d, rs, *to).await?;
        }
        Ok(moved)
    }

    /// A Recreate step: every old set to zero, wait for their pods to go, then
    /// the new set to full size.
    async fn recreate(
        &self,
        d: &Deployment,
        sets: &mut Sets,
        status: &mut DeploymentStatus,
    ) -> Result<()> {
        if self.apply(d, &plan::recreate_old(sets)).await? {
            return Ok(());
        }
        let old_uids: Vec<String> = sets.old.iter().filter_map(|r| r.uid()).collect();
        let ns = d.namespace().unwrap_or_default();
        let old_running = self.pods.list(&ns).iter().any(|p| {
            old_uids.iter().any(|u| controlled_by(p.as_ref(), u))
                && !matches!(
                    crate::controllers::podutil::phase(p),
                    "Succeeded" | "Failed"
                )
        });
        if old_running {
            return Ok(());
        }
        self.sync_new(d, sets, true, status).await?;
        if let Some(new) = &sets.new {
            self.scale(d, new, replicas(d)).await?;
        }
        Ok(())
    }

    /// Bring every active set to the deployment's size without rolling (see
    /// `plan::proportional`).
    async fn proportional(&self, d: &Deployment, sets: &Sets) -> Result<()> {
        let steps = plan::proportional(d, sets)?;
        self.apply(d, &steps).await?;
        Ok(())
    }

    /// Delete old, empty sets beyond revisionHistoryLimit (see `plan::cleanup`).
    async fn cleanup(&self, d: &Deployment, sets: &Sets) -> Result<()> {
        for rs in plan::cleanup(d, sets) {
            delete_exact(
                &self.sets_api(&d.namespace().unwrap_or_default()),
                rs.as_ref(),
                None,
            )
            .await?;
        }
        Ok(())
    }
}

impl Reconciler for Deployments {
    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(Action::await_change());
        };
        if terminating(d.as_ref()) {
            return Ok(Action::await_change());
        }
        let d = d.as_ref();
        crate::controllers::podutil::require_selector(&d.spec.selector)?;
        let owned = claim(
            &self.sets_api(&key.ns),
            &controller_ref(d),
            false,
            &d.spec.selector,
            self.sets.list(&key.ns),
        )
        .await?;
        let mut sets = self.split(d, owned);
        let mut status = d.status.clone().unwrap_or_default();
        let paused = d.spec.paused.unwrap_or(false);
        if paused || plan::scaling_event(d, &sets) {
            self.sync_new(d, &mut sets, false, &mut status).await?;
            self.proportional(d, &sets).await?;
            if paused {
                self.cleanup(d, &sets).await?;
            }
        } else if rolling(d) {
            self.sync_new(d, &mut sets, true, &mut status).await?;
            let moved = self.roll(d, &sets).await?;
            if !moved && complete(d, &sets) {
                self.cleanup(d, &sets).await?;
            }
        } else {
            self.recreate(d, &mut sets, &mut status).await?;
            if complete(d, &sets) {
                self.cleanup(d, &sets).await?;
            }
        }
        self.sync_revision(d, &sets).await?;
        let requeue = self.write_status(d, &sets, status, paused).await?;
        Ok(Action::requeue_opt(requeue))
    }
}

impl Deployments {
    /// The deployment carries the revision of its new set (as `kubectl
    /// describe` shows).
    async fn sync_revision(&self, d: &Deployment, sets: &Sets) -> Result<()> {
        let Some(new) = &sets.new else {
            return Ok(());
        };
        let rev = revision(new).to_string();
        if d.annotations().get(REVISION) == Some(&rev) || rev == "0" {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        self.api(&d.namespace().unwrap_or_default())
            .patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    /// Counts and conditions; returns when to look again for the progress deadline.
    async fn write_status(
        &self,
        d: &Deployment,
        sets: &Sets,
        mut status: DeploymentStatus,
        paused: bool,
    ) -> Result<Option<Duration>> {
        let prev = d.status.clone().unwrap_or_default();
        let want = replicas(d);
        let (_, max_unavailable) = surge_and_unavailable(d)?;
        let sum = |f: &dyn Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32| -> i32 {
            sets.all().map(|r| rs_status(r, f)).sum()
        };
        status.observed_generation = d.metadata.generation;
        status.replicas = Some(sum(&|s| s.replicas));
        status.updated_replicas = Some(
            sets.new
                .as_ref()
                .map(|r| rs_status(r, |s| s.replicas))
                .unwrap_or(0),
        );
        status.ready_replicas = Some(sum(&|s| s.ready_replicas.unwrap_or(0)));
        status.available_replicas = Some(sum(&|s| s.available_replicas.unwrap_or(0)));
        status.terminating_replicas = Some(sum(&|s| s.terminating_replicas.unwrap_or(0)));
        status.unavailable_replicas =
            Some((sets.spec_total().max(want) - status.available_replicas.unwrap_or(0)).max(0));
        let available = status.available_replicas.unwrap_or(0);
        if available >= want - max_unavailable {
            set_condition(
                &mut status,
                cond(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                ),
            );
        } else {
            set_condition(
                &mut status,
                cond(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        let new_name = sets.new.as_ref().map(|r| r.name_any()).unwrap_or_default();
        let deadline = d.spec.progress_deadline_seconds.unwrap_or(600);
        let mut requeue = None;
        let current = condition(&status, "Progressing").cloned();
        if paused {
            if current.as_ref().and_then(|c| c.reason.as_deref()) != Some("DeploymentPaused") {
                set_condition(
                    &mut status,
                    cond(
                        "Progressing",
                        "Unknown",
                        "DeploymentPaused",
                        "Deployment is paused".into(),
                    ),
                );
            }
        } else if deadline == i32::MAX {
            remove_condition(&mut status, "Progressing");
        } else {
            let done = complete(d, sets) && status.observed_generation >= d.metadata.generation;
            let was_complete = current.as_ref().and_then(|c| c.reason.as_deref())
                == Some("NewReplicaSetAvailable")
                && status.replicas == status.updated_replicas;
            if done {
                set_condition(
                    &mut status,
                    cond(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                    ),
                );
            } else if was_complete {
            } else if current.as_ref().and_then(|c| c.reason.as_deref()) == Some("DeploymentPaused")
            {
                set_condition(
                    &mut status,
                    cond(
                        "Progressing",
                        "Unknown",
                        "DeploymentResumed",
                        "Deployment is resumed".into(),
                    ),
                );
            } else if progressed(&prev, &status) {
                let mut c = cond(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{new_name}\" is progressing."),
                );
                if let Some(old) = &current
                    && old.status.as_deref() == Some("True")
                {
                    c.last_transition_time = old.last_transition_time.clone();
                }
                // A fresh update time restarts the deadline.
                let conds = status.conditions.get_or_insert_with(Vec::new);
                conds.retain(|o| o.type_.as_deref() != Some("Progressing"));
                conds.push(c);
            } else if let Some(c) = &current
                && c.reason.as_deref() != Some("ProgressDeadlineExceeded")
            {
                let since = c
                    .last_update_time
                    .as_ref()
                    .map(|t| t.0.as_second())
                    .unwrap_or(0);
                let left = since + i64::from(deadline) - Timestamp::now().as_second();
                if left <= 0 {
                    set_condition(
                        &mut status,
                        cond(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        ),
                    );
                } else {
                    requeue = Some(Duration::from_secs(left as u64 + 1));
                }
            }
        }
        // ReplicaSet failures (a template the API refuses) surface here.
        let failure = sets.all().find_map(|r| {
            r.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| {
                    c.type_.as_deref() == Some("ReplicaFailure")
                        && c.status.as_deref() == Some("True")
                })
                .cloned()
        });
        match failure {
            Some(f) => set_condition(
                &mut status,
                DeploymentCondition {
                    type_: Some("ReplicaFailure".into()),
                    status: Some("True".into()),
                    reason: f.reason,
                    message: f.message,
                    last_update_time: f.last_transition_time.clone(),
                    last_transition_time: f.last_transition_time,
                },
            ),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        crate::controllers::framework::write_status(&self.client, d, status).await?;
        Ok(requeue)
    }
}

/// Whether the rollout moved since the last status.
fn progressed(prev: &DeploymentStatus, now: &DeploymentStatus) -> bool {
    let g = |o: Option<i32>| o.unwrap_or(0);
    let old_pods = |s: &DeploymentStatus| g(s.replicas) - g(s.updated_replicas);
    g(now.updated_replicas) > g(prev.updated_replicas)
        || g(now.ready_replicas) > g(prev.ready_replicas)
        || g(now.available_replicas) > g(prev.available_replicas)
        || old_pods(now) < old_pods(prev)
}

/// Start the Deployment controller (2 workers).
pub fn start(ctx: &mut crate::controllers::registration::Ctx<'_>) {
    let pods = ctx.informer::<Pod>();
    let sets = ctx.informer::<ReplicaSet>();
    let deployments = ctx.informer::<Deployment>();
    let dc = Arc::new(Deployments {
        client: ctx.client.clone(),
        deployments: deployments.clone(),
        sets: sets.clone(),
        pods: pods.clone(),
    });
    let q = Queue::new();
    dc.watch(&q);
    ctx.run(
        Controller::new(dc, q)
            .workers(2)
            .after_sync(vec![(&pods).into(), (&sets).into(), (&deployments).into()])
            .resync(all_keys(&deployments)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn percentages_round_like_kubernetes() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_value(Some(&p("25%")), "25%", 10, true).unwrap(), 3);
        assert_eq!(scaled_value(Some(&p("25%")), "25%", 10, false).unwrap(), 2);
        assert_eq!(scaled_value(None, "25%", 100, true).unwrap(), 25);
        assert_eq!(
            scaled_value(Some(&IntOrString::Int(4)), "25%", 10, true).unwrap(),
            4
        );
        assert!(scaled_value(Some(&p("x")), "25%", 10, true).is_err());
    }

    #[test]
    fn hash_is_stable_salted_and_vowel_free() {
        let t = PodTemplateSpec::default();
        let a = template_hash(&t, 0);
        assert_eq!(a, template_hash(&t, 0));
        assert_ne!(a, template_hash(&t, 1));
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
