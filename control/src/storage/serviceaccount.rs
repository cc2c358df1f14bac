//! ServiceAccount admission of a new pod, as Kubernetes' plugin does it:
//! the account defaults to `default`; a named account must exist; unless
//! the pod or its account opts out (`automountServiceAccountToken: false`)
//! or a container already mounts something there, every container gets a
//! projected `kube-api-access-*` volume at
//! `/var/run/secrets/kubernetes.io/serviceaccount` with the account's token
//! (bound to the pod, refreshed by the node), the cluster CA (`ca.crt`) and
//! the namespace.
//!
//! **A pod of the `default` account may be created before that account is:
//! the account controller makes it moments after the namespace, and the node
//! waits for it before it asks for the token.**

use serde_json::{Value, json};

use crate::model::status::{ApiError, ApiResult};

use super::Objects;

/// The ServiceAccount every namespace has.
pub const DEFAULT_ACCOUNT: &str = "default";
/// The ConfigMap with the cluster CA every namespace has.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// Where the token, `ca.crt` and `namespace` appear in every container.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How long the node's token lives (Kubernetes: one hour and 7 s; the
/// node refreshes it at 80 %).
pub const TOKEN_SECONDS: i64 = 3607;

impl Objects {
    /// Default the pod's account, check it exists, and mount its token.
    pub(super) async fn admit_service_account(&self, ns: &str, pod: &mut Value) -> ApiResult<()> {
        let name = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .or_else(|| {
                pod.pointer("/spec/serviceAccount")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or(DEFAULT_ACCOUNT)
            .to_string();
        let account = match self.registry.by_kind("v1", "ServiceAccount") {
            // This replica's copy first (no Raft round trip per pod); only a
            // miss asks the leader, so an account made a moment ago counts.
            Some(t) => {
                let found = match self.get_local(t, Some(ns), &name) {
                    Some(sa) => Ok(sa),
                    None => self.get(t, Some(ns), &name).await,
                };
                match found {
                    Ok(sa) => Some(sa),
                    Err(e) if e.reason == "NotFound" && name == DEFAULT_ACCOUNT => None,
                    Err(e) if e.reason == "NotFound" => {
                        let pod_name = crate::model::meta::name_of(pod);
                        return Err(ApiError::forbidden(format!(
                            "pods {pod_name:?} is forbidden: error looking up service account {ns}/{name}: serviceaccount {name:?} not found"
                        )));
                    }
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let spec = &mut pod["spec"];
        spec["serviceAccountName"] = json!(name);
        spec["serviceAccount"] = json!(name);
        let automount = spec
            .get("automountServiceAccountToken")
            .and_then(Value::as_bool)
            .or_else(|| {
                account
                    .as_ref()
                    .and_then(|a| a.get("automountServiceAccountToken"))
                    .and_then(Value::as_bool)
            })
            .unwrap_or(true);
        if !automount || mounts_there(spec) {
            return Ok(());
        }
        let volume = format!("kube-api-access-{}", super::admission::random_suffix());
        let projected = json!({
            "name": volume,
            "projected": {
                "defaultMode": 0o644,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                    {"configMap": {"name": ROOT_CA_CONFIGMAP,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ],
            },
        });
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(v) => v.push(projected),
            None => spec["volumes"] = json!([projected]),
        }
        let mount = json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH});
        for list in ["initContainers", "containers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                    Some(m) => m.push(mount.clone()),
                    None => c["volumeMounts"] = json!([mount.clone()]),
                }
            }
        }
        Ok(())
    }
}

/// Whether a container already mounts a volume at [`MOUNT_PATH`].
fn mounts_there(spec: &Value) -> bool {
    ["initContainers", "containers"].iter().any(|list| {
        spec.get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c.get("volumeMounts").and_then(Value::as_array))
            .flatten()
            .any(|m| {
                m.get("mountPath")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.trim_end_matches('/') == MOUNT_PATH)
            })
    })
}
