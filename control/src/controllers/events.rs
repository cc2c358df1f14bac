//! Events controllers record about the objects they act on.

use k8s_openapi::api::core::v1::Event;
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};

/// Record a `Normal` (or `Warning`) event about `obj` from `component`;
/// failures are logged, never returned (an event is not worth a retry).
pub async fn record<K>(
    client: &kube::Client,
    component: &str,
    obj: &K,
    warning: bool,
    reason: &str,
    message: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let now = jiff::Timestamp::now().to_string();
    let ev = serde_json::json!({
        "metadata": {"generateName": format!("{}.", obj.name_any()), "namespace": ns},
        "involvedObject": {
            "kind": K::kind(&()), "apiVersion": K::api_version(&()),
            "namespace": ns, "name": obj.name_any(), "uid": obj.meta().uid,
        },
        "reason": reason, "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    tracing::info!(object = %format!("{}/{}", ns, obj.name_any()), reason, message, "event");
    let Ok(ev) = serde_json::from_value::<Event>(ev) else {
        return;
    };
    if let Err(e) = Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::debug!(error = %e, "cannot record event");
    }
}
