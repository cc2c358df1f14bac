//! The DaemonSet controller: one pod per eligible node (see `eligibility`),
//! created bound to its node; pods on nodes that no longer fit, duplicates and
//! failed pods are deleted (and replaced); RollingUpdate (maxUnavailable, or
//! maxSurge: new pod first, old one deleted once the new is available) and
//! OnDelete over ControllerRevisions (`controller-revision-hash` on pods);
//! the status counts `kubectl rollout status ds/x` reads.
//!
//! Pods get `spec.nodeName` directly, plus the required node affinity
//! `matchFields metadata.name In [node]` Kubernetes puts on daemon pods. Skiff's
//! scheduler does not read `matchFields` (it would place such a pod anywhere),
//! so binding at creation is what makes the node choice hold; it also lets a
//! daemon pod land on a node the scheduler would filter out (not ready,
//! cordoned), which the automatic tolerations say it may.
//!
//! **A node gets at most one create per pass, and only when the cache shows
//! every earlier write of this DaemonSet (expectations).**

use crate::controllers::registration::all_keys;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use crate::controllers::deployment::scaled_value;
use crate::controllers::eligibility::{Fit, fit, with_daemon_tolerations};
use crate::controllers::framework::{
    Action, Controller, ControllerError, Expectations, Informer, Key, Queue, Reconciler, Result,
    controller_keys,
};
use crate::controllers::owners::claim;
use crate::controllers::podutil::{
    available, controller_ref, generate_prefix, phase, pod_from_template, ready, require_selector,
    terminating, until_available,
};
use crate::controllers::revisions::{self, REVISION_LABEL};

/// The deprecated label Kubernetes still puts on daemon pods.
const TEMPLATE_GENERATION: &str = "pod-template-generation";

pub struct DaemonSets {
    pub client: Client,
    pub sets: Arc<Informer<DaemonSet>>,
    pub nodes: Arc<Informer<Node>>,
    pub pods: Arc<Informer<Pod>>,
    pub revisions: Arc<Informer<ControllerRevision>>,
    pub expectations: Expectations,
    pub failed: FailedBackoff,
}

/// Back-off for replacing failed daemon pods, per DaemonSet and node
/// (Kubernetes' `failedPodsBackoff`: 1 s doubling to 15 min), so a node that
/// rejects the pod is not hot-looped.
#[derive(Default)]
pub struct FailedBackoff {
    inner: std::sync::Mutex<HashMap<(Key, String), (u32, Instant)>>,
}

const FAILED_BASE: Duration = Duration::from_secs(1);
const FAILED_CAP: Duration = Duration::from_secs(15 * 60);

impl FailedBackoff {
    /// May a failed pod on `node` be replaced now? If not, how long to wait.
    /// A yes counts as one more failure.
    pub fn allow(&self, key: &Key, node: &str, now: Instant) -> Result<(), Duration> {
        let mut m = self.inner.lock().unwrap();
        let e = m.entry((key.clone(), node.to_string())).or_insert((0, now));
        if now < e.1 {
            return Err(e.1 - now);
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now + crate::controllers::framework::backoff(FAILED_BASE, FAILED_CAP, e.0);
        Ok(())
    }

    /// The node's pod is healthy again: forget its failures.
    pub fn reset(&self, key: &Key, node: &str) {
        self.inner
            .lock()
            .unwrap()
            .remove(&(key.clone(), node.to_string()));
    }

    /// Hold back the replacement of failed pods still in back-off; returns the
    /// soonest time to look again.
    fn hold(
        &self,
        key: &Key,
        p: &mut Plan,
        by_node: &BTreeMap<String, Vec<DaemonPod>>,
        now: Instant,
    ) -> Option<Duration> {
        let mut wait: Option<Duration> = None;
        for (node, list) in by_node {
            let failed: Vec<&DaemonPod> =
                list.iter().filter(|d| d.failed && !d.terminating).collect();
            if failed.is_empty() {
                if list.iter().any(|d| d.active() && d.available) {
                    self.reset(key, node);
                }
                continue;
            }
            if !failed
                .iter()
                .any(|d| p.delete.iter().any(|(_, uid)| *uid == d.uid))
            {
                continue;
            }
            if let Err(left) = self.allow(key, node, now) {
                p.delete
                    .retain(|(_, uid)| !failed.iter().any(|d| d.uid == *uid));
                p.create.retain(|n| n != node);
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
        }
        wait
    }
}

/// What the plan needs of one daemon pod.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonPod {
    pub name: String,
    pub uid: String,
    pub hash: String,
    pub failed: bool,
    pub terminating: bool,
    pub created: i64,
    pub available: bool,
}

impl DaemonPod {
    fn active(&self) -> bool {
        !self.failed && !self.terminating
    }
}

/// What one pass does: nodes to create a pod on, pods to delete (name, uid).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<String>,
    pub delete: Vec<(String, String)>,
}

/// Level-triggered plan from the nodes (name, fit) and the pods per node
/// name. `rolling` is the budget of a RollingUpdate (None: OnDelete); the
/// update step only runs when nothing else is to be done.
pub fn plan(
    nodes: &[(String, Fit)],
    pods: &BTreeMap<String, Vec<DaemonPod>>,
    update_hash: &str,
    rolling: Option<Rolling>,
) -> Plan {
    let surging = rolling.is_some_and(|r| r.max_surge > 0);
    let mut p = Plan::default();
    let known: HashSet<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    let del = |p: &mut Plan, d: &DaemonPod| p.delete.push((d.name.clone(), d.uid.clone()));
    // Pods on nodes that no longer exist (or on none).
    for (node, list) in pods {
        if !known.contains(node.as_str()) {
            for d in list.iter().filter(|d| !d.terminating) {
                del(&mut p, d);
            }
        }
    }
    for (node, f) in nodes {
        let list = pods.get(node).map(Vec::as_slice).unwrap_or_default();
        if f.run || f.keep {
            for d in list.iter().filter(|d| d.failed && !d.terminating) {
                del(&mut p, d);
            }
            let mut running: Vec<&DaemonPod> = list.iter().filter(|d| d.active()).collect();
            if running.is_empty() && f.run {
                p.create.push(node.clone());
            } else if running.len() > 1 {
                // Keep the oldest updated pod, and while surging the oldest
                // old one too; without updated pods, the oldest.
                running.sort_by_key(|d| (d.hash != update_hash, d.created, d.name.clone()));
                let mut kept_old = running[0].hash != update_hash;
                for d in &running[1..] {
                    if surging && !kept_old && d.hash != update_hash {
                        kept_old = true;
                        continue;
                    }
                    del(&mut p, d);
                }
            }
        } else {
            for d in list.iter().filter(|d| !d.terminating) {
                del(&mut p, d);
            }
        }
    }
    let Some(rolling) = rolling else {
        return p;
    };
    if !p.create.is_empty() || !p.delete.is_empty() {
        return p;
    }
    if surging {
        surge(&mut p, nodes, pods, update_hash, rolling.max_surge);
        return p;
    }
    let max_unavailable = rolling.max_unavailable;
    let mut unavailable = 0;
    let mut candidates = Vec::new();
    for (node, f) in nodes.iter().filter(|(_, f)| f.keep) {
        let running = active_on(pods, node);
        match running.as_slice() {
            [] => unavailable += i32::from(f.run),
            [d] if d.hash == update_hash => unavailable += i32::from(!d.available),
            // An old pod that is not available anyway goes at once.
            [d] if !d.available => del(&mut p, d),
            [d] => candidates.push(*d),
            _ => unavailable += 1,
        }
    }
    let allowed = (max_unavailable - unavailable).max(0) as usize;
    for d in candidates.into_iter().take(allowed) {
        del(&mut p, d);
    }
    p
}

/// The active daemon pods on `node`.
fn active_on<'a>(pods: &'a BTreeMap<String, Vec<DaemonPod>>, node: &str) -> Vec<&'a DaemonPod> {
    pods.get(node)
        .into_iter()
        .flatten()
        .filter(|d| d.active())
        .collect()
}

/// The budget of a RollingUpdate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    pub max_unavailable: i32,
    pub max_surge: i32,
}

/// The surge step (Kubernetes' `rollingUpdate` with maxSurge): start a new pod
/// next to an old one on at most `max_surge` nodes at a time, and delete the
/// old pod once the new one is available.
fn surge(
    p: &mut Plan,
    nodes: &[(String, Fit)],
    pods: &BTreeMap<String, Vec<DaemonPod>>,
    update_hash: &str,
    max_surge: i32,
) {
    let mut surging = 0;
    let mut candidates = Vec::new();
    for (node, f) in nodes.iter().filter(|(_, f)| f.keep) {
        let running = active_on(pods, node);
        let new: Vec<_> = running.iter().filter(|d| d.hash == update_hash).collect();
        let old: Vec<_> = running.iter().filter(|d| d.hash != update_hash).collect();
        match (new.as_slice(), old.as_slice()) {
            (_, []) => {}
            ([], [o]) if !o.available => {
                if f.run {
                    p.create.push(node.clone());
                } else {
                    p.delete.push((o.name.clone(), o.uid.clone()));
                }
            }
            ([], [_]) => candidates.push(node.clone()),
            ([n], [o]) if n.available => p.delete.push((o.name.clone(), o.uid.clone())),
            // Surged and waiting, or a mess the next pass cleans up.
            _ => surging += 1,
        }
    }
    let room = (max_surge - surging).max(0) as usize;
    p.create.extend(candidates.into_iter().take(room));
}

impl DaemonSets {
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue>) {
        self.sets
            .on(crate::controllers::framework::enqueue_self(queue));
        self.pods.on(crate::controllers::owners::enqueue_owners(
            queue,
            &self.sets,
            "DaemonSet",
            |o: &DaemonSet| &o.spec.selector,
        ));
        // Any node change may change where every DaemonSet belongs.
        let (q, sets, cache) = (queue.clone(), self.sets.clone(), self.nodes.store.clone());
        self.nodes.on(move |old, new| {
            // A deleted node is reported with itself as `old` and is no
            // longer cached.
            let gone = cache.get(&Key::of(new).obj_ref()).is_none();
            let same = !gone
                && old.is_some_and(|o| {
                    o.metadata.labels == new.metadata.labels
                        && o.spec.as_ref().map(|s| &s.taints)
                            == new.spec.as_ref().map(|s| &s.taints)
                        && terminating(o) == terminating(new)
                });
            if !same {
                for ds in sets.list("") {
                    q.add(Key::of(ds.as_ref()));
                }
            }
        });
        let q = queue.clone();
        self.revisions.on(move |old, new| {
            for k in controller_keys(old, new, "DaemonSet") {
                q.add(k);
            }
        });
    }

    fn pods_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// A daemon pod for `node` from the DaemonSet's template at `hash`.
    fn new_pod(&self, ds: &DaemonSet, ns: &str, node: &str, hash: &str) -> Pod {
        let mut pod = pod_from_template(
            &ds.spec.template,
            ns,
            Some(generate_prefix(&ds.name_any())),
            None,
            controller_ref(ds),
        );
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(REVISION_LABEL.into(), hash.into());
        labels.insert(
            TEMPLATE_GENERATION.into(),
            ds.metadata.generation.unwrap_or(1).to_string(),
        );
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.node_name = Some(node.into());
        spec.tolerations = Some(with_daemon_tolerations(spec.tolerations.as_ref()));
        let affinity = spec.affinity.get_or_insert_with(Affinity::default);
        let na = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![node.into()]),
                }]),
            }],
        });
        pod
    }

    async fn execute(&self, ds: &DaemonSet, key: &Key, p: &Plan, hash: &str) -> Result<()> {
        let creates = p.create.iter().map(|node| async move {
            let pod = self.new_pod(ds, &key.ns, node, hash);
            let made = self
                .pods_api(&key.ns)
                .create(&PostParams::default(), &pod)
                .await?;
            self.expectations.created(key, &made.name_any());
            tracing::debug!(pod = %made.name_any(), node = %node, "created daemon pod");
            Ok::<(), ControllerError>(())
        });
        let known: HashSet<String> = self.nodes.list("").iter().map(|n| n.name_any()).collect();
        let deletes = p.delete.iter().map(|(name, uid)| {
            let known = &known;
            async move {
                self.expectations.deleted(key, uid);
                // A pod whose node is gone has no agent to finish a graceful stop.
                let on_known_node = self
                    .pods
                    .get(&Key::new(&key.ns, name))
                    .and_then(|p| p.spec.as_ref()?.node_name.clone())
                    .is_some_and(|n| known.contains(&n));
                let mut dp = DeleteParams::default().preconditions(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                });
                if !on_known_node {
                    dp = dp.grace_period(0);
                }
                match self.pods_api(&key.ns).delete(name, &dp).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                    Err(e) => Err(ControllerError::from(e)),
                }
            }
        });
        let (c, d) = futures::future::join(
            futures::future::join_all(creates),
            futures::future::join_all(deletes),
        )
        .await;
        for r in c.into_iter().chain(d) {
            r?;
        }
        Ok(())
    }

    async fn write_status(&self, ds: &DaemonSet, status: DaemonSetStatus) -> Result<()> {
        crate::controllers::framework::write_status(&self.client, ds, status).await
    }
}

/// The RollingUpdate budget over `desired` nodes, percentages rounded up:
/// maxSurge (default 0) and maxUnavailable (default 1, at least 1 when there
/// is no surge); None for OnDelete.
pub fn rolling(ds: &DaemonSet, desired: i32) -> Result<Option<Rolling>> {
    let s = ds.spec.update_strategy.as_ref();
    if s.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return Ok(None);
    }
    let ru = s.and_then(|s| s.rolling_update.as_ref());
    let max_surge = match ru.and_then(|r| r.max_surge.as_ref()) {
        None => 0,
        Some(v) => scaled_value(Some(v), "0%", desired, true)?,
    };
    let max_unavailable = match ru.and_then(|r| r.max_unavailable.as_ref()) {
        None => 1,
        Some(v) => scaled_value(Some(v), "0%", desired, true)?,
    };
    Ok(Some(Rolling {
        max_unavailable: if max_surge == 0 {
            max_unavailable.max(1)
        } else {
            max_unavailable
        },
        max_surge,
    }))
}

impl Reconciler for DaemonSets {
    fn name(&self) -> &'static str {
        "daemonset"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(ds) = self.expectations.live(key, &self.sets) else {
            return Ok(Action::await_change());
        };
        let ds = ds.as_ref();
        require_selector(&ds.spec.selector)?;
        let collisions = ds
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let revs = revisions::sync(
            &revisions::Owner {
                client: &self.client,
                ns: &key.ns,
                name: &key.name,
                reference: controller_ref(ds),
                deleting: false,
                selector: &ds.spec.selector,
                template: &ds.spec.template,
                collisions,
            },
            self.revisions.list(&key.ns),
        )
        .await?;
        let hash = revs
            .update
            .labels()
            .get(REVISION_LABEL)
            .cloned()
            .unwrap_or_default();

        let synced = self.expectations.seen_in(key, &self.pods);
        let owned = claim(
            &self.pods_api(&key.ns),
            &controller_ref(ds),
            false,
            &ds.spec.selector,
            self.pods.list(&key.ns),
        )
        .await?;
        let now = Timestamp::now();
        let min_ready = ds.spec.min_ready_seconds.unwrap_or(0);
        let empty = Default::default();
        let spec = ds.spec.template.spec.as_ref().unwrap_or(&empty);
        let mut nodes: Vec<(String, Fit)> = self
            .nodes
            .list("")
            .iter()
            .map(|n| (n.name_any(), fit(spec, n)))
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut by_node: BTreeMap<String, Vec<DaemonPod>> = BTreeMap::new();
        let mut full: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in &owned {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            by_node.entry(node.clone()).or_default().push(DaemonPod {
                name: p.name_any(),
                uid: p.uid().unwrap_or_default(),
                hash: p.labels().get(REVISION_LABEL).cloned().unwrap_or_default(),
                failed: matches!(phase(p), "Failed" | "Succeeded"),
                terminating: terminating(p.as_ref()),
                created: p
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second())
                    .unwrap_or(0),
                available: available(p, min_ready, now),
            });
            full.entry(node).or_default().push(p.clone());
        }
        let desired = nodes.iter().filter(|(_, f)| f.run).count() as i32;
        let rolling = rolling(ds, desired)?;
        let mut failure = None;
        let mut held = None;
        if synced {
            let mut p = plan(&nodes, &by_node, &hash, rolling);
            held = self.failed.hold(key, &mut p, &by_node, Instant::now());
            if p != Plan::default() {
                tracing::debug!(create = ?p.create, delete = ?p.delete, "daemon set plan");
            }
            if let Err(e) = self.execute(ds, key, &p, &hash).await {
                failure = Some(e);
            }
        }

        // Revisions in use: the update one and any a pod still runs.
        let in_use: HashSet<&String> = by_node.values().flatten().map(|d| &d.hash).collect();
        let live: HashSet<String> = revs
            .all
            .iter()
            .filter(|r| {
                r.uid() == revs.update.uid()
                    || r.labels()
                        .get(REVISION_LABEL)
                        .is_some_and(|h| in_use.contains(h))
            })
            .map(|r| r.name_any())
            .collect();
        revisions::trim(
            &self.client,
            &key.ns,
            &revs.all,
            &live,
            ds.spec.revision_history_limit.unwrap_or(10),
        )
        .await?;

        let mut status = DaemonSetStatus {
            observed_generation: ds.metadata.generation,
            collision_count: (revs.collisions > 0).then_some(revs.collisions),
            conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
            ..Default::default()
        };
        let (mut updated, mut avail, mut soonest) = (0, 0, None::<i64>);
        for (node, f) in &nodes {
            let mut running: Vec<&Arc<Pod>> = full
                .get(node)
                .into_iter()
                .flatten()
                .filter(|p| crate::controllers::podutil::active(p))
                .collect();
            running.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let scheduled = !running.is_empty();
            if f.run {
                status.desired_number_scheduled += 1;
                let Some(p) = running.first() else {
                    continue;
                };
                status.current_number_scheduled += 1;
                if ready(p) {
                    status.number_ready += 1;
                }
                if available(p, min_ready, now) {
                    avail += 1;
                }
                if p.labels().get(REVISION_LABEL) == Some(&hash) {
                    updated += 1;
                }
                if let Some(s) = until_available(p, min_ready, now) {
                    soonest = Some(soonest.map_or(s, |x| x.min(s)));
                }
            } else if scheduled {
                status.number_misscheduled += 1;
            }
        }
        status.updated_number_scheduled = Some(updated);
        status.number_available = Some(avail);
        status.number_unavailable = Some((status.desired_number_scheduled - avail).max(0));
        self.write_status(ds, status).await?;
        if let Some(e) = failure {
            return Err(e);
        }
        if !synced {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let soonest = soonest.map(|s| Duration::from_secs(s as u64));
        Ok(Action::requeue_opt(match (soonest, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }))
    }
}

/// Start the DaemonSet controller (2 workers).
pub fn start(ctx: &mut crate::controllers::registration::Ctx<'_>) {
    let pods = ctx.informer::<Pod>();
    let nodes = ctx.informer::<Node>();
    let revisions = ctx.informer::<ControllerRevision>();
    let daemons = ctx.informer::<DaemonSet>();
    let dsc = Arc::new(DaemonSets {
        client: ctx.client.clone(),
        sets: daemons.clone(),
        nodes: nodes.clone(),
        pods: pods.clone(),
        revisions: revisions.clone(),
        expectations: Expectations::default(),
        failed: Default::default(),
    });
    let q = Queue::new();
    dsc.watch(&q);
    ctx.run(
        Controller::new(dsc, q)
            .workers(2)
            .after_sync(vec![
                (&pods).into(),
                (&nodes).into(),
                (&revisions).into(),
                (&daemons).into(),
            ])
            .resync(all_keys(&daemons)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: Fit = Fit {
        run: true,
        keep: true,
    };
    const KEEP: Fit = Fit {
        run: false,
        keep: true,
    };
    const NO: Fit = Fit {
        run: false,
        keep: false,
    };

    fn pod(name: &str, hash: &str, available: bool) -> DaemonPod {
        DaemonPod {
            name: name.into(),
            uid: format!("u-{name}"),
            hash: hash.into(),
            failed: false,
            terminating: false,
            created: name.len() as i64,
            available,
        }
    }

    fn nodes(fits: &[(&str, Fit)]) -> Vec<(String, Fit)> {
        fits.iter().map(|(n, f)| (n.to_string(), *f)).collect()
    }

    fn on(list: &[(&str, Vec<DaemonPod>)]) -> BTreeMap<String, Vec<DaemonPod>> {
        list.iter()
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect()
    }

    fn deleted(p: &Plan) -> Vec<&str> {
        p.delete.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn one_pod_per_fitting_node() {
        let n = nodes(&[("a", RUN), ("b", RUN), ("c", NO), ("d", KEEP)]);
        let pods = on(&[
            ("b", vec![pod("b1", "h", true), pod("b22", "h", true)]),
            ("c", vec![pod("c1", "h", true)]),
            ("d", vec![pod("d1", "h", true)]),
            ("gone", vec![pod("g1", "h", true)]),
        ]);
        let p = plan(&n, &pods, "h", None);
        assert_eq!(p.create, vec!["a".to_string()]);
        // Duplicate (the newer), misplaced, and on a deleted node.
        let mut d = deleted(&p);
        d.sort();
        assert_eq!(d, vec!["b22", "c1", "g1"]);
    }

    #[test]
    fn failed_pods_are_replaced_and_terminating_ones_ignored() {
        let n = nodes(&[("a", RUN), ("b", RUN)]);
        let mut failed = pod("a1", "h", false);
        failed.failed = true;
        let mut going = pod("b1", "h", true);
        going.terminating = true;
        let p = plan(
            &n,
            &on(&[("a", vec![failed]), ("b", vec![going])]),
            "h",
            None,
        );
        assert_eq!(p.create, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(deleted(&p), vec!["a1"]);
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let n = nodes(&[("a", RUN), ("b", RUN), ("c", RUN)]);
        let old = on(&[
            ("a", vec![pod("a1", "old", true)]),
            ("b", vec![pod("b1", "old", true)]),
            ("c", vec![pod("c1", "old", true)]),
        ]);
        assert_eq!(deleted(&plan(&n, &old, "new", Some(mu(1)))), vec!["a1"]);
        assert_eq!(
            deleted(&plan(&n, &old, "new", Some(mu(2)))),
            vec!["a1", "b1"]
        );
        assert!(plan(&n, &old, "new", None).delete.is_empty(), "OnDelete");
        // One new pod not yet available uses the budget.
        let mid = on(&[
            ("a", vec![pod("a2", "new", false)]),
            ("b", vec![pod("b1", "old", true)]),
            ("c", vec![pod("c1", "old", false)]),
        ]);
        // c1 is unavailable anyway, so it goes; b1 waits.
        assert_eq!(deleted(&plan(&n, &mid, "new", Some(mu(1)))), vec!["c1"]);
        let done = on(&[
            ("a", vec![pod("a2", "new", true)]),
            ("b", vec![pod("b2", "new", true)]),
            ("c", vec![pod("c2", "new", true)]),
        ]);
        assert_eq!(plan(&n, &done, "new", Some(mu(1))), Plan::default());
    }

    fn mu(n: i32) -> Rolling {
        Rolling {
            max_unavailable: n,
            max_surge: 0,
        }
    }

    #[test]
    fn surge_starts_new_pods_before_old_ones_go() {
        let n = nodes(&[("a", RUN), ("b", RUN), ("c", RUN)]);
        let budget = Some(Rolling {
            max_unavailable: 0,
            max_surge: 1,
        });
        let old = on(&[
            ("a", vec![pod("a1", "old", true)]),
            ("b", vec![pod("b1", "old", true)]),
            ("c", vec![pod("c1", "old", true)]),
        ]);
        let p = plan(&n, &old, "new", budget);
        assert_eq!((p.create, p.delete), (vec!["a".to_string()], vec![]));
        // The new pod on a is not available yet: nothing more.
        let mut waiting = old.clone();
        waiting.get_mut("a").unwrap().push(pod("a22", "new", false));
        assert_eq!(plan(&n, &waiting, "new", budget), Plan::default());
        // Available: the old pod on a goes.
        let mut ready = old.clone();
        ready.get_mut("a").unwrap().push(pod("a22", "new", true));
        assert_eq!(deleted(&plan(&n, &ready, "new", budget)), vec!["a1"]);
    }

    #[test]
    fn failed_pods_are_replaced_with_back_off() {
        let b = FailedBackoff::default();
        let k = Key::new("ns", "ds");
        let t = Instant::now();
        assert!(b.allow(&k, "a", t).is_ok());
        assert_eq!(b.allow(&k, "a", t), Err(Duration::from_secs(1)));
        assert!(b.allow(&k, "b", t).is_ok(), "per node");
        assert!(b.allow(&k, "a", t + Duration::from_secs(1)).is_ok());
        assert_eq!(
            b.allow(&k, "a", t + Duration::from_secs(1)),
            Err(Duration::from_secs(2)),
            "doubles"
        );
        b.reset(&k, "a");
        assert!(b.allow(&k, "a", t + Duration::from_secs(1)).is_ok());

        // In a plan: the failed pod stays and nothing is created until the
        // back-off passes.
        let n = nodes(&[("a", RUN)]);
        let mut failed = pod("a1", "h", false);
        failed.failed = true;
        let pods = on(&[("a", vec![failed])]);
        let b = FailedBackoff::default();
        let mut p = plan(&n, &pods, "h", None);
        assert_eq!(b.hold(&k, &mut p, &pods, t), None);
        assert_eq!((p.create.len(), p.delete.len()), (1, 1));
        let mut p = plan(&n, &pods, "h", None);
        assert_eq!(b.hold(&k, &mut p, &pods, t), Some(Duration::from_secs(1)));
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn budget_defaults_and_percentages() {
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {}}
        }))
        .unwrap();
        assert_eq!(rolling(&ds, 10).unwrap(), Some(mu(1)));
        let pct: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}}}
        }))
        .unwrap();
        assert_eq!(rolling(&pct, 10).unwrap(), Some(mu(3)));
        assert_eq!(rolling(&pct, 0).unwrap(), Some(mu(1)));
        let surge: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {},
                "updateStrategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "10%"}}}
        }))
        .unwrap();
        assert_eq!(
            rolling(&surge, 15).unwrap(),
            Some(Rolling {
                max_unavailable: 0,
                max_surge: 2
            })
        );
    }
}
