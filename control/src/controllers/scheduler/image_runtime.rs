//! The runtime a pod's images need when it names no RuntimeClass: a Wasm
//! artifact needs nothing special (every node runs Wasm), a container image
//! needs a node offering `runc`. Images are looked up in the cluster's own
//! image store; an image it does not hold restricts nothing.
//!
//! **Only images the store holds and recognises add a requirement.**

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use skiff_common::media::{ImageKind, WASM_ARCHES, kind_of};

use crate::imagestore::{Images, Reference};

/// The handler a manifest (or index) needs: `wasmtime`, `runc`, or unknown.
pub fn handler_of_manifest(bytes: &[u8]) -> Option<&'static str> {
    let m: Value = serde_json::from_slice(bytes).ok()?;
    fn text<'a>(v: &'a Value, p: &str) -> &'a str {
        v.pointer(p).and_then(Value::as_str).unwrap_or("")
    }
    if let Some(list) = m.get("manifests").and_then(Value::as_array) {
        let wasm = list
            .iter()
            .any(|e| WASM_ARCHES.contains(&text(e, "/platform/architecture")));
        return Some(if wasm { "wasmtime" } else { "runc" });
    }
    let layers: Vec<&str> = m
        .get("layers")?
        .as_array()?
        .iter()
        .map(|l| text(l, "/mediaType"))
        .collect();
    match kind_of(text(&m, "/config/mediaType"), &layers)? {
        ImageKind::Wasm => Some("wasmtime"),
        ImageKind::Container => Some("runc"),
    }
}

/// `runc` when any of the pod's images is a container image in the store.
pub async fn handler_for(
    images: &Images,
    pod: &Pod,
    cache: &mut HashMap<String, Option<&'static str>>,
) -> Option<String> {
    let mut needs_runc = false;
    if let Some(spec) = &pod.spec {
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            let Some(image) = c.image.as_deref() else {
                continue;
            };
            if !cache.contains_key(image) {
                let found = match Reference::parse(image) {
                    Ok(r) => {
                        let reference = r
                            .digest
                            .clone()
                            .or(r.tag.clone())
                            .unwrap_or_else(|| "latest".into());
                        images
                            .get_manifest(&r.repository, &reference)
                            .await
                            .ok()
                            .and_then(|m| handler_of_manifest(&m.bytes))
                    }
                    Err(_) => None,
                };
                cache.insert(image.to_string(), found);
            }
            needs_runc |= cache.get(image).copied().flatten() == Some("runc");
        }
    }
    needs_runc.then(|| "runc".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_table() {
        let m = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
        let wasm = m(
            serde_json::json!({"config": {"mediaType": "application/vnd.wasm.config.v0+json"},
            "layers": [{"mediaType": "application/wasm"}]}),
        );
        let oci = m(
            serde_json::json!({"config": {"mediaType": "application/vnd.oci.image.config.v1+json"},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar"}]}),
        );
        let odd = m(
            serde_json::json!({"config": {"mediaType": "x/y"}, "layers": [{"mediaType": "a/b"}]}),
        );
        let index = m(serde_json::json!({"manifests": [{"platform": {"architecture": "amd64"}}]}));
        assert_eq!(handler_of_manifest(&wasm), Some("wasmtime"));
        assert_eq!(handler_of_manifest(&oci), Some("runc"));
        assert_eq!(handler_of_manifest(&odd), None);
        assert_eq!(handler_of_manifest(&index), Some("runc"));
        assert_eq!(handler_of_manifest(b"nope"), None);
    }
}
