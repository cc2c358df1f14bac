//! An API server in memory, behind a real `kube::Client`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One request the fake API server answered.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub method: String,
    pub path: String,
    pub body: Value,
}

/// An API server in memory: serves Wasm images from `/v2/`, takes status
/// patches, events and deletes, and records every request.
#[derive(Clone, Default)]
pub struct FakeApi {
    /// Repository → the component bytes of its only layer.
    images: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    calls: Arc<Mutex<Vec<ApiCall>>>,
}

fn sha256(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl FakeApi {
    /// Serve `bytes` as the Wasm layer of image `repo` (any tag).
    pub fn image(&self, repo: &str, bytes: &[u8]) {
        self.images
            .lock()
            .expect("images")
            .insert(repo.into(), bytes.to_vec());
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.calls.lock().expect("calls").clone()
    }

    /// The statuses the agent wrote, in order.
    pub fn statuses(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "PATCH" && c.path.ends_with("/status"))
            .map(|c| c.body["status"].clone())
            .collect()
    }

    /// The reasons of the events recorded, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
            .map(|c| c.body["reason"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(api.answer(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    async fn answer(
        &self,
        req: http::Request<kube::client::Body>,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let raw = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        self.calls.lock().expect("calls").push(ApiCall {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        let respond = |code: u16, v: Vec<u8>, digest: Option<String>| {
            let mut r = http::Response::builder()
                .status(code)
                .header("content-type", "application/json");
            if let Some(d) = digest {
                r = r.header("docker-content-digest", d);
            }
            r.body(http_body_util::Full::new(bytes::Bytes::from(v)))
                .unwrap_or_default()
        };
        let json = |code: u16, v: Value| respond(code, v.to_string().into_bytes(), None);
        let not_found = || {
            json(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found"}),
            )
        };
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["v2", repo @ .., "manifests", _]) => {
                let Some(layer) = self
                    .images
                    .lock()
                    .expect("images")
                    .get(&repo.join("/"))
                    .cloned()
                else {
                    return not_found();
                };
                let config = b"{}".to_vec();
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                        "digest": sha256(&config), "size": config.len()},
                    "layers": [{"mediaType": "application/wasm", "digest": sha256(&layer),
                        "size": layer.len()}],
                })
                .to_string()
                .into_bytes();
                let d = sha256(&manifest);
                respond(200, manifest, Some(d))
            }
            ("GET", ["v2", repo @ .., "blobs", digest]) => {
                match self.images.lock().expect("images").get(&repo.join("/")) {
                    Some(l) if sha256(l) == *digest => respond(200, l.clone(), None),
                    _ => not_found(),
                }
            }
            ("PATCH", ["api", "v1", "namespaces", ns, "pods", name, "status"])
            | ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => json(
                200,
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": ns}}),
            ),
            ("POST", ["api", "v1", "namespaces", _, "events"]) => json(201, body),
            ("PATCH", ["api", "v1", "namespaces", ns, "events", name]) => json(
                200,
                json!({"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": ns},
                    "involvedObject": {}}),
            ),
            _ => not_found(),
        }
    }
}
