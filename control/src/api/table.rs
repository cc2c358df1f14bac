//! Server-side tables for `kubectl get`: the columns Kubernetes prints per kind.

use serde_json::{Value, json};

use crate::model::ResourceType;

/// A column: name, type, priority (1 = only with `-o wide`), and how to get the cell.
struct Col {
    name: &'static str,
    ty: &'static str,
    priority: u8,
    cell: fn(&Value) -> Value,
}

const fn col(name: &'static str, cell: fn(&Value) -> Value) -> Col {
    Col {
        name,
        ty: "string",
        priority: 0,
        cell,
    }
}

const fn wide(name: &'static str, cell: fn(&Value) -> Value) -> Col {
    Col {
        name,
        ty: "string",
        priority: 1,
        cell,
    }
}

const fn int(name: &'static str, cell: fn(&Value) -> Value) -> Col {
    Col {
        name,
        ty: "integer",
        priority: 0,
        cell,
    }
}

fn s(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(x) => x.to_string(),
    }
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> Vec<&'a Value> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn or_none(s: String) -> Value {
    if s.is_empty() {
        json!("<none>")
    } else {
        json!(s)
    }
}

fn name(v: &Value) -> Value {
    json!(s(v, "/metadata/name"))
}

fn age(v: &Value) -> Value {
    json!(age_of(&s(v, "/metadata/creationTimestamp")))
}

/// Kubernetes' short human duration ("45s", "3m12s", "5h", "2d3h", "400d").
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{mins}m")
        } else {
            format!("{mins}m{s}s")
        };
    }
    if mins < 180 {
        return format!("{mins}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = mins % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if days < 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    format!("{}y", days / 365)
}

fn age_of(ts: &str) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

fn containers_of(v: &Value, ptr: &str) -> (Value, Value) {
    let cs = arr(v, ptr);
    let names: Vec<String> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<String> = cs.iter().map(|c| s(c, "/image")).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

fn selector_string(v: &Value, ptr: &str) -> Value {
    let Some(sel) = v.pointer(ptr) else {
        return json!("<none>");
    };
    let mut parts = Vec::new();
    if let Some(Value::Object(m)) = sel.get("matchLabels") {
        for (k, val) in m {
            parts.push(format!("{k}={}", val.as_str().unwrap_or_default()));
        }
    } else if let Value::Object(m) = sel {
        for (k, val) in m {
            if let Some(val) = val.as_str() {
                parts.push(format!("{k}={val}"));
            }
        }
    }
    for e in arr(sel, "/matchExpressions") {
        let vals: Vec<String> = arr(e, "/values")
            .iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect();
        let op = s(e, "/operator");
        let key = s(e, "/key");
        parts.push(match op.as_str() {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key,
            _ => format!("!{key}"),
        });
    }
    or_none(parts.join(","))
}

/// Whether the pod's init container `name` is a sidecar (`restartPolicy: Always`).
fn sidecar(v: &Value, name: &str) -> bool {
    arr(v, "/spec/initContainers")
        .iter()
        .any(|c| c["name"] == name && c["restartPolicy"] == "Always")
}

/// READY as kubectl counts it: containers and sidecars.
fn pod_ready(v: &Value) -> Value {
    let sidecars: Vec<&Value> = arr(v, "/status/initContainerStatuses")
        .into_iter()
        .filter(|c| sidecar(v, s(c, "/name").as_str()))
        .collect();
    let total = arr(v, "/spec/containers").len()
        + arr(v, "/spec/initContainers")
            .iter()
            .filter(|c| c["restartPolicy"] == "Always")
            .count();
    let ready = arr(v, "/status/containerStatuses")
        .into_iter()
        .chain(sidecars)
        .filter(|c| c.get("ready") == Some(&json!(true)))
        .count();
    json!(format!("{ready}/{total}"))
}

fn pod_status(v: &Value) -> Value {
    if v.pointer("/metadata/deletionTimestamp").is_some() {
        return json!("Terminating");
    }
    let mut reason = s(v, "/status/reason");
    if reason.is_empty() {
        reason = s(v, "/status/phase");
    }
    if let Some(init) = pod_initializing(v) {
        return json!(init);
    }
    for c in arr(v, "/status/containerStatuses").iter().rev() {
        let w = s(c, "/state/waiting/reason");
        let t = s(c, "/state/terminated/reason");
        if !w.is_empty() {
            reason = w;
        } else if !t.is_empty() {
            reason = t;
        } else if c.pointer("/state/terminated").is_some() {
            let code = i(c, "/state/terminated/exitCode");
            reason = format!("ExitCode:{code}");
        }
    }
    json!(reason)
}

/// The STATUS of a pod still running its init containers, as kubectl's
/// `printPod` words it: `Init:N/M`, `Init:<waiting reason>` (e.g.
/// `Init:CrashLoopBackOff`), `Init:<terminated reason>` (e.g. `Init:Error`) or
/// `Init:ExitCode:N`; None once it is initialized.
fn pod_initializing(v: &Value) -> Option<String> {
    let initialized = arr(v, "/status/conditions")
        .iter()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if initialized {
        return None;
    }
    let total = arr(v, "/spec/initContainers").len();
    for (n, c) in arr(v, "/status/initContainerStatuses").iter().enumerate() {
        let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
        let waiting = s(c, "/state/waiting/reason");
        if sidecar(v, s(c, "/name").as_str()) && c["started"] == true {
            continue;
        }
        return Some(match terminated {
            Some(_) if i(c, "/state/terminated/exitCode") == 0 => continue,
            Some(_) => match s(c, "/state/terminated/reason") {
                r if !r.is_empty() => format!("Init:{r}"),
                _ if i(c, "/state/terminated/signal") != 0 => {
                    format!("Init:Signal:{}", i(c, "/state/terminated/signal"))
                }
                _ => format!("Init:ExitCode:{}", i(c, "/state/terminated/exitCode")),
            },
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{n}/{total}"),
        });
    }
    None
}

fn pod_restarts(v: &Value) -> Value {
    let key = if pod_initializing(v).is_some() {
        "/status/initContainerStatuses"
    } else {
        "/status/containerStatuses"
    };
    let n: i64 = arr(v, key).iter().map(|c| i(c, "/restartCount")).sum();
    json!(n)
}

fn svc_ports(v: &Value) -> Value {
    let ps: Vec<String> = arr(v, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = s(p, "/protocol");
            let proto = if proto.is_empty() {
                "TCP".into()
            } else {
                proto
            };
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", i(p, "/port")),
                None => format!("{}/{proto}", i(p, "/port")),
            }
        })
        .collect();
    or_none(ps.join(","))
}

fn data_count(v: &Value) -> Value {
    let n = ["/data", "/binaryData"]
        .iter()
        .filter_map(|p| v.pointer(p).and_then(Value::as_object))
        .map(|m| m.len())
        .sum::<usize>();
    json!(n)
}

fn node_status(v: &Value) -> Value {
    let ready = arr(v, "/status/conditions")
        .into_iter()
        .find(|c| s(c, "/type") == "Ready");
    let mut st = match ready.map(|c| s(c, "/status")) {
        Some(x) if x == "True" => "Ready".to_string(),
        _ => "NotReady".to_string(),
    };
    if v.pointer("/spec/unschedulable") == Some(&json!(true)) {
        st.push_str(",SchedulingDisabled");
    }
    json!(st)
}

fn node_roles(v: &Value) -> Value {
    let roles: Vec<String> = v
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    or_none(roles.join(","))
}

fn node_addr(v: &Value, kind: &str) -> Value {
    or_none(
        arr(v, "/status/addresses")
            .into_iter()
            .find(|a| s(a, "/type") == kind)
            .map(|a| s(a, "/address"))
            .unwrap_or_default(),
    )
}

fn job_status(v: &Value) -> Value {
    let conds = arr(v, "/status/conditions");
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
    };
    json!(if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if v.pointer("/spec/suspend") == Some(&json!(true)) {
        "Suspended"
    } else {
        "Running"
    })
}

/// A quantity as Go's `Quantity.String()` writes it; a missing one is
/// `<nil>`, as Go prints a nil quantity.
fn quantity(v: Option<&Value>) -> String {
    let raw = match v {
        None | Some(Value::Null) => return "<nil>".into(),
        Some(Value::String(q)) => q.clone(),
        Some(x) => x.to_string(),
    };
    crate::metrics::quantity::canonical(&raw).unwrap_or(raw)
}

/// An HPA's TARGETS cell, as Kubernetes' `formatHPAMetrics` writes it: each
/// spec metric against the status metric at the same index (`<unknown>`
/// when there is none), at most two, then `+ N more...`.
fn hpa_targets(v: &Value) -> Value {
    let specs = arr(v, "/spec/metrics");
    let statuses = arr(v, "/status/currentMetrics");
    if specs.is_empty() {
        return json!("<none>");
    }
    let unknown = || "<unknown>".to_string();
    let parts: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let ty = s(spec, "/type");
            // The source's field: external, pods, object, resource, containerResource.
            let field = match ty.as_str() {
                "External" => "external",
                "Pods" => "pods",
                "Object" => "object",
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                _ => return "<unknown type>".to_string(),
            };
            let src = spec.get(field).unwrap_or(&Value::Null);
            let status = statuses
                .get(i)
                .and_then(|st| st.get(field))
                .filter(|x| !x.is_null());
            let target_avg = src.pointer("/target/averageValue").filter(|x| !x.is_null());
            match field {
                "pods" => {
                    let cur = status
                        .map_or_else(unknown, |st| quantity(st.pointer("/current/averageValue")));
                    format!("{cur}/{}", quantity(target_avg))
                }
                "external" | "object" => match target_avg {
                    Some(t) => {
                        let cur = status
                            .and_then(|st| st.pointer("/current/averageValue"))
                            .filter(|x| !x.is_null())
                            .map_or_else(unknown, |c| quantity(Some(c)));
                        format!("{cur}/{} (avg)", quantity(Some(t)))
                    }
                    None => {
                        let cur = status
                            .map_or_else(unknown, |st| quantity(st.pointer("/current/value")));
                        format!("{cur}/{}", quantity(src.pointer("/target/value")))
                    }
                },
                _ => {
                    let name = s(src, "/name");
                    match target_avg {
                        Some(t) => {
                            let cur = status.map_or_else(unknown, |st| {
                                quantity(st.pointer("/current/averageValue"))
                            });
                            format!("{name}: {cur}/{}", quantity(Some(t)))
                        }
                        None => {
                            let cur = status
                                .and_then(|st| st.pointer("/current/averageUtilization"))
                                .and_then(Value::as_i64)
                                .map_or_else(unknown, |u| format!("{u}%"));
                            let target = src
                                .pointer("/target/averageUtilization")
                                .and_then(Value::as_i64)
                                .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                            format!("{name}: {cur}/{target}")
                        }
                    }
                }
            }
        })
        .collect();
    const MAX: usize = 2;
    if parts.len() > MAX {
        return json!(format!(
            "{} + {} more...",
            parts[..MAX].join(", "),
            parts.len() - MAX
        ));
    }
    json!(parts.join(", "))
}

fn columns(t: &ResourceType) -> Vec<Col> {
    match (t.group, t.kind) {
        ("", "Pod") => vec![
            col("Name", name),
            col("Ready", pod_ready),
            col("Status", pod_status),
            int("Restarts", pod_restarts),
            col("Age", age),
            wide("IP", |v| or_none(s(v, "/status/podIP"))),
            wide("Node", |v| or_none(s(v, "/spec/nodeName"))),
            wide("Nominated Node", |v| {
                or_none(s(v, "/status/nominatedNodeName"))
            }),
            wide("Readiness Gates", |v| {
                or_none(
                    arr(v, "/spec/readinessGates")
                        .iter()
                        .map(|g| s(g, "/conditionType"))
                        .collect::<Vec<_>>()
                        .join(","),
                )
            }),
        ],
        ("", "Namespace") => vec![
            col("Name", name),
            col("Status", |v| json!(s(v, "/status/phase"))),
            col("Age", age),
        ],
        ("", "Service") => vec![
            col("Name", name),
            col("Type", |v| json!(s(v, "/spec/type"))),
            col("Cluster-IP", |v| or_none(s(v, "/spec/clusterIP"))),
            col("External-IP", |v| {
                // As kubectl's printer: ExternalName shows the name, a
                // LoadBalancer its ingress (or <pending>), then externalIPs.
                if s(v, "/spec/type") == "ExternalName" {
                    return or_none(s(v, "/spec/externalName"));
                }
                let mut ips: Vec<String> = arr(v, "/status/loadBalancer/ingress")
                    .iter()
                    .map(|i| {
                        let ip = s(i, "/ip");
                        if ip.is_empty() { s(i, "/hostname") } else { ip }.to_string()
                    })
                    .collect();
                ips.extend(
                    arr(v, "/spec/externalIPs")
                        .iter()
                        .map(|x| x.as_str().unwrap_or_default().to_string()),
                );
                if ips.is_empty() && s(v, "/spec/type") == "LoadBalancer" {
                    return json!("<pending>");
                }
                or_none(ips.join(","))
            }),
            col("Port(s)", svc_ports),
            col("Age", age),
            wide("Selector", |v| selector_string(v, "/spec/selector")),
        ],
        ("", "ConfigMap") => vec![col("Name", name), int("Data", data_count), col("Age", age)],
        ("", "Secret") => vec![
            col("Name", name),
            col("Type", |v| json!(s(v, "/type"))),
            int("Data", data_count),
            col("Age", age),
        ],
        ("", "ServiceAccount") => vec![
            col("Name", name),
            int("Secrets", |v| json!(arr(v, "/secrets").len())),
            col("Age", age),
        ],
        ("", "Endpoints") => vec![
            col("Name", name),
            col("Endpoints", |v| {
                let mut eps = Vec::new();
                for sub in arr(v, "/subsets") {
                    for a in arr(sub, "/addresses") {
                        for p in arr(sub, "/ports") {
                            eps.push(format!("{}:{}", s(a, "/ip"), i(p, "/port")));
                        }
                    }
                }
                or_none(eps.join(","))
            }),
            col("Age", age),
        ],
        ("", "Node") => vec![
            col("Name", name),
            col("Status", node_status),
            col("Roles", node_roles),
            col("Age", age),
            col("Version", |v| {
                json!(s(v, "/status/nodeInfo/kubeletVersion"))
            }),
            wide("Internal-IP", |v| node_addr(v, "InternalIP")),
            wide("External-IP", |v| node_addr(v, "ExternalIP")),
            wide("OS-Image", |v| json!(s(v, "/status/nodeInfo/osImage"))),
            wide("Kernel-Version", |v| {
                json!(s(v, "/status/nodeInfo/kernelVersion"))
            }),
            wide("Container-Runtime", |v| {
                json!(s(v, "/status/nodeInfo/containerRuntimeVersion"))
            }),
        ],
        ("", "Event") => vec![
            col("Last Seen", |v| {
                let t = [
                    "/lastTimestamp",
                    "/eventTime",
                    "/metadata/creationTimestamp",
                ]
                .iter()
                .map(|p| s(v, p))
                .find(|x| !x.is_empty())
                .unwrap_or_default();
                json!(age_of(&t))
            }),
            col("Type", |v| json!(s(v, "/type"))),
            col("Reason", |v| json!(s(v, "/reason"))),
            col("Object", |v| {
                json!(format!(
                    "{}/{}",
                    s(v, "/involvedObject/kind").to_ascii_lowercase(),
                    s(v, "/involvedObject/name")
                ))
            }),
            col("Message", |v| json!(s(v, "/message"))),
        ],
        ("", "PersistentVolume") => vec![
            col("Name", name),
            col("Capacity", |v| json!(s(v, "/spec/capacity/storage"))),
            col("Access Modes", |v| {
                json!(
                    arr(v, "/spec/accessModes")
                        .iter()
                        .map(|m| match m.as_str() {
                            Some("ReadWriteOnce") => "RWO",
                            Some("ReadOnlyMany") => "ROX",
                            Some("ReadWriteMany") => "RWX",
                            Some("ReadWriteOncePod") => "RWOP",
                            _ => "",
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }),
            col("Reclaim Policy", |v| {
                json!(s(v, "/spec/persistentVolumeReclaimPolicy"))
            }),
            col("Status", |v| json!(s(v, "/status/phase"))),
            col("Claim", |v| {
                json!(if v.pointer("/spec/claimRef").is_some() {
                    format!(
                        "{}/{}",
                        s(v, "/spec/claimRef/namespace"),
                        s(v, "/spec/claimRef/name")
                    )
                } else {
                    String::new()
                })
            }),
            col("StorageClass", |v| json!(s(v, "/spec/storageClassName"))),
            col("Age", age),
        ],
        ("", "PersistentVolumeClaim") => vec![
            col("Name", name),
            col("Status", |v| json!(s(v, "/status/phase"))),
            col("Volume", |v| json!(s(v, "/spec/volumeName"))),
            col("Capacity", |v| json!(s(v, "/status/capacity/storage"))),
            col("Access Modes", |v| {
                json!(
                    arr(v, "/status/accessModes")
                        .iter()
                        .filter_map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }),
            col("StorageClass", |v| json!(s(v, "/spec/storageClassName"))),
            col("Age", age),
        ],
        ("apps", "Deployment") => vec![
            col("Name", name),
            col("Ready", |v| {
                json!(format!(
                    "{}/{}",
                    i(v, "/status/readyReplicas"),
                    i(v, "/spec/replicas")
                ))
            }),
            int("Up-to-date", |v| json!(i(v, "/status/updatedReplicas"))),
            int("Available", |v| json!(i(v, "/status/availableReplicas"))),
            col("Age", age),
            wide("Containers", |v| {
                containers_of(v, "/spec/template/spec/containers").0
            }),
            wide("Images", |v| {
                containers_of(v, "/spec/template/spec/containers").1
            }),
            wide("Selector", |v| selector_string(v, "/spec/selector")),
        ],
        ("apps", "ReplicaSet") => vec![
            col("Name", name),
            int("Desired", |v| json!(i(v, "/spec/replicas"))),
            int("Current", |v| json!(i(v, "/status/replicas"))),
            int("Ready", |v| json!(i(v, "/status/readyReplicas"))),
            col("Age", age),
            wide("Containers", |v| {
                containers_of(v, "/spec/template/spec/containers").0
            }),
            wide("Images", |v| {
                containers_of(v, "/spec/template/spec/containers").1
            }),
            wide("Selector", |v| selector_string(v, "/spec/selector")),
        ],
        ("apps", "StatefulSet") => vec![
            col("Name", name),
            col("Ready", |v| {
                json!(format!(
                    "{}/{}",
                    i(v, "/status/readyReplicas"),
                    i(v, "/spec/replicas")
                ))
            }),
            col("Age", age),
            wide("Containers", |v| {
                containers_of(v, "/spec/template/spec/containers").0
            }),
            wide("Images", |v| {
                containers_of(v, "/spec/template/spec/containers").1
            }),
        ],
        ("apps", "DaemonSet") => vec![
            col("Name", name),
            int("Desired", |v| json!(i(v, "/status/desiredNumberScheduled"))),
            int("Current", |v| json!(i(v, "/status/currentNumberScheduled"))),
            int("Ready", |v| json!(i(v, "/status/numberReady"))),
            int("Up-to-date", |v| {
                json!(i(v, "/status/updatedNumberScheduled"))
            }),
            int("Available", |v| json!(i(v, "/status/numberAvailable"))),
            col("Node Selector", |v| {
                selector_string(v, "/spec/template/spec/nodeSelector")
            }),
            col("Age", age),
            wide("Containers", |v| {
                containers_of(v, "/spec/template/spec/containers").0
            }),
            wide("Images", |v| {
                containers_of(v, "/spec/template/spec/containers").1
            }),
            wide("Selector", |v| selector_string(v, "/spec/selector")),
        ],
        ("apps", "ControllerRevision") => vec![
            col("Name", name),
            col("Controller", |v| {
                json!(
                    arr(v, "/metadata/ownerReferences")
                        .first()
                        .map(|o| format!(
                            "{}/{}",
                            s(o, "/kind").to_ascii_lowercase(),
                            s(o, "/name")
                        ))
                        .unwrap_or_default()
                )
            }),
            int("Revision", |v| json!(i(v, "/revision"))),
            col("Age", age),
        ],
        ("batch", "Job") => vec![
            col("Name", name),
            col("Status", job_status),
            col("Completions", |v| {
                json!(format!(
                    "{}/{}",
                    i(v, "/status/succeeded"),
                    v.pointer("/spec/completions")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ))
            }),
            col("Duration", |v| {
                let start = s(v, "/status/startTime");
                let end = s(v, "/status/completionTime");
                match (
                    start.parse::<jiff::Timestamp>(),
                    end.parse::<jiff::Timestamp>(),
                ) {
                    (Ok(a), Ok(b)) => json!(human_duration(b.as_second() - a.as_second())),
                    (Ok(a), Err(_)) => json!(human_duration(
                        jiff::Timestamp::now().as_second() - a.as_second()
                    )),
                    _ => json!(""),
                }
            }),
            col("Age", age),
            wide("Containers", |v| {
                containers_of(v, "/spec/template/spec/containers").0
            }),
            wide("Images", |v| {
                containers_of(v, "/spec/template/spec/containers").1
            }),
            wide("Selector", |v| selector_string(v, "/spec/selector")),
        ],
        ("batch", "CronJob") => vec![
            col("Name", name),
            col("Schedule", |v| json!(s(v, "/spec/schedule"))),
            col("Timezone", |v| or_none(s(v, "/spec/timeZone"))),
            col("Suspend", |v| {
                json!(if v.pointer("/spec/suspend") == Some(&json!(true)) {
                    "True"
                } else {
                    "False"
                })
            }),
            int("Active", |v| json!(arr(v, "/status/active").len())),
            col("Last Schedule", |v| {
                let t = s(v, "/status/lastScheduleTime");
                or_none(if t.is_empty() { t } else { age_of(&t) })
            }),
            col("Age", age),
            wide("Containers", |v| {
                containers_of(v, "/spec/jobTemplate/spec/template/spec/containers").0
            }),
            wide("Images", |v| {
                containers_of(v, "/spec/jobTemplate/spec/template/spec/containers").1
            }),
            wide("Selector", |v| {
                selector_string(v, "/spec/jobTemplate/spec/selector")
            }),
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            col("Name", name),
            col("Reference", |v| {
                json!(format!(
                    "{}/{}",
                    s(v, "/spec/scaleTargetRef/kind"),
                    s(v, "/spec/scaleTargetRef/name")
                ))
            }),
            col("Targets", hpa_targets),
            int("MinPods", |v| {
                json!(
                    v.pointer("/spec/minReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )
            }),
            int("MaxPods", |v| json!(i(v, "/spec/maxReplicas"))),
            int("Replicas", |v| json!(i(v, "/status/currentReplicas"))),
            col("Age", age),
        ],
        ("coordination.k8s.io", "Lease") => vec![
            col("Name", name),
            col("Holder", |v| json!(s(v, "/spec/holderIdentity"))),
            col("Age", age),
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            col("Name", name),
            col("AddressType", |v| json!(s(v, "/addressType"))),
            col("Ports", |v| {
                or_none(
                    arr(v, "/ports")
                        .iter()
                        .map(|p| i(p, "/port").to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                )
            }),
            col("Endpoints", |v| {
                or_none(
                    arr(v, "/endpoints")
                        .iter()
                        .flat_map(|e| arr(e, "/addresses"))
                        .filter_map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                )
            }),
            col("Age", age),
        ],
        ("node.k8s.io", "RuntimeClass") => vec![
            col("Name", name),
            col("Handler", |v| json!(s(v, "/handler"))),
            col("Age", age),
        ],
        ("policy", "PodDisruptionBudget") => vec![
            col("Name", name),
            col("Min Available", |v| {
                json!(if v.pointer("/spec/minAvailable").is_some() {
                    s(v, "/spec/minAvailable")
                } else {
                    "N/A".into()
                })
            }),
            col("Max Unavailable", |v| {
                json!(if v.pointer("/spec/maxUnavailable").is_some() {
                    s(v, "/spec/maxUnavailable")
                } else {
                    "N/A".into()
                })
            }),
            int("Allowed Disruptions", |v| {
                json!(i(v, "/status/disruptionsAllowed"))
            }),
            col("Age", age),
        ],
        ("networking.k8s.io", "Ingress") => vec![
            col("Name", name),
            col("Class", |v| or_none(s(v, "/spec/ingressClassName"))),
            col("Hosts", |v| {
                let h: Vec<String> = arr(v, "/spec/rules")
                    .iter()
                    .map(|r| s(r, "/host"))
                    .filter(|h| !h.is_empty())
                    .collect();
                json!(if h.is_empty() {
                    "*".to_string()
                } else {
                    h.join(",")
                })
            }),
            col("Address", |v| {
                json!(
                    arr(v, "/status/loadBalancer/ingress")
                        .iter()
                        .map(|x| s(x, "/ip"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }),
            col("Ports", |v| {
                json!(if arr(v, "/spec/tls").is_empty() {
                    "80"
                } else {
                    "80, 443"
                })
            }),
            col("Age", age),
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![
            col("Name", name),
            col("Pod-Selector", |v| {
                let s = selector_string(v, "/spec/podSelector");
                if s == json!("<none>") {
                    json!("<none>")
                } else {
                    s
                }
            }),
            col("Age", age),
        ],
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => vec![
            col("Name", name),
            col("Created At", |v| json!(s(v, "/metadata/creationTimestamp"))),
        ],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => vec![
            col("Name", name),
            col("Role", |v| {
                json!(format!(
                    "{}/{}",
                    s(v, "/roleRef/kind"),
                    s(v, "/roleRef/name")
                ))
            }),
            col("Age", age),
            wide("Users", |v| {
                json!(
                    arr(v, "/subjects")
                        .iter()
                        .filter(|x| s(x, "/kind") == "User")
                        .map(|x| s(x, "/name"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
            wide("Groups", |v| {
                json!(
                    arr(v, "/subjects")
                        .iter()
                        .filter(|x| s(x, "/kind") == "Group")
                        .map(|x| s(x, "/name"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
            wide("ServiceAccounts", |v| {
                json!(
                    arr(v, "/subjects")
                        .iter()
                        .filter(|x| s(x, "/kind") == "ServiceAccount")
                        .map(|x| format!("{}/{}", s(x, "/namespace"), s(x, "/name")))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        ],
        _ => vec![col("Name", name), col("Age", age)],
    }
}

/// What each row carries as `object` (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Include {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn row(cols: &[Col], obj: &Value, include: Include) -> Value {
    let cells: Vec<Value> = cols.iter().map(|c| (c.cell)(obj)).collect();
    let object = match include {
        Include::None => Value::Null,
        Include::Object => obj.clone(),
        Include::Metadata => partial_metadata(obj),
    };
    let mut r = json!({"cells": cells});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// A `meta.k8s.io/v1` Table of `items`.
pub fn table(
    t: &ResourceType,
    items: &[Value],
    rv: &str,
    cont: Option<&str>,
    include: Include,
) -> Value {
    let cols = columns(t);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": if c.name == "Name" { "name" } else { "" },
                "description": "",
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items.iter().map(|o| row(&cols, o, include)).collect();
    let mut md = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": md,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// An object as a `meta.k8s.io/v1` PartialObjectMetadata: its metadata only.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// What the Accept header asks a read to return: the objects, a Table of
/// them, or their metadata only (`as=PartialObjectMetadata` or
/// `as=PartialObjectMetadataList`, as metadata informers ask). Only the first
/// media type counts, as Kubernetes reads it when the client offers a
/// fallback after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendering {
    Object,
    Table,
    Metadata,
}

impl Rendering {
    pub fn of(accept: &str) -> Rendering {
        let first = accept.split(',').next().unwrap_or("");
        let param = |k: &str| {
            first
                .split(';')
                .skip(1)
                .find_map(|p| p.trim().strip_prefix(k)?.strip_prefix('='))
        };
        match (param("as"), param("g")) {
            (Some("Table"), _) => Rendering::Table,
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io")) => {
                Rendering::Metadata
            }
            _ => Rendering::Object,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renderings_from_accept_headers() {
        let cases = [
            ("application/json", Rendering::Object),
            ("", Rendering::Object),
            (
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
                Rendering::Table,
            ),
            (
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
                Rendering::Metadata,
            ),
            (
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                Rendering::Metadata,
            ),
            // Another group's PartialObjectMetadata is not ours to give.
            (
                "application/json;as=PartialObjectMetadata;g=example.com;v=v1",
                Rendering::Object,
            ),
            // Only the first media type counts.
            (
                "application/json,application/json;as=Table;g=meta.k8s.io;v=v1",
                Rendering::Object,
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(Rendering::of(accept), want, "{accept}");
        }
    }

    #[test]
    fn durations_table() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pod_columns() {
        let reg = crate::model::Registry::builtin();
        let t = reg.by_kind("v1", "Pod").unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.88.0.5", "containerStatuses": [
                {"ready": true, "restartCount": 2, "state": {"running": {}}},
                {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let tb = table(t, &[pod], "7", None, Include::Metadata);
        let cells = &tb["rows"][0]["cells"];
        assert_eq!(cells[0], "p");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], 3);
        assert_eq!(cells[5], "10.88.0.5");
        assert_eq!(tb["columnDefinitions"][5]["priority"], 1);
        assert_eq!(tb["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn hpa_targets_as_kubectl_prints_them() {
        let hpa = |metrics: Value, current: Value| json!({"spec": {"metrics": metrics}, "status": {"currentMetrics": current}});
        let cpu_util = json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}});
        let mem_avg = json!({"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "AverageValue", "averageValue": "100Mi"}}});
        let rps = json!({"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "5"}}});
        let obj = json!({"type": "Object", "object": {"metric": {"name": "connections_total"},
            "describedObject": {"kind": "Service", "name": "s", "apiVersion": "v1"},
            "target": {"type": "Value", "value": "10"}}});
        let obj_avg = json!({"type": "Object", "object": {"metric": {"name": "x"},
            "target": {"type": "AverageValue", "averageValue": "2"}}});
        let ext = json!({"type": "External", "external": {"metric": {"name": "q"},
            "target": {"type": "Value", "value": "1k"}}});
        let ext_avg = json!({"type": "External", "external": {"metric": {"name": "q"},
            "target": {"type": "AverageValue", "averageValue": "0.5"}}});
        let cr = json!({"type": "ContainerResource", "containerResource": {"name": "cpu",
            "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}});
        let cases = vec![
            (json!([]), json!([]), "<none>"),
            (json!([cpu_util]), json!([]), "cpu: <unknown>/50%"),
            (
                json!([cpu_util]),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": 40, "averageValue": "20m"}}}]),
                "cpu: 40%/50%",
            ),
            (
                json!([mem_avg]),
                json!([{"type": "Resource", "resource": {"name": "memory",
                    "current": {"averageValue": "10Mi"}}}]),
                "memory: 10Mi/100Mi",
            ),
            (
                // A decimal count of bytes stays one, as Go keeps its format.
                json!([mem_avg]),
                json!([{"type": "Resource", "resource": {"name": "memory",
                    "current": {"averageValue": "10485760"}}}]),
                "memory: 10485760/100Mi",
            ),
            (
                json!([rps]),
                json!([{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                    "current": {"averageValue": "2.5"}}}]),
                "2500m/5",
            ),
            (json!([rps]), json!([]), "<unknown>/5"),
            (
                json!([obj, obj_avg]),
                json!([{"type": "Object", "object": {"current": {"value": "7"}}}]),
                "7/10, <unknown>/2 (avg)",
            ),
            (
                json!([ext, ext_avg]),
                json!([{"type": "External", "external": {"current": {"value": "1500"}}},
                    {"type": "External", "external": {"current": {"averageValue": "250m"}}}]),
                "1500/1k, 250m/500m (avg)",
            ),
            (
                json!([cr]),
                json!([{"type": "ContainerResource", "containerResource": {"name": "cpu",
                    "container": "app", "current": {"averageUtilization": 70}}}]),
                "cpu: 70%/60%",
            ),
            (
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}]),
                json!([]),
                "cpu: <unknown>/<auto>",
            ),
            (json!([{"type": "Weird"}]), json!([]), "<unknown type>"),
        ];
        for (metrics, current, want) in cases {
            let v = hpa(metrics, current);
            assert_eq!(hpa_targets(&v), want, "{v}");
        }
        let three = hpa(json!([cpu_util, mem_avg, rps]), json!([]));
        assert_eq!(
            hpa_targets(&three),
            "cpu: <unknown>/50%, memory: <unknown>/100Mi + 1 more..."
        );
        let reg = crate::model::Registry::builtin();
        let t = reg
            .by_kind("autoscaling/v2", "HorizontalPodAutoscaler")
            .unwrap();
        let obj = json!({"metadata": {"name": "h", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2,
                "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]},
            "status": {"currentReplicas": 3}});
        let tb = table(t, &[obj], "1", None, Include::None);
        let cells = &tb["rows"][0]["cells"];
        assert_eq!(cells[1], "Deployment/web");
        assert_eq!(cells[2], "cpu: <unknown>/50%");
        assert_eq!(
            (cells[3].clone(), cells[4].clone(), cells[5].clone()),
            (json!(2), json!(5), json!(3))
        );
    }

    #[test]
    fn pod_status_while_initializing() {
        let ok = json!({"restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let running = json!({"restartCount": 0, "state": {"running": {}}});
        let waiting =
            json!({"restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}});
        let looping =
            json!({"restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}});
        let failed =
            json!({"restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}});
        let no_reason = json!({"restartCount": 0, "state": {"terminated": {"exitCode": 3}}});
        let app = json!([{"restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]);
        // A started sidecar lets initialization go on, and counts in READY.
        let pod = json!({"spec": {"initContainers": [{"name": "a", "restartPolicy": "Always"}, {"name": "b"}],
                "containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "Initialized", "status": "False"}],
                "initContainerStatuses": [
                    {"name": "a", "restartCount": 0, "started": true, "ready": true, "state": {"running": {}}},
                    {"name": "b", "restartCount": 0, "state": {"running": {}}}],
                "containerStatuses": app.clone()}});
        assert_eq!(pod_status(&pod), "Init:1/2");
        assert_eq!(pod_ready(&pod), "1/2");
        let cases = [
            (vec![running.clone(), waiting.clone()], false, "Init:0/2", 0),
            (vec![ok.clone(), running.clone()], false, "Init:1/2", 0),
            (vec![ok.clone(), looping], false, "Init:CrashLoopBackOff", 4),
            (vec![ok.clone(), failed], false, "Init:Error", 0),
            (vec![no_reason, waiting], false, "Init:ExitCode:3", 0),
            (vec![ok.clone(), ok], true, "PodInitializing", 0),
        ];
        for (inits, initialized, want, restarts) in cases {
            let pod = json!({"spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "c"}]},
                "status": {"phase": "Pending",
                    "conditions": [{"type": "Initialized", "status": if initialized { "True" } else { "False" }}],
                    "initContainerStatuses": inits, "containerStatuses": app}});
            assert_eq!(pod_status(&pod), want, "{pod}");
            assert_eq!(pod_restarts(&pod), restarts, "{pod}");
        }
    }
}
