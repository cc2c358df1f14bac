//! Defaulting, as the Kubernetes API server applies it before storing an object
//! (k8s-openapi applies none). Only fields a user of kubectl would see defaulted.

use serde_json::{Map, Value, json};

fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let m = v.as_object_mut().expect("object");
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("object")
}

fn set(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), v);
    }
}

/// Apply the defaults of `kind` (group-qualified by `api_version`) in place.
pub fn apply(api_version: &str, kind: &str, v: &mut Value) {
    if !v.is_object() {
        return;
    }
    match (api_version, kind) {
        ("v1", "Pod") => {
            pod_spec(obj(v, "spec"));
            requests_from_limits(obj(v, "spec"));
            default_tolerations(obj(v, "spec"));
            let status = obj(v, "status");
            set(status, "phase", json!("Pending"));
            let qos = qos_class(v.get("spec"));
            set(obj(v, "status"), "qosClass", json!(qos));
        }
        ("v1", "Namespace") => {
            set(obj(v, "spec"), "finalizers", json!(["kubernetes"]));
            set(obj(v, "status"), "phase", json!("Active"));
        }
        ("v1", "Service") => {
            service(obj(v, "spec"));
            // Kubernetes returns every Service with this much status.
            set(obj(v, "status"), "loadBalancer", json!({}));
        }
        ("v1", "Secret") => {
            let m = v.as_object_mut().expect("object");
            set(m, "type", json!("Opaque"));
            // stringData is write-only: it lands in data, base64-encoded.
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                use base64::Engine;
                let data = m.entry("data").or_insert_with(|| json!({}));
                if let Some(d) = data.as_object_mut() {
                    for (k, val) in sd {
                        let raw = val.as_str().unwrap_or_default();
                        let enc = base64::engine::general_purpose::STANDARD.encode(raw);
                        d.insert(k, json!(enc));
                    }
                }
            }
        }
        ("v1", "PersistentVolumeClaim") => {
            set(obj(v, "spec"), "volumeMode", json!("Filesystem"));
            set(obj(v, "status"), "phase", json!("Pending"));
        }
        ("v1", "PersistentVolume") => {
            let spec = obj(v, "spec");
            set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set(spec, "volumeMode", json!("Filesystem"));
            set(obj(v, "status"), "phase", json!("Pending"));
        }
        ("apps/v1", "Deployment") => {
            let spec = obj(v, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "revisionHistoryLimit", json!(10));
            set(spec, "progressDeadlineSeconds", json!(600));
            let strategy = spec
                .entry("strategy")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(s) = strategy {
                set(s, "type", json!("RollingUpdate"));
                if s.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = s
                        .entry("rollingUpdate")
                        .or_insert_with(|| json!({}))
                        .as_object_mut();
                    if let Some(ru) = ru {
                        set(ru, "maxUnavailable", json!("25%"));
                        set(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            template(spec);
        }
        ("apps/v1", "ReplicaSet") => {
            let spec = obj(v, "spec");
            set(spec, "replicas", json!(1));
            template(spec);
        }
        ("apps/v1", "StatefulSet") => {
            let spec = obj(v, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "podManagementPolicy", json!("OrderedReady"));
            set(spec, "revisionHistoryLimit", json!(10));
            set(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            template(spec);
        }
        ("apps/v1", "DaemonSet") => {
            let spec = obj(v, "spec");
            set(spec, "revisionHistoryLimit", json!(10));
            set(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            template(spec);
        }
        ("batch/v1", "Job") => {
            let spec = obj(v, "spec");
            job_spec(spec);
        }
        ("batch/v1", "CronJob") => {
            let spec = obj(v, "spec");
            set(spec, "concurrencyPolicy", json!("Allow"));
            set(spec, "suspend", json!(false));
            set(spec, "successfulJobsHistoryLimit", json!(3));
            set(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(jt) = spec.get_mut("jobTemplate").and_then(Value::as_object_mut) {
                let js = jt.entry("spec").or_insert_with(|| json!({}));
                if let Some(js) = js.as_object_mut() {
                    job_spec(js);
                }
            }
        }
        _ => {}
    }
}

/// A new Job without `manualSelector` selects its own pods by its uid, and its
/// template carries the labels that selector matches (as the API server
/// generates them).
pub fn job_selector(v: &mut Value) {
    let uid = v.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = v.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let spec = obj(v, "spec");
    if spec.get("manualSelector") == Some(&json!(true))
        || spec.get("selector").is_some_and(|s| !s.is_null())
    {
        return;
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    let meta = obj(template, "metadata");
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    let Some(labels) = labels.as_object_mut() else {
        return;
    };
    for (k, val) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels.insert(k.into(), val.clone());
    }
}

/// How long a pod stays on a node that is not ready or unreachable before it
/// is evicted, unless it says otherwise (Kubernetes' DefaultTolerationSeconds
/// admission uses 300 s; Skiff's edge and scale-to-zero users want pods back
/// sooner).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 30;

fn default_tolerations(spec: &mut Map<String, Value>) {
    let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tols.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let has = list.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k == key || k.is_empty()) && (e.is_empty() || e == "NoExecute")
        });
        if !has {
            list.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}),
            );
        }
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    set(spec, "parallelism", json!(1));
    set(spec, "backoffLimit", json!(6));
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    if spec.get("completions").is_none_or(Value::is_null) {
        spec.insert("completions".into(), json!(1));
    }
    template(spec);
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut) {
        let ps = t.entry("spec").or_insert_with(|| json!({}));
        if let Some(ps) = ps.as_object_mut() {
            pod_spec(ps);
        }
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "securityContext", json!({}));
    set(spec, "enableServiceLinks", json!(true));
    set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set(spec, "priority", json!(0));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                container(c);
                if host_network {
                    host_ports_from_container_ports(c);
                }
            }
        }
    }
}

/// On the node's network a container's port is the node's: `hostPort`
/// defaults to `containerPort` (Kubernetes' `SetDefaults_PodSpec`).
fn host_ports_from_container_ports(c: &mut Map<String, Value>) {
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            let unset = p.get("hostPort").is_none_or(|v| v == &json!(0));
            if let (true, Some(port)) = (unset, p.get("containerPort").cloned()) {
                p.insert("hostPort".into(), port);
            }
        }
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let tag = image.rsplit('/').next().unwrap_or(image);
    let latest = !image.contains('@') && (!tag.contains(':') || tag.ends_with(":latest"));
    set(
        c,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    set(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set(p, "protocol", json!("TCP"));
        }
    }
}

/// A pod's container with a limit but no request for a resource requests its
/// limit (Kubernetes' `SetDefaults_Pod`; pod templates are left as written).
fn requests_from_limits(spec: &mut Map<String, Value>) {
    for list in ["containers", "initContainers"] {
        let Some(Value::Array(cs)) = spec.get_mut(list) else {
            continue;
        };
        for c in cs.iter_mut() {
            let Some(Value::Object(limits)) = c.pointer("/resources/limits").cloned() else {
                continue;
            };
            let res = obj(c, "resources");
            let requests = res.entry("requests").or_insert_with(|| json!({}));
            if let Some(r) = requests.as_object_mut() {
                for (k, v) in limits {
                    r.entry(k).or_insert(v);
                }
            }
        }
    }
}

fn service(spec: &mut Map<String, Value>) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    set(spec, "ipFamilies", json!(["IPv4"]));
    set(spec, "ipFamilyPolicy", json!("SingleStack"));
    set(spec, "internalTrafficPolicy", json!("Cluster"));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set(p, "targetPort", port);
            }
        }
    }
}

/// The pod's QoS class from its containers' requests and limits.
/// The QoS class by Kubernetes' rules (init containers included, quantities
/// compared by value), shared with the node agent.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let list = |k: &str| {
        spec.and_then(|s| s.get(k))
            .and_then(Value::as_array)
            .map(|a| a.as_slice())
            .unwrap_or_default()
    };
    skiff_common::qos::qos_class(
        list("initContainers")
            .iter()
            .chain(list("containers"))
            .map(|c| {
                let q = |kind: &str, r: &str| c.get("resources")?.get(kind)?.get(r)?.as_str();
                skiff_common::qos::Resources {
                    cpu_request: q("requests", "cpu"),
                    cpu_limit: q("limits", "cpu"),
                    memory_request: q("requests", "memory"),
                    memory_limit: q("limits", "memory"),
                }
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x/y"},
            {"name": "b", "image": "x/y:v1", "ports": [{"containerPort": 80}]}
        ]}});
        apply("v1", "Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][1]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
        let mut host = json!({"spec": {"hostNetwork": true, "containers": [
            {"name": "a", "image": "x/y", "ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 81}]}
        ]}});
        apply("v1", "Pod", &mut host);
        assert_eq!(host["spec"]["containers"][0]["ports"][0]["hostPort"], 80);
        assert_eq!(
            pod["spec"]["containers"][1]["ports"][0].get("hostPort"),
            None
        );
    }

    #[test]
    fn requests_default_to_limits_in_pods_only() {
        let c = json!({"name": "a", "image": "i:1", "resources": {
            "limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}});
        let mut pod = json!({"spec": {"containers": [c.clone()]}});
        apply("v1", "Pod", &mut pod);
        let r = &pod["spec"]["containers"][0]["resources"]["requests"];
        assert_eq!(
            (r["cpu"].as_str(), r["memory"].as_str()),
            (Some("100m"), Some("64Mi"))
        );
        let mut only_limits = json!({"spec": {"containers": [{"name": "a", "image": "i:1",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        apply("v1", "Pod", &mut only_limits);
        assert_eq!(only_limits["status"]["qosClass"], "Guaranteed");
        let mut d = json!({"spec": {"template": {"spec": {"containers": [c]}}}});
        apply("apps/v1", "Deployment", &mut d);
        assert!(
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
                .get("memory")
                .is_none()
        );
    }

    #[test]
    fn deployment_and_service_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "i:1"}]}}}});
        apply("apps/v1", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply("v1", "Service", &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["type"], "ClusterIP");
    }
}
