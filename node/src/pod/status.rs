//! A pod's observed state and the `PodStatus` the agent writes from it.
//!
//! **The status is computed from the containers' states every time, never
//! patched piecemeal, so it is always self-consistent.**

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

/// RFC 3339 "now", as the API stores times.
pub fn now() -> String {
    rfc3339(&Time(jiff::Timestamp::now()))
}

/// A time as the API writes it (whole seconds, UTC).
pub fn rfc3339(t: &Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub use skiff_runtimes::EndReason;

/// Why a container is waiting, as Kubernetes names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    ContainerCreating,
    PodInitializing,
    CrashLoopBackOff,
    ErrImagePull,
    ImagePullBackOff,
    ErrImageNeverPull,
    CreateContainerConfigError,
    CreateContainerError,
    RunContainerError,
}

impl Waiting {
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting::ContainerCreating => "ContainerCreating",
            Waiting::PodInitializing => "PodInitializing",
            Waiting::CrashLoopBackOff => "CrashLoopBackOff",
            Waiting::ErrImagePull => "ErrImagePull",
            Waiting::ImagePullBackOff => "ImagePullBackOff",
            Waiting::ErrImageNeverPull => "ErrImageNeverPull",
            Waiting::CreateContainerConfigError => "CreateContainerConfigError",
            Waiting::CreateContainerError => "CreateContainerError",
            Waiting::RunContainerError => "RunContainerError",
        }
    }

    /// The reason shown while a failed start waits for its retry.
    pub fn backing_off(self) -> Waiting {
        match self {
            Waiting::ErrImagePull => Waiting::ImagePullBackOff,
            other => other,
        }
    }
}

impl From<&skiff_runtimes::RuntimeError> for Waiting {
    fn from(e: &skiff_runtimes::RuntimeError) -> Waiting {
        use skiff_runtimes::RuntimeError as E;
        match e {
            E::Config(_) => Waiting::CreateContainerConfigError,
            E::Run(_) => Waiting::RunContainerError,
            E::NotMine(_) | E::Create(_) | E::Unsupported(_) => Waiting::CreateContainerError,
        }
    }
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run of a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit_code: i32,
    pub reason: EndReason,
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
}

/// One container's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: Waiting,
        message: Option<String>,
    },
    Running {
        started_at: String,
        /// Passed its startup probe (or has none).
        started: bool,
        /// Passes its readiness probe (or has none) after starting.
        ready: bool,
    },
    Terminated(Ended),
}

/// One container as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last: Option<Ended>,
    pub restarts: u32,
    /// Terminated and not going to run again.
    pub done: bool,
    /// A sidecar: an init container with `restartPolicy: Always`, which
    /// keeps running beside the containers once it has started.
    pub sidecar: bool,
}

impl ContainerState {
    pub fn new(name: &str, image: &str) -> ContainerState {
        ContainerState {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            state: State::Waiting {
                reason: Waiting::ContainerCreating,
                message: None,
            },
            last: None,
            restarts: 0,
            done: false,
            sidecar: false,
        }
    }

    fn ready(&self) -> bool {
        matches!(self.state, State::Running { ready: true, .. })
    }

    /// An init container that did its part: ran to success, or, for a
    /// sidecar, started.
    fn completed(&self) -> bool {
        if self.sidecar {
            return matches!(self.state, State::Running { started: true, .. });
        }
        matches!(&self.state, State::Terminated(e) if e.exit_code == 0)
    }

    fn json(&self, pod_uid: &str, init: bool) -> Value {
        let ended = |e: &Ended| {
            let mut t = json!({"exitCode": e.exit_code, "reason": e.reason.as_str(),
                "startedAt": e.started_at, "finishedAt": e.finished_at,
                "containerID": format!("wasm://{pod_uid}/{}", self.name)});
            if let Some(m) = &e.message {
                t["message"] = json!(m);
            }
            json!({"terminated": t})
        };
        let state = match &self.state {
            State::Waiting { reason, message } => {
                let mut w = json!({"reason": reason.as_str()});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            State::Running { started_at, .. } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(e) => ended(e),
        };
        let mut c = json!({
            "name": self.name, "image": self.image, "imageID": self.image_id,
            "ready": if init && !self.sidecar { self.completed() } else { self.ready() },
            "restartCount": self.restarts,
            "started": matches!(self.state, State::Running { started: true, .. }),
            "state": state,
            "lastState": self.last.as_ref().map(ended).unwrap_or_else(|| json!({})),
        });
        if !matches!(self.state, State::Waiting { .. }) || self.last.is_some() {
            c["containerID"] = json!(format!("wasm://{pod_uid}/{}", self.name));
        }
        c
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub uid: String,
    pub host_ip: String,
    pub pod_ip: Option<String>,
    pub start_time: String,
    pub qos: &'static str,
    /// `spec.initContainers`, run one by one before `containers`.
    pub init_containers: Vec<ContainerState>,
    pub containers: Vec<ContainerState>,
    /// The init containers all did their part once (stays true when a
    /// sidecar restarts later, as the kubelet keeps `Initialized`).
    pub init_done: bool,
    /// Set when the pod cannot start at all (sandbox failure).
    pub sandbox_error: Option<(String, String)>,
    /// Set when the node evicted the pod (`Failed`, reason `Evicted`): the
    /// message, and whether it ran (a `DisruptionTarget` condition) or was
    /// turned away at admission.
    pub evicted: Option<(String, bool)>,
}

impl PodView {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub fn phase(&self) -> &'static str {
        if self.evicted.is_some() {
            return "Failed";
        }
        if self
            .init_containers
            .iter()
            .any(|c| c.done && !c.completed())
        {
            return "Failed";
        }
        let cs = &self.containers;
        if !cs.is_empty() && cs.iter().all(|c| c.done) {
            let ok = cs
                .iter()
                .all(|c| matches!(&c.state, State::Terminated(e) if e.exit_code == 0));
            return if ok { "Succeeded" } else { "Failed" };
        }
        let started = cs
            .iter()
            .all(|c| !matches!(c.state, State::Waiting { .. }) || c.last.is_some() || c.done);
        if self.pod_ip.is_some() && started {
            "Running"
        } else {
            "Pending"
        }
    }

    /// Whether the pod has finished for good (Succeeded or Failed).
    pub fn finished(&self) -> bool {
        matches!(self.phase(), "Succeeded" | "Failed")
    }

    /// Init container `i` did its part (ran to success; a sidecar started).
    pub fn init_completed(&self, i: usize) -> bool {
        self.init_containers
            .get(i)
            .is_some_and(ContainerState::completed)
    }

    /// Every init container did its part (ran to success; sidecars started).
    pub fn initialized(&self) -> bool {
        self.init_done || self.init_containers.iter().all(ContainerState::completed)
    }

    /// The pod's `Ready` condition: it has containers, and they and its
    /// sidecars are all ready.
    pub fn ready(&self) -> bool {
        let sidecars = self.init_containers.iter().filter(|c| c.sidecar);
        !self.containers.is_empty()
            && self
                .containers
                .iter()
                .chain(sidecars)
                .all(ContainerState::ready)
    }

    /// The `status` object.
    pub fn status(&self, transitions: &mut Transitions) -> Value {
        let phase = self.phase();
        let sandbox = self.pod_ip.is_some();
        let sidecars = self.init_containers.iter().filter(|c| c.sidecar);
        let ready = self.ready();
        let unready: Vec<&str> = sidecars
            .chain(&self.containers)
            .filter(|c| !c.ready())
            .map(|c| c.name.as_str())
            .collect();
        let mut cond = |ty: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
            let status = if ok { "True" } else { "False" };
            let mut c = json!({"type": ty, "status": status,
                "lastTransitionTime": transitions.at(ty, status), "lastProbeTime": Value::Null});
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            if let Some(m) = message {
                c["message"] = json!(m);
            }
            c
        };
        let done = matches!(phase, "Succeeded" | "Failed");
        let not_ready_msg = (!unready.is_empty())
            .then(|| format!("containers with unready status: [{}]", unready.join(" ")));
        let not_ready_reason = if done {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        };
        let initialized = self.initialized();
        let pending_init: Vec<&str> = self
            .init_containers
            .iter()
            .filter(|c| !c.completed() && !self.init_done)
            .map(|c| c.name.as_str())
            .collect();
        let mut conditions = vec![
            cond("PodReadyToStartContainers", sandbox && !done, None, None),
            cond(
                "Initialized",
                initialized,
                (!initialized).then_some("ContainersNotInitialized"),
                (!initialized).then(|| {
                    format!(
                        "containers with incomplete status: [{}]",
                        pending_init.join(" ")
                    )
                }),
            ),
            cond(
                "Ready",
                ready,
                (!ready).then_some(not_ready_reason),
                not_ready_msg.clone(),
            ),
            cond(
                "ContainersReady",
                ready,
                (!ready).then_some(not_ready_reason),
                not_ready_msg,
            ),
            cond("PodScheduled", true, None, None),
        ];
        if let Some((message, true)) = &self.evicted {
            conditions.push(cond(
                "DisruptionTarget",
                true,
                Some("TerminationByKubelet"),
                Some(message.clone()),
            ));
        }
        let mut s = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "startTime": self.start_time,
            "qosClass": self.qos,
            "containerStatuses": self.containers.iter().map(|c| c.json(&self.uid, false)).collect::<Vec<_>>(),
        });
        if !self.init_containers.is_empty() {
            s["initContainerStatuses"] = self
                .init_containers
                .iter()
                .map(|c| c.json(&self.uid, true))
                .collect();
        }
        if let Some(ip) = &self.pod_ip {
            s["podIP"] = json!(ip);
            s["podIPs"] = json!([{"ip": ip}]);
        }
        if let Some((reason, message)) = &self.sandbox_error {
            s["reason"] = json!(reason);
            s["message"] = json!(message);
        }
        if let Some((message, _)) = &self.evicted {
            s["reason"] = json!("Evicted");
            s["message"] = json!(message);
        }
        s
    }
}

/// When each condition last changed, so transitions keep their time.
#[derive(Debug, Default)]
pub struct Transitions(std::collections::HashMap<String, (String, String)>);

impl Transitions {
    fn at(&mut self, ty: &str, status: &str) -> String {
        let e = self
            .0
            .entry(ty.to_string())
            .or_insert_with(|| (status.to_string(), now()));
        if e.0 != status {
            *e = (status.to_string(), now());
        }
        e.1.clone()
    }
}

/// The QoS class of a pod spec (`skiff_common::qos`: Kubernetes' rules over
/// all containers, init containers included).
pub fn qos_class(spec: &PodSpec) -> &'static str {
    skiff_common::qos::qos_class(
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(resources),
    )
}

/// A container's CPU and memory requests and limits.
pub fn resources(c: &Container) -> skiff_common::qos::Resources<'_> {
    use super::resource;
    skiff_common::qos::Resources {
        cpu_request: resource(c, "requests", "cpu"),
        cpu_limit: resource(c, "limits", "cpu"),
        memory_request: resource(c, "requests", "memory"),
        memory_limit: resource(c, "limits", "memory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(states: Vec<(State, bool)>) -> PodView {
        PodView {
            uid: "u".into(),
            host_ip: "127.0.0.1".into(),
            pod_ip: Some("10.88.0.2".into()),
            start_time: now(),
            qos: "BestEffort",
            init_containers: Vec::new(),
            init_done: false,
            containers: states
                .into_iter()
                .map(|(state, done)| ContainerState {
                    state,
                    done,
                    ..ContainerState::new("c", "i")
                })
                .collect(),
            sandbox_error: None,
            evicted: None,
        }
    }

    fn ended(code: i32) -> State {
        State::Terminated(Ended {
            exit_code: code,
            reason: if code == 0 {
                EndReason::Completed
            } else {
                EndReason::Error
            },
            message: None,
            started_at: now(),
            finished_at: now(),
        })
    }

    #[test]
    fn phase_table() {
        let running = State::Running {
            started_at: now(),
            started: true,
            ready: true,
        };
        let waiting = State::Waiting {
            reason: Waiting::ContainerCreating,
            message: None,
        };
        let cases = vec![
            (vec![(waiting.clone(), false)], "Pending"),
            (vec![(running.clone(), false)], "Running"),
            (vec![(ended(0), true)], "Succeeded"),
            (vec![(ended(1), true)], "Failed"),
            (vec![(ended(0), true), (ended(2), true)], "Failed"),
            (vec![(ended(1), false)], "Running"),
            (vec![(running, false), (ended(0), true)], "Running"),
        ];
        for (states, want) in cases {
            assert_eq!(view(states.clone()).phase(), want, "{states:?}");
        }
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let running = State::Running {
            started_at: now(),
            started: true,
            ready: true,
        };
        let waiting = State::Waiting {
            reason: Waiting::PodInitializing,
            message: None,
        };
        let mut v = view(vec![(waiting, false)]);
        let mut init = ContainerState::new("setup", "i");
        init.state = running;
        v.init_containers = vec![init];
        let s = v.status(&mut Transitions::default());
        assert_eq!(s["phase"], "Pending");
        let cond = |s: &Value, t: &str| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()["status"]
                .clone()
        };
        assert_eq!(cond(&s, "Initialized"), "False");
        assert_eq!(s["initContainerStatuses"][0]["name"], "setup");
        assert_eq!(s["initContainerStatuses"][0]["ready"], false);
        v.init_containers[0].state = ended(0);
        v.init_containers[0].done = true;
        let s = v.status(&mut Transitions::default());
        assert_eq!(cond(&s, "Initialized"), "True");
        assert_eq!(s["initContainerStatuses"][0]["ready"], true);
        v.init_containers[0].state = ended(1);
        assert_eq!(v.phase(), "Failed");
        assert!(v.finished());
    }

    #[test]
    fn sidecars_count_for_ready_and_initialized() {
        let running = |ready| State::Running {
            started_at: now(),
            started: true,
            ready,
        };
        let mut v = view(vec![(running(true), false)]);
        let mut helper = ContainerState::new("helper", "i");
        helper.sidecar = true;
        helper.state = running(false);
        v.init_containers = vec![helper];
        assert!(v.init_completed(0), "a started sidecar lets init go on");
        assert!(v.initialized());
        let s = v.status(&mut Transitions::default());
        assert_eq!(s["conditions"][2]["type"], "Ready");
        assert_eq!(s["conditions"][2]["status"], "False", "an unready sidecar");
        assert_eq!(s["initContainerStatuses"][0]["ready"], false);
        v.init_containers[0].state = running(true);
        let s = v.status(&mut Transitions::default());
        assert_eq!(s["conditions"][2]["status"], "True");
        // A restarting sidecar does not undo Initialized once it was reached.
        v.init_done = true;
        v.init_containers[0].state = State::Waiting {
            reason: Waiting::CrashLoopBackOff,
            message: None,
        };
        assert!(v.initialized());
        assert_eq!(v.phase(), "Running");
    }

    #[test]
    fn qos_table() {
        let cases = [
            (json!({"containers": [{}]}), "BestEffort"),
            (
                json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}),
                "Guaranteed",
            ),
            (
                json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]}),
                "Burstable",
            ),
            (
                json!({"containers": [{"resources": {"requests": {"cpu": "1000m", "memory": "1Gi"},
                    "limits": {"cpu": "1", "memory": "1024Mi"}}}]}),
                "Guaranteed",
            ),
            (
                json!({"containers": [{"resources": {"requests": {"cpu": "500m"},
                    "limits": {"cpu": "1", "memory": "1Gi"}}}]}),
                "Burstable",
            ),
            (
                json!({"containers": [{"resources": {"limits": {"cpu": "1"}}}]}),
                "Burstable",
            ),
            (
                json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}, {}]}),
                "Burstable",
            ),
            (
                json!({"initContainers": [{"resources": {"requests": {"memory": "1Mi"}}}],
                    "containers": [{}]}),
                "Burstable",
            ),
            (
                json!({"containers": [{"resources": {"requests": {"cpu": "0"}}}]}),
                "BestEffort",
            ),
            (
                json!({"containers": [{"resources": {"requests": {"ephemeral-storage": "1Gi"}}}]}),
                "BestEffort",
            ),
        ];
        for (spec, want) in cases {
            let typed: PodSpec = serde_json::from_value(spec.clone()).expect("a pod spec");
            assert_eq!(qos_class(&typed), want, "{spec}");
        }
    }
}
