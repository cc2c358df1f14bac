//! The StatefulSet controller: pods with stable names `<set>-<ordinal>`
//! (from `spec.ordinals.start`), hostname and subdomain from `serviceName`;
//! OrderedReady (ordinal i is created only once every lower one is Running and
//! Ready; scale-down removes the highest ordinal first, one at a time) or
//! Parallel; RollingUpdate with a partition (highest ordinal first, at most
//! maxUnavailable (default 1) replicas down at a time, so by default each
//! replacement is Ready before the next goes) or OnDelete; revisions
//! as ControllerRevisions named in `status.currentRevision`/`updateRevision`
//! and on each pod's `controller-revision-hash`; a failed or deleted pod is
//! recreated under the same name.
//!
//! **Every pass plans from the cached pods alone; OrderedReady passes make at
//! most one create or delete.** volumeClaimTemplates are ignored (Skiff has no
//! PersistentVolumeClaims yet).

use crate::controllers::registration::all_keys;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use crate::controllers::framework::{
    self, Controller, Expectations, Informer, Key, Queue, Reconciler, Result, controller_keys,
};
use crate::controllers::owners::claim;
use crate::controllers::podutil::{
    available, controller_ref, phase, pod_from_template, ready, require_selector, terminating,
    until_available,
};
use crate::controllers::revisions::{self, REVISION_LABEL, template_of};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct StatefulSets {
    pub client: Client,
    pub sets: Arc<Informer<StatefulSet>>,
    pub pods: Arc<Informer<Pod>>,
    pub revisions: Arc<Informer<ControllerRevision>>,
    pub expectations: Expectations,
}

/// What the plan needs of one pod of the set.
#[derive(Debug, Clone, PartialEq)]
pub struct SetPod {
    pub name: String,
    pub uid: String,
    pub revision: String,
    pub failed: bool,
    pub terminating: bool,
    /// Running, Ready and available (minReadySeconds).
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the pod of this ordinal, from the current revision (`true`,
    /// below a partition) or the update revision.
    Create {
        ordinal: i32,
        current: bool,
    },
    Delete {
        name: String,
        uid: String,
    },
}

/// The inputs of one pass.
pub struct Input<'a> {
    pub start: i32,
    pub replicas: i32,
    /// OrderedReady (vs Parallel).
    pub ordered: bool,
    /// The RollingUpdate partition, or None for OnDelete.
    pub partition: Option<i32>,
    /// RollingUpdate maxUnavailable (at least 1).
    pub max_unavailable: i32,
    pub update_revision: &'a str,
    /// The current revision differs from the update revision and its template is known.
    pub has_current: bool,
    pub pods: &'a BTreeMap<i32, SetPod>,
}

/// What to do this pass, in order.
pub fn plan(i: &Input<'_>) -> Vec<Action> {
    let mut out = Vec::new();
    let end = i.start + i.replicas;
    let delete = |p: &SetPod| Action::Delete {
        name: p.name.clone(),
        uid: p.uid.clone(),
    };
    for ord in i.start..end {
        match i.pods.get(&ord) {
            None => {
                let current = i.has_current && i.partition.is_some_and(|p| ord < p);
                out.push(Action::Create {
                    ordinal: ord,
                    current,
                });
            }
            Some(p) if p.terminating => {}
            Some(p) if p.failed => out.push(delete(p)),
            Some(p) if p.healthy => continue,
            Some(_) => {}
        }
        // Created, deleted, going or not yet healthy: OrderedReady waits.
        if i.ordered {
            return out;
        }
    }
    // Pods beyond the replicas (or below the start), highest ordinal first.
    let condemned: Vec<&SetPod> = i
        .pods
        .iter()
        .rev()
        .filter(|(o, _)| **o >= end || **o < i.start)
        .map(|(_, p)| p)
        .collect();
    for p in condemned {
        if !p.terminating {
            out.push(delete(p));
        }
        if i.ordered {
            return out;
        }
    }
    let Some(partition) = i.partition else {
        return out;
    };
    // Kubernetes' MaxUnavailableStatefulSet: count the replicas that are
    // missing or unhealthy, and delete old pods from the highest ordinal while
    // that stays below maxUnavailable.
    let unavailable = (i.start..end)
        .filter(|o| i.pods.get(o).is_none_or(|p| !p.healthy))
        .count() as i32;
    let mut room = i.max_unavailable.max(1) - unavailable;
    for ord in (partition.max(i.start)..end).rev() {
        if room <= 0 {
            break;
        }
        if let Some(p) = i.pods.get(&ord)
            && p.revision != i.update_revision
            && !p.terminating
        {
            out.push(delete(p));
            room -= 1;
        }
    }
    out
}

/// The ordinal of a pod named `<set>-<n>`.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse::<i32>().ok().filter(|n| *n >= 0)
}

fn first_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

fn replicas(set: &StatefulSet) -> i32 {
    set.spec.replicas.unwrap_or(1).max(0)
}

/// The partition of a RollingUpdate set (0 by default), None for OnDelete.
pub fn partition(set: &StatefulSet) -> Option<i32> {
    let s = set.spec.update_strategy.as_ref();
    if s.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return None;
    }
    Some(
        s.and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
            .max(0),
    )
}

/// RollingUpdate maxUnavailable over the replicas (default 1, percentages
/// rounded down, at least 1).
pub fn max_unavailable(set: &StatefulSet) -> Result<i32> {
    let v = set
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref());
    Ok(match v {
        None => 1,
        Some(v) => {
            crate::controllers::deployment::scaled_value(Some(v), "0%", replicas(set), false)?
                .max(1)
        }
    })
}

impl StatefulSets {
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.sets
            .on(crate::controllers::framework::enqueue_self(queue));
        self.pods.on(crate::controllers::owners::enqueue_owners(
            queue,
            &self.sets,
            "StatefulSet",
            |o: &StatefulSet| &o.spec.selector,
        ));
        let q = queue.clone();
        self.revisions.on(move |old, new| {
            for k in controller_keys(old, new, "StatefulSet") {
                q.add(k);
            }
        });
    }

    fn pods_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// The pod of `ordinal` from `template` at revision `rev`.
    fn new_pod(
        &self,
        set: &StatefulSet,
        ns: &str,
        template: &PodTemplateSpec,
        rev: &str,
        ordinal: i32,
    ) -> Pod {
        let name = format!("{}-{ordinal}", set.name_any());
        let mut pod =
            pod_from_template(template, ns, None, Some(name.clone()), controller_ref(set));
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(REVISION_LABEL.into(), rev.into());
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.hostname = Some(name);
        if let Some(svc) = set.spec.service_name.as_deref().filter(|s| !s.is_empty()) {
            spec.subdomain = Some(svc.into());
        }
        pod
    }

    async fn execute(
        &self,
        set: &StatefulSet,
        key: &Key,
        actions: &[Action],
        update: &ControllerRevision,
        current: Option<&ControllerRevision>,
    ) -> Result<()> {
        for a in actions {
            match a {
                Action::Create {
                    ordinal,
                    current: cur,
                } => {
                    let (template, rev) = match current.filter(|_| *cur) {
                        Some(c) => (template_of(c).unwrap_or(set.spec.template.clone()), c),
                        None => (set.spec.template.clone(), update),
                    };
                    let pod = self.new_pod(set, &key.ns, &template, &rev.name_any(), *ordinal);
                    match self
                        .pods_api(&key.ns)
                        .create(&PostParams::default(), &pod)
                        .await
                    {
                        Ok(made) => {
                            self.expectations.created(key, &made.name_any());
                            tracing::info!(pod = %made.name_any(), revision = %rev.name_any(), "created stateful pod");
                        }
                        // Still there (terminating, or a cache behind): next pass.
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Action::Delete { name, uid } => {
                    self.expectations.deleted(key, uid);
                    let dp = DeleteParams::default().preconditions(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    });
                    match self.pods_api(&key.ns).delete(name, &dp).await {
                        Ok(_) => tracing::info!(pod = %name, "deleted stateful pod"),
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Give members (adopted ones, or ones whose labels were edited) their
    /// identity labels back; hostname and subdomain cannot change on a pod.
    async fn repair_identity(&self, ns: &str, members: &[&Arc<Pod>]) -> Result<()> {
        for p in members.iter().filter(|p| !terminating(p.as_ref())) {
            let name = p.name_any();
            let Some(index) = name.rsplit('-').next() else {
                continue;
            };
            let l = p.labels();
            if l.get(POD_NAME_LABEL) == Some(&name)
                && l.get(POD_INDEX_LABEL).map(String::as_str) == Some(index)
            {
                continue;
            }
            let patch = serde_json::json!({"metadata": {
                "uid": p.uid(),
                "labels": {POD_NAME_LABEL: name, POD_INDEX_LABEL: index},
            }});
            match self
                .pods_api(ns)
                .patch(
                    &p.name_any(),
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn write_status(&self, set: &StatefulSet, status: StatefulSetStatus) -> Result<()> {
        crate::controllers::framework::write_status(&self.client, set, status).await
    }
}

impl Reconciler for StatefulSets {
    fn name(&self) -> &'static str {
        "statefulset"
    }

    async fn reconcile(&self, key: &Key) -> Result<framework::Action> {
        let Some(set) = self.expectations.live(key, &self.sets) else {
            return Ok(framework::Action::await_change());
        };
        let set = set.as_ref();
        require_selector(&set.spec.selector)?;
        let old_status = set.status.clone().unwrap_or_default();
        let revs = revisions::sync(
            &revisions::Owner {
                client: &self.client,
                ns: &key.ns,
                name: &key.name,
                reference: controller_ref(set),
                deleting: false,
                selector: &set.spec.selector,
                template: &set.spec.template,
                collisions: old_status.collision_count.unwrap_or(0),
            },
            self.revisions.list(&key.ns),
        )
        .await?;
        let update = revs.update.clone();
        let update_name = update.name_any();
        let current = old_status
            .current_revision
            .as_deref()
            .and_then(|n| revs.all.iter().find(|r| r.name_any() == n))
            .cloned()
            .unwrap_or_else(|| update.clone());
        let current_name = current.name_any();

        let synced = self.expectations.seen_in(key, &self.pods);
        let owned = claim(
            &self.pods_api(&key.ns),
            &controller_ref(set),
            false,
            &set.spec.selector,
            self.pods.list(&key.ns),
        )
        .await?;
        let now = Timestamp::now();
        let min_ready = set.spec.min_ready_seconds.unwrap_or(0);
        let mut by_ord: BTreeMap<i32, SetPod> = BTreeMap::new();
        let mut members: Vec<&Arc<Pod>> = Vec::new();
        for p in &owned {
            let Some(ord) = ordinal(&key.name, &p.name_any()) else {
                continue;
            };
            members.push(p);
            by_ord.insert(
                ord,
                SetPod {
                    name: p.name_any(),
                    uid: p.uid().unwrap_or_default(),
                    revision: p.labels().get(REVISION_LABEL).cloned().unwrap_or_default(),
                    failed: matches!(phase(p), "Failed" | "Succeeded"),
                    terminating: terminating(p.as_ref()),
                    healthy: phase(p) == "Running" && available(p, min_ready, now),
                },
            );
        }
        self.repair_identity(&key.ns, &members).await?;
        let want = replicas(set);
        let mut failure = None;
        if synced {
            let actions = plan(&Input {
                start: first_ordinal(set),
                replicas: want,
                ordered: set.spec.pod_management_policy.as_deref() != Some("Parallel"),
                partition: partition(set),
                max_unavailable: max_unavailable(set)?,
                update_revision: &update_name,
                has_current: current_name != update_name && template_of(&current).is_some(),
                pods: &by_ord,
            });
            if !actions.is_empty() {
                tracing::debug!(?actions, "stateful set plan");
            }
            if let Err(e) = self
                .execute(set, key, &actions, &update, Some(current.as_ref()))
                .await
            {
                failure = Some(e);
            }
        }

        let live_pods: Vec<&&Arc<Pod>> = members
            .iter()
            .filter(|p| !terminating(p.as_ref()))
            .collect();
        let count = |f: &dyn Fn(&Pod) -> bool| live_pods.iter().filter(|p| f(p)).count() as i32;
        let rev_of = |p: &Pod| p.labels().get(REVISION_LABEL).cloned().unwrap_or_default();
        let mut status = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            replicas: count(&|_| true),
            ready_replicas: Some(count(&|p| phase(p) == "Running" && ready(p))),
            available_replicas: Some(count(&|p| {
                phase(p) == "Running" && available(p, min_ready, now)
            })),
            current_replicas: Some(count(&|p| rev_of(p) == current_name)),
            updated_replicas: Some(count(&|p| rev_of(p) == update_name)),
            current_revision: Some(current_name.clone()),
            update_revision: Some(update_name.clone()),
            collision_count: (revs.collisions > 0).then_some(revs.collisions),
            conditions: old_status.conditions.clone(),
        };
        // Every pod updated and ready: the update revision becomes current.
        if status.replicas == want
            && status.updated_replicas == Some(want)
            && status.ready_replicas == Some(want)
        {
            status.current_revision = Some(update_name.clone());
            status.current_replicas = status.updated_replicas;
        }
        let in_use: HashSet<String> = members.iter().map(|p| rev_of(p)).collect();
        let live: HashSet<String> = revs
            .all
            .iter()
            .map(|r| r.name_any())
            .filter(|n| {
                *n == update_name
                    || Some(n) == status.current_revision.as_ref()
                    || in_use.contains(n)
            })
            .collect();
        revisions::trim(
            &self.client,
            &key.ns,
            &revs.all,
            &live,
            set.spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
        self.write_status(set, status).await?;
        if let Some(e) = failure {
            return Err(e);
        }
        if !synced {
            return Ok(framework::Action::requeue(Duration::from_secs(1)));
        }
        let soonest = members
            .iter()
            .filter_map(|p| until_available(p, min_ready, now))
            .min();
        Ok(framework::Action::requeue_opt(
            soonest.map(|s| Duration::from_secs(s as u64)),
        ))
    }
}

/// Start the StatefulSet controller (2 workers).
pub fn start(ctx: &mut crate::controllers::registration::Ctx<'_>) {
    let pods = ctx.informer::<Pod>();
    let revisions = ctx.informer::<ControllerRevision>();
    let stateful = ctx.informer::<StatefulSet>();
    let ssc = Arc::new(StatefulSets {
        client: ctx.client.clone(),
        sets: stateful.clone(),
        pods: pods.clone(),
        revisions: revisions.clone(),
        expectations: Expectations::default(),
    });
    let q = Queue::new();
    ssc.watch(&q);
    ctx.run(
        Controller::new(ssc, q)
            .workers(2)
            .after_sync(vec![
                (&pods).into(),
                (&revisions).into(),
                (&stateful).into(),
            ])
            .resync(all_keys(&stateful)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ord: i32, rev: &str, healthy: bool) -> (i32, SetPod) {
        (
            ord,
            SetPod {
                name: format!("web-{ord}"),
                uid: format!("u{ord}"),
                revision: rev.into(),
                failed: false,
                terminating: false,
                healthy,
            },
        )
    }

    fn input<'a>(pods: &'a BTreeMap<i32, SetPod>, replicas: i32, ordered: bool) -> Input<'a> {
        Input {
            start: 0,
            replicas,
            ordered,
            partition: Some(0),
            max_unavailable: 1,
            update_revision: "r1",
            has_current: false,
            pods,
        }
    }

    fn create(ordinal: i32) -> Action {
        Action::Create {
            ordinal,
            current: false,
        }
    }

    fn delete(ord: i32) -> Action {
        Action::Delete {
            name: format!("web-{ord}"),
            uid: format!("u{ord}"),
        }
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        let none = BTreeMap::new();
        assert_eq!(plan(&input(&none, 3, true)), vec![create(0)]);
        let one: BTreeMap<_, _> = [pod(0, "r1", false)].into();
        assert_eq!(plan(&input(&one, 3, true)), vec![], "waits for web-0");
        let one: BTreeMap<_, _> = [pod(0, "r1", true)].into();
        assert_eq!(plan(&input(&one, 3, true)), vec![create(1)]);
        assert_eq!(
            plan(&input(&none, 3, false)),
            vec![create(0), create(1), create(2)],
            "Parallel"
        );
    }

    #[test]
    fn failed_pods_are_deleted_then_recreated() {
        let mut p = pod(1, "r1", false);
        p.1.failed = true;
        let pods: BTreeMap<_, _> = [pod(0, "r1", true), p].into();
        assert_eq!(plan(&input(&pods, 2, true)), vec![delete(1)]);
        let gone: BTreeMap<_, _> = [pod(0, "r1", true)].into();
        assert_eq!(plan(&input(&gone, 2, true)), vec![create(1)]);
    }

    #[test]
    fn scale_down_from_the_highest_one_at_a_time() {
        let pods: BTreeMap<_, _> =
            [pod(0, "r1", true), pod(1, "r1", true), pod(2, "r1", true)].into();
        assert_eq!(plan(&input(&pods, 1, true)), vec![delete(2)]);
        let mut going = pod(2, "r1", true);
        going.1.terminating = true;
        let pods2: BTreeMap<_, _> = [pod(0, "r1", true), pod(1, "r1", true), going].into();
        assert_eq!(plan(&input(&pods2, 1, true)), vec![], "waits for web-2");
        assert_eq!(
            plan(&input(&pods, 1, false)),
            vec![delete(2), delete(1)],
            "Parallel"
        );
        // An unhealthy replica holds an ordered scale-down.
        let sick: BTreeMap<_, _> = [pod(0, "r1", false), pod(1, "r1", true)].into();
        assert_eq!(plan(&input(&sick, 1, true)), vec![]);
    }

    #[test]
    fn rolling_update_goes_down_to_the_partition() {
        let old: BTreeMap<_, _> =
            [pod(0, "r0", true), pod(1, "r0", true), pod(2, "r0", true)].into();
        assert_eq!(plan(&input(&old, 3, true)), vec![delete(2)]);
        let mid: BTreeMap<_, _> =
            [pod(0, "r0", true), pod(1, "r0", true), pod(2, "r1", false)].into();
        assert_eq!(plan(&input(&mid, 3, false)), vec![], "waits for web-2");
        let mid: BTreeMap<_, _> =
            [pod(0, "r0", true), pod(1, "r0", true), pod(2, "r1", true)].into();
        assert_eq!(plan(&input(&mid, 3, true)), vec![delete(1)]);
        let mut part = input(&mid, 3, true);
        part.partition = Some(2);
        assert_eq!(plan(&part), vec![], "ordinals below the partition stay");
        part.partition = None;
        assert_eq!(plan(&part), vec![], "OnDelete");
        // maxUnavailable 2: two old pods go at once, counting unhealthy ones.
        let mut two = input(&old, 3, true);
        two.max_unavailable = 2;
        assert_eq!(plan(&two), vec![delete(2), delete(1)]);
        let one_down: BTreeMap<_, _> =
            [pod(0, "r0", true), pod(1, "r0", true), pod(2, "r1", false)].into();
        let mut two = input(&one_down, 3, false);
        two.max_unavailable = 2;
        assert_eq!(plan(&two), vec![delete(1)]);
        // Below the partition a missing pod comes back at the current revision.
        let hole: BTreeMap<_, _> = [pod(0, "r0", true)].into();
        let mut i = input(&hole, 3, true);
        i.partition = Some(2);
        i.has_current = true;
        assert_eq!(
            plan(&i),
            vec![Action::Create {
                ordinal: 1,
                current: true
            }]
        );
    }

    #[test]
    fn start_ordinal_and_names() {
        let pods: BTreeMap<_, _> = [pod(0, "r1", true)].into();
        let mut i = input(&pods, 2, true);
        i.start = 5;
        // web-0 is below the start: condemned only after 5 and 6 exist.
        assert_eq!(plan(&i), vec![create(5)]);
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-012"), None);
        assert_eq!(ordinal("web", "web2-1"), None);
        assert_eq!(ordinal("web", "web-"), None);
        assert_eq!(ordinal("web-a", "web-a-0"), Some(0));
    }
}
