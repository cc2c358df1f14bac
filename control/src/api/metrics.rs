//! The resource metrics API (`metrics.k8s.io/v1beta1`, what `kubectl top`
//! reads) and the custom metrics API (`custom.metrics.k8s.io/v1beta2`, what
//! autoscalers read), answered from the node agents' reports through
//! `crate::metrics::Collector`, in the shapes metrics-server and
//! custom-metrics-apiserver give.
//!
//! Objects come from the store: selectors apply to the Nodes', Pods' and
//! Services' labels, and **metrics of an object the store no longer has (or
//! of an older pod with the same name) are never answered**. Only GET is
//! served; an object without metrics is a 404 NotFound Status.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::metrics::{
    Collector, NodeMetrics, PodMetric, PodMetrics, ServiceMetric, go_duration, quantity,
};
use crate::model::ResourceType;

use super::request::query_map;
use super::rest::json_response;
use crate::model::meta::now_rfc3339;
use crate::model::selector::{FieldSelector, LabelSelector};
use crate::model::status::{ApiError, ApiResult};
use crate::storage::Objects;

/// The resource metrics group and its version.
pub const METRICS_GROUP: &str = "metrics.k8s.io";
pub const METRICS_VERSION: &str = "v1beta1";
/// The custom metrics group and its version.
pub const CUSTOM_GROUP: &str = "custom.metrics.k8s.io";
pub const CUSTOM_VERSION: &str = "v1beta2";

/// What a path under the two groups addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/apis/{group}`: the APIGroup.
    Group(&'static str),
    /// `/apis/{group}/{version}`: the APIResourceList.
    Resources(&'static str),
    /// `metrics.k8s.io/v1beta1/nodes[/{name}]`.
    Nodes { name: Option<String> },
    /// `metrics.k8s.io/v1beta1/[namespaces/{ns}/]pods[/{name}]`.
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
    /// `custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/{name or *}/{metric}`.
    PodMetric {
        namespace: String,
        name: Option<String>,
        metric: String,
    },
    /// `custom.metrics.k8s.io/v1beta2/namespaces/{ns}/services/{name or *}/{metric}`.
    ServiceMetric {
        namespace: String,
        name: Option<String>,
        metric: String,
    },
    /// Anything else under the two groups.
    Unknown,
}

fn name_or_all(s: &str) -> Option<String> {
    (s != "*" && !s.eq_ignore_ascii_case("%2A")).then(|| s.to_string())
}

/// The route of a path, `None` when it is not under the metrics groups.
pub fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest): (&'static str, &[&str]) = match segs.as_slice() {
        ["apis", METRICS_GROUP, rest @ ..] => (METRICS_GROUP, rest),
        ["apis", CUSTOM_GROUP, rest @ ..] => (CUSTOM_GROUP, rest),
        _ => return None,
    };
    let own = |s: &str| Some(s.to_string());
    let r = match (group, rest) {
        (g, []) => Route::Group(g),
        (METRICS_GROUP, [METRICS_VERSION]) => Route::Resources(METRICS_GROUP),
        (METRICS_GROUP, [METRICS_VERSION, "nodes"]) => Route::Nodes { name: None },
        (METRICS_GROUP, [METRICS_VERSION, "nodes", n]) => Route::Nodes { name: own(n) },
        (METRICS_GROUP, [METRICS_VERSION, "pods"]) => Route::Pods {
            namespace: None,
            name: None,
        },
        (METRICS_GROUP, [METRICS_VERSION, "namespaces", ns, "pods"]) => Route::Pods {
            namespace: own(ns),
            name: None,
        },
        (METRICS_GROUP, [METRICS_VERSION, "namespaces", ns, "pods", n]) => Route::Pods {
            namespace: own(ns),
            name: own(n),
        },
        (CUSTOM_GROUP, [CUSTOM_VERSION]) => Route::Resources(CUSTOM_GROUP),
        (CUSTOM_GROUP, [CUSTOM_VERSION, "namespaces", ns, "pods", n, m]) => Route::PodMetric {
            namespace: ns.to_string(),
            name: name_or_all(n),
            metric: m.to_string(),
        },
        (CUSTOM_GROUP, [CUSTOM_VERSION, "namespaces", ns, "services", n, m]) => {
            Route::ServiceMetric {
                namespace: ns.to_string(),
                name: name_or_all(n),
                metric: m.to_string(),
            }
        }
        _ => Route::Unknown,
    };
    Some(r)
}

fn version_of(group: &str) -> &'static str {
    if group == METRICS_GROUP {
        METRICS_VERSION
    } else {
        CUSTOM_VERSION
    }
}

/// The APIGroup document of one of the two groups.
pub fn api_group(group: &str) -> Value {
    let v = json!({"groupVersion": format!("{group}/{}", version_of(group)), "version": version_of(group)});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [v.clone()],
        "preferredVersion": v,
    })
}

/// The two groups, for `/apis` (after the built-in ones).
pub fn api_groups() -> Vec<Value> {
    [METRICS_GROUP, CUSTOM_GROUP]
        .iter()
        .map(|g| api_group(g))
        .collect()
}

/// The APIResourceList of one of the two groups: metrics-server's two
/// resources, or one `pods/{metric}` / `services/{metric}` entry per custom
/// metric as custom-metrics-apiserver lists them.
pub fn resource_list(group: &str) -> Value {
    let resources: Vec<Value> = if group == METRICS_GROUP {
        vec![
            json!({"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]}),
            json!({"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}),
        ]
    } else {
        let pods = PodMetric::ALL.iter().map(|m| format!("pods/{}", m.name()));
        let services = ServiceMetric::ALL
            .iter()
            .map(|m| format!("services/{}", m.name()));
        pods.chain(services)
            .map(|name| {
                json!({"name": name, "singularName": "", "namespaced": true, "kind": "MetricValueList", "verbs": ["get"]})
            })
            .collect()
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/{}", version_of(group)),
        "resources": resources,
    })
}

/// Answer a request routed here.
pub async fn serve(
    collector: &Collector,
    objects: &Objects,
    method: &Method,
    route: Route,
    raw_query: Option<&str>,
) -> Response {
    if method != Method::GET {
        return ApiError::method_not_allowed(&format!("{method} on metrics")).into_response();
    }
    let q = Query(query_map(raw_query));
    let r = match route {
        Route::Group(g) => Ok(api_group(g)),
        Route::Resources(g) => Ok(resource_list(g)),
        Route::Nodes { name } => nodes(collector, objects, name.as_deref(), &q).await,
        Route::Pods { namespace, name } => {
            pods(
                collector,
                objects,
                namespace.as_deref(),
                name.as_deref(),
                &q,
            )
            .await
        }
        Route::PodMetric {
            namespace,
            name,
            metric,
        } => pod_metric(collector, objects, &namespace, name.as_deref(), &metric, &q).await,
        Route::ServiceMetric {
            namespace,
            name,
            metric,
        } => service_metric(collector, objects, &namespace, name.as_deref(), &metric, &q).await,
        Route::Unknown => Err(ApiError::no_route("metrics")),
    };
    match r {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

struct Query(std::collections::HashMap<String, String>);

impl Query {
    fn labels(&self) -> ApiResult<LabelSelector> {
        LabelSelector::parse(self.0.get("labelSelector").map_or("", String::as_str))
    }
    fn fields(&self) -> ApiResult<FieldSelector> {
        FieldSelector::parse(self.0.get("fieldSelector").map_or("", String::as_str))
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn kind(objects: &Objects, kind: &str) -> ApiResult<ResourceType> {
    objects
        .registry
        .by_kind("v1", kind)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("no {kind} type")))
}

/// Get a stored object; a missing one is the given NotFound.
async fn stored(
    objects: &Objects,
    t: &ResourceType,
    ns: Option<&str>,
    name: &str,
    missing: impl FnOnce() -> ApiError,
) -> ApiResult<Value> {
    match objects.get(t, ns, name).await {
        Err(e) if e.code == StatusCode::NOT_FOUND => Err(missing()),
        r => r,
    }
}

async fn list(
    objects: &Objects,
    t: &ResourceType,
    ns: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> ApiResult<Vec<Value>> {
    Ok(objects.list(t, ns, labels, fields, None, None).await?.0)
}

fn labels_of(obj: &Value) -> Value {
    obj.pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}))
}

fn node_item(node: &Value, m: &NodeMetrics) -> Value {
    json!({
        "metadata": {
            "name": m.name,
            "creationTimestamp": now_rfc3339(),
            "labels": labels_of(node),
        },
        "timestamp": m.timestamp,
        "window": go_duration(m.window_seconds),
        "usage": {"cpu": quantity::cpu(m.cpu_nanocores), "memory": quantity::memory(m.memory_bytes)},
    })
}

fn list_of(kind: &str, group_version: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": group_version, "metadata": {}, "items": items})
}

fn single(mut item: Value, kind: &str, group_version: &str) -> Value {
    item["kind"] = json!(kind);
    item["apiVersion"] = json!(group_version);
    item
}

async fn nodes(
    collector: &Collector,
    objects: &Objects,
    name: Option<&str>,
    q: &Query,
) -> ApiResult<Value> {
    let gv = format!("{METRICS_GROUP}/{METRICS_VERSION}");
    let (labels, fields) = (q.labels()?, q.fields()?);
    let t = kind(objects, "Node")?;
    let metrics = collector.node_metrics().await?;
    let find = |n: &str| metrics.iter().find(|m| m.name == n);
    match name {
        Some(name) => {
            let missing = || ApiError::not_found("nodemetrics.metrics.k8s.io", name);
            let node = stored(objects, &t, None, name, missing).await?;
            let m = find(name).ok_or_else(missing)?;
            Ok(single(node_item(&node, m), "NodeMetrics", &gv))
        }
        None => {
            let items = list(objects, &t, None, &labels, &fields)
                .await?
                .iter()
                .filter_map(|n| find(s(n, "/metadata/name")).map(|m| node_item(n, m)))
                .collect();
            Ok(list_of("NodeMetricsList", &gv, items))
        }
    }
}

/// The report of a stored pod: same namespace and name, and the same uid
/// when both know it (a recreated pod never gets its predecessor's numbers).
fn report_for<'a>(reports: &'a [PodMetrics], pod: &Value) -> Option<&'a PodMetrics> {
    let (ns, name, uid) = (
        s(pod, "/metadata/namespace"),
        s(pod, "/metadata/name"),
        s(pod, "/metadata/uid"),
    );
    reports.iter().find(|r| {
        r.usage.namespace == ns
            && r.usage.name == name
            && (uid.is_empty() || r.usage.uid.is_empty() || r.usage.uid == uid)
    })
}

fn usage(cpu: u64, memory: u64) -> Value {
    json!({"cpu": quantity::cpu(cpu), "memory": quantity::memory(memory)})
}

fn pod_item(pod: &Value, m: &PodMetrics) -> Value {
    let u = &m.usage;
    let containers: Vec<Value> = if u.containers.is_empty() {
        // No per-container split: the pod's use is its first container's.
        let first = s(pod, "/spec/containers/0/name");
        if first.is_empty() {
            Vec::new()
        } else {
            vec![json!({"name": first, "usage": usage(u.cpu_nanocores, u.memory_bytes)})]
        }
    } else {
        u.containers
            .iter()
            .map(|c| json!({"name": c.name, "usage": usage(c.cpu_nanocores, c.memory_bytes)}))
            .collect()
    };
    json!({
        "metadata": {
            "name": u.name,
            "namespace": u.namespace,
            "creationTimestamp": now_rfc3339(),
            "labels": labels_of(pod),
        },
        "timestamp": m.timestamp,
        "window": go_duration(m.window_seconds),
        "containers": containers,
    })
}

async fn pods(
    collector: &Collector,
    objects: &Objects,
    namespace: Option<&str>,
    name: Option<&str>,
    q: &Query,
) -> ApiResult<Value> {
    let gv = format!("{METRICS_GROUP}/{METRICS_VERSION}");
    let (labels, fields) = (q.labels()?, q.fields()?);
    let t = kind(objects, "Pod")?;
    let reports = collector.pod_metrics(namespace).await?;
    match (namespace, name) {
        (Some(ns), Some(name)) => {
            let missing = || ApiError::not_found("podmetrics.metrics.k8s.io", name);
            let pod = stored(objects, &t, Some(ns), name, missing).await?;
            let m = report_for(&reports, &pod).ok_or_else(missing)?;
            Ok(single(pod_item(&pod, m), "PodMetrics", &gv))
        }
        _ => {
            let items = list(objects, &t, namespace, &labels, &fields)
                .await?
                .iter()
                .filter_map(|p| report_for(&reports, p).map(|m| pod_item(p, m)))
                .collect();
            Ok(list_of("PodMetricsList", &gv, items))
        }
    }
}

fn metric_not_found(metric: &str, resource: &str, name: Option<&str>) -> ApiError {
    let what = match name {
        Some(n) => format!("{resource} {n}"),
        None => resource.to_string(),
    };
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("the server could not find the metric {metric} for {what}"),
    )
}

/// A `MetricValue` (v1beta2) about a core object.
fn metric_value(
    kind: &str,
    ns: &str,
    name: &str,
    metric: &str,
    timestamp: &str,
    window: f64,
    value: f64,
) -> Value {
    json!({
        "describedObject": {"kind": kind, "namespace": ns, "name": name, "apiVersion": "/v1"},
        "metric": {"name": metric},
        "timestamp": timestamp,
        "windowSeconds": window.round() as i64,
        "value": quantity::milli(value),
    })
}

fn metric_list(items: Vec<Value>) -> Value {
    list_of(
        "MetricValueList",
        &format!("{CUSTOM_GROUP}/{CUSTOM_VERSION}"),
        items,
    )
}

async fn pod_metric(
    collector: &Collector,
    objects: &Objects,
    ns: &str,
    name: Option<&str>,
    metric: &str,
    q: &Query,
) -> ApiResult<Value> {
    let m = PodMetric::parse(metric).ok_or_else(|| metric_not_found(metric, "pods", None))?;
    let labels = q.labels()?;
    let t = kind(objects, "Pod")?;
    let reports = collector.pod_metrics(Some(ns)).await?;
    let item = |r: &PodMetrics| {
        metric_value(
            "Pod",
            ns,
            &r.usage.name,
            metric,
            &r.timestamp,
            r.window_seconds,
            m.value(&r.usage),
        )
    };
    let items = match name {
        Some(name) => {
            let missing = || metric_not_found(metric, "pods", Some(name));
            let pod = stored(objects, &t, Some(ns), name, missing).await?;
            let r = report_for(&reports, &pod).ok_or_else(missing)?;
            vec![item(r)]
        }
        None => list(objects, &t, Some(ns), &labels, &FieldSelector::default())
            .await?
            .iter()
            .filter_map(|p| report_for(&reports, p).map(item))
            .collect(),
    };
    Ok(metric_list(items))
}

async fn service_metric(
    collector: &Collector,
    objects: &Objects,
    ns: &str,
    name: Option<&str>,
    metric: &str,
    q: &Query,
) -> ApiResult<Value> {
    let m =
        ServiceMetric::parse(metric).ok_or_else(|| metric_not_found(metric, "services", None))?;
    let labels = q.labels()?;
    let t = kind(objects, "Service")?;
    let snapshot = collector.snapshot().await?;
    let item = |svc: &str| {
        snapshot.service(ns, svc).map(|a| {
            metric_value(
                "Service",
                ns,
                svc,
                metric,
                &a.timestamp,
                a.window_seconds,
                m.value(&a.activity),
            )
        })
    };
    let items = match name {
        Some(name) => {
            let missing = || metric_not_found(metric, "services", Some(name));
            stored(objects, &t, Some(ns), name, missing).await?;
            vec![item(name).ok_or_else(missing)?]
        }
        None => list(objects, &t, Some(ns), &labels, &FieldSelector::default())
            .await?
            .iter()
            .filter_map(|svc| item(s(svc, "/metadata/name")))
            .collect(),
    };
    Ok(metric_list(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_table() {
        let own = |s: &str| Some(s.to_string());
        let cases = [
            ("/api/v1/pods", None),
            ("/apis/apps/v1", None),
            ("/apis/metrics.k8s.io", Some(Route::Group(METRICS_GROUP))),
            (
                "/apis/metrics.k8s.io/v1beta1",
                Some(Route::Resources(METRICS_GROUP)),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/nodes",
                Some(Route::Nodes { name: None }),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/nodes/n1",
                Some(Route::Nodes { name: own("n1") }),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/pods",
                Some(Route::Pods {
                    namespace: None,
                    name: None,
                }),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/d/pods",
                Some(Route::Pods {
                    namespace: own("d"),
                    name: None,
                }),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/d/pods/p",
                Some(Route::Pods {
                    namespace: own("d"),
                    name: own("p"),
                }),
            ),
            ("/apis/metrics.k8s.io/v1", Some(Route::Unknown)),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/d/pods/p/x",
                Some(Route::Unknown),
            ),
            (
                "/apis/custom.metrics.k8s.io",
                Some(Route::Group(CUSTOM_GROUP)),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2",
                Some(Route::Resources(CUSTOM_GROUP)),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/d/pods/*/requests_per_second",
                Some(Route::PodMetric {
                    namespace: "d".into(),
                    name: None,
                    metric: "requests_per_second".into(),
                }),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/d/pods/%2A/concurrency",
                Some(Route::PodMetric {
                    namespace: "d".into(),
                    name: None,
                    metric: "concurrency".into(),
                }),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/d/pods/web-1/in-flight",
                Some(Route::PodMetric {
                    namespace: "d".into(),
                    name: own("web-1"),
                    metric: "in-flight".into(),
                }),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/d/services/s/idle_seconds",
                Some(Route::ServiceMetric {
                    namespace: "d".into(),
                    name: own("s"),
                    metric: "idle_seconds".into(),
                }),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta1/namespaces/d/pods/*/x",
                Some(Route::Unknown),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), want, "{path}");
        }
    }

    #[test]
    fn discovery_documents() {
        let groups = api_groups();
        assert_eq!(groups[0]["name"], METRICS_GROUP);
        assert_eq!(
            groups[0]["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
        assert_eq!(groups[1]["versions"][0]["version"], CUSTOM_VERSION);
        let rl = resource_list(METRICS_GROUP);
        assert_eq!(rl["groupVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(rl["resources"][0]["kind"], "NodeMetrics");
        assert_eq!(rl["resources"][0]["namespaced"], false);
        assert_eq!(rl["resources"][1]["kind"], "PodMetrics");
        assert_eq!(rl["resources"][1]["verbs"], json!(["get", "list"]));
        let custom = resource_list(CUSTOM_GROUP);
        let names: Vec<&str> = custom["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/requests_per_second"));
        assert!(names.contains(&"services/connections_total"));
    }

    #[test]
    fn items_in_metrics_server_form() {
        use skiff_common::stats::{ContainerUsage, PodUsage};
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let m = NodeMetrics {
            name: "n1".into(),
            cpu_nanocores: 123_456_789,
            memory_bytes: 126_418_944,
            timestamp: "2026-01-01T00:00:00Z".into(),
            window_seconds: 10.0,
        };
        let item = single(
            node_item(&node, &m),
            "NodeMetrics",
            "metrics.k8s.io/v1beta1",
        );
        assert_eq!(
            item["usage"],
            json!({"cpu": "123456789n", "memory": "123456Ki"})
        );
        assert_eq!(item["window"], "10s");
        assert_eq!(item["metadata"]["labels"]["a"], "b");
        assert_eq!(item["kind"], "NodeMetrics");

        let pod = json!({"metadata": {"name": "p", "namespace": "d", "uid": "u1"},
            "spec": {"containers": [{"name": "app"}]}});
        let mut usage = PodUsage {
            namespace: "d".into(),
            name: "p".into(),
            uid: "u1".into(),
            cpu_nanocores: 5_000_000,
            memory_bytes: 1 << 20,
            ..PodUsage::default()
        };
        let reports = vec![PodMetrics {
            node: "n1".into(),
            usage: usage.clone(),
            timestamp: "t".into(),
            window_seconds: 10.5,
        }];
        let r = report_for(&reports, &pod).unwrap();
        let item = pod_item(&pod, r);
        assert_eq!(
            item["containers"],
            json!([{"name": "app", "usage": {"cpu": "5m", "memory": "1Mi"}}])
        );
        assert_eq!(item["window"], "10.5s");
        // A pod recreated under the same name has no metrics yet.
        let newer = json!({"metadata": {"name": "p", "namespace": "d", "uid": "u2"}});
        assert!(report_for(&reports, &newer).is_none());

        usage.containers = vec![ContainerUsage {
            name: "c".into(),
            cpu_nanocores: 1,
            memory_bytes: 2048,
        }];
        let with = PodMetrics {
            node: "n1".into(),
            usage,
            timestamp: "t".into(),
            window_seconds: 10.0,
        };
        assert_eq!(
            pod_item(&pod, &with)["containers"],
            json!([{"name": "c", "usage": {"cpu": "1n", "memory": "2Ki"}}])
        );
    }

    #[test]
    fn metric_values() {
        let v = metric_value("Pod", "d", "p", "requests_per_second", "t", 10.0, 2.5);
        assert_eq!(
            v,
            json!({"describedObject": {"kind": "Pod", "namespace": "d", "name": "p", "apiVersion": "/v1"},
                "metric": {"name": "requests_per_second"}, "timestamp": "t", "windowSeconds": 10, "value": "2500m"})
        );
        let e = metric_not_found("nope", "pods", Some("p"));
        assert_eq!(e.code, StatusCode::NOT_FOUND);
        assert_eq!(
            e.message,
            "the server could not find the metric nope for pods p"
        );
        let e = ApiError::not_found("podmetrics.metrics.k8s.io", "x");
        assert_eq!(e.message, "podmetrics.metrics.k8s.io \"x\" not found");
    }
}
