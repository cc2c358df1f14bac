//! Container images into containerd: blobs into the content store (verified by
//! containerd against their digest), layers unpacked one on another into
//! snapshots named by their chain ID, as containerd's own unpacker names them.
//!
//! **An image is usable only once every layer's unpacked digest matches the
//! image config's `rootfs.diff_ids`; a layer already unpacked is never
//! unpacked again.**

use std::sync::Arc;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, Image, InfoRequest, UpdateImageRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{OciError, OciRuntime};

/// Layer media types the diff service can apply, and config media types of a
/// container image (shared with the scheduler through skiff-common).
pub use skiff_common::media::{
    CONTAINER_CONFIG_TYPES as CONFIG_TYPES, CONTAINER_LAYER_TYPES as LAYER_TYPES,
};

/// One content-addressed blob.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Arc<Vec<u8>>,
}

impl Blob {
    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as i64,
            annotations: Default::default(),
        }
    }
}

/// A container image as fetched from a registry: manifest, config, layers.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// The reference the pod named.
    pub reference: String,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// What the image config says a container runs by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// The strings of a JSON array (others skipped; not an array: none).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl OciImage {
    fn config_json(&self) -> Result<Value, OciError> {
        serde_json::from_slice(&self.config.bytes).map_err(|e| OciError::Image {
            image: self.reference.clone(),
            reason: format!("the image config is not JSON: {e}"),
        })
    }

    /// The config's defaults (Entrypoint, Cmd, Env, WorkingDir, User).
    pub fn defaults(&self) -> Result<ImageDefaults, OciError> {
        let v = self.config_json()?;
        let c = v.get("config").cloned().unwrap_or(Value::Null);
        let text = |k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(ImageDefaults {
            entrypoint: strings(c.get("Entrypoint")),
            cmd: strings(c.get("Cmd")),
            env: strings(c.get("Env"))
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                })
                .collect(),
            working_dir: text("WorkingDir"),
            user: text("User"),
        })
    }

    /// The uncompressed digests of the layers, checked against the layer count.
    pub fn diff_ids(&self) -> Result<Vec<String>, OciError> {
        let bad = |reason: String| OciError::Image {
            image: self.reference.clone(),
            reason,
        };
        let v = self.config_json()?;
        let ids = strings(v.pointer("/rootfs/diff_ids"));
        if ids.is_empty() {
            return Err(bad("the image config lists no rootfs.diff_ids".into()));
        }
        if ids.len() != self.layers.len() {
            return Err(bad(format!(
                "the image has {} layers but its config lists {} diff_ids",
                self.layers.len(),
                ids.len()
            )));
        }
        if let Some(l) = self
            .layers
            .iter()
            .find(|l| !LAYER_TYPES.contains(&l.media_type.as_str()))
        {
            return Err(bad(format!(
                "layer {} has media type {:?}, which is not a filesystem layer",
                l.digest, l.media_type
            )));
        }
        Ok(ids)
    }
}

/// The chain IDs of a stack of layers (OCI image spec, "ChainID"):
/// `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let h = Sha256::digest(format!("{prev} {d}").as_bytes());
                format!(
                    "sha256:{}",
                    h.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )
            }
        };
        out.push(next);
    }
    out
}

/// A key no other unpack uses at the same time.
fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{t}-{n}", std::process::id())
}

impl OciRuntime {
    /// Put the image into containerd and unpack it; returns the chain ID of its
    /// top layer (the parent of a container's snapshot).
    pub async fn import(&self, img: &OciImage) -> Result<String, OciError> {
        let diff_ids = img.diff_ids()?;
        let chain = chain_ids(&diff_ids);
        let top = chain.last().cloned().unwrap_or_default();
        let _one = self.unpacking.lock().await;
        let unpacked = self.snapshot_exists(&top).await?;
        let key = format!("{}@{}", img.reference, img.manifest.digest);
        if unpacked && self.imported.lock().await.contains(&key) {
            return Ok(top);
        }
        for blob in std::iter::once(&img.manifest)
            .chain(std::iter::once(&img.config))
            .chain(&img.layers)
        {
            self.write_blob(blob).await?;
        }
        self.name_image(img).await?;
        self.imported.lock().await.insert(key);
        if unpacked {
            return Ok(top);
        }
        for (i, layer) in img.layers.iter().enumerate() {
            if self.snapshot_exists(&chain[i]).await? {
                continue;
            }
            let parent = if i == 0 { "" } else { chain[i - 1].as_str() };
            self.unpack_layer(img, layer, parent, &chain[i], &diff_ids[i])
                .await?;
        }
        Ok(top)
    }

    /// An image record naming the manifest, so `ctr images ls` (and `ctr run`)
    /// see what Skiff imported. A record of the same name is updated.
    async fn name_image(&self, img: &OciImage) -> Result<(), OciError> {
        let image = Image {
            name: img.reference.clone(),
            target: Some(img.manifest.descriptor()),
            ..Default::default()
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let create = CreateImageRequest {
            image: Some(image.clone()),
            ..Default::default()
        };
        match images.create(self.request(create, true)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                let update = UpdateImageRequest {
                    image: Some(image),
                    ..Default::default()
                };
                images
                    .update(self.request(update, true))
                    .await
                    .map(|_| ())
                    .map_err(OciError::call("image update"))
            }
            Err(s) => Err(OciError::call("image create")(s)),
        }
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, OciError> {
        let req = StatSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.to_string(),
        };
        match SnapshotsClient::new(self.channel.clone())
            .stat(self.request(req, false))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(OciError::call("snapshot stat")(s)),
        }
    }

    /// Write one blob into the content store unless it is there already.
    async fn write_blob(&self, blob: &Blob) -> Result<(), OciError> {
        let mut content = ContentClient::new(self.channel.clone());
        let info = InfoRequest {
            digest: blob.digest.clone(),
        };
        match content.info(self.request(info, true)).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(OciError::call("content info")(s)),
        }
        let reference = unique("skiff-blob");
        let total = blob.bytes.len() as i64;
        let msg = |action: WriteAction, offset: usize, data: &[u8]| WriteContentRequest {
            action: action as i32,
            r#ref: reference.clone(),
            total,
            expected: blob.digest.clone(),
            offset: offset as i64,
            data: data.to_vec(),
            labels: Default::default(),
        };
        let mut msgs = Vec::new();
        for (i, chunk) in blob.bytes.chunks(1 << 20).enumerate() {
            msgs.push(msg(WriteAction::Write, i << 20, chunk));
        }
        msgs.push(msg(WriteAction::Commit, blob.bytes.len(), &[]));
        match content
            .write(self.request(futures::stream::iter(msgs), true))
            .await
        {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(s) if s.code() == Code::AlreadyExists => break,
                        Err(s) => return Err(OciError::call("content write")(s)),
                    }
                }
                Ok(())
            }
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(OciError::call("content write")(s)),
        }
    }

    async fn unpack_layer(
        &self,
        img: &OciImage,
        layer: &Blob,
        parent: &str,
        chain_id: &str,
        diff_id: &str,
    ) -> Result<(), OciError> {
        let mut snaps = SnapshotsClient::new(self.channel.clone());
        let key = unique("skiff-extract");
        let prep = PrepareSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.clone(),
            parent: parent.to_string(),
            labels: Default::default(),
        };
        let mounts = snaps
            .prepare(self.request(prep, true))
            .await
            .map_err(OciError::call("snapshot prepare"))?
            .into_inner()
            .mounts;
        let applied = DiffClient::new(self.channel.clone())
            .apply(self.request(
                ApplyRequest {
                    diff: Some(layer.descriptor()),
                    mounts,
                    payloads: Default::default(),
                    sync_fs: false,
                },
                true,
            ))
            .await;
        let result = match applied {
            Ok(r) => {
                let got = r.into_inner().applied.map(|d| d.digest).unwrap_or_default();
                if got == diff_id {
                    let commit = CommitSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        name: chain_id.to_string(),
                        key: key.clone(),
                        labels: Default::default(),
                    };
                    match snaps.commit(self.request(commit, true)).await {
                        Ok(_) => return Ok(()),
                        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
                        Err(s) => Err(OciError::call("snapshot commit")(s)),
                    }
                } else {
                    Err(OciError::Image {
                        image: img.reference.clone(),
                        reason: format!(
                            "layer {} unpacks to {got}, but the config says {diff_id}",
                            layer.digest
                        ),
                    })
                }
            }
            Err(s) => Err(OciError::Image {
                image: img.reference.clone(),
                reason: format!("unpack layer {}: {}", layer.digest, s.message()),
            }),
        };
        let remove = RemoveSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key,
        };
        let _ = snaps.remove(self.request(remove, true)).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let want = Sha256::digest(b"sha256:aaaa sha256:bbbb");
        assert_eq!(
            ids[1],
            format!(
                "sha256:{}",
                want.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )
        );
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn defaults_and_diff_ids_come_from_the_config() {
        let config = serde_json::json!({
            "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["PATH=/bin", "EMPTY"],
                       "WorkingDir": "/srv", "User": ""},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:11"]}
        });
        let blob = |t: &str, b: Vec<u8>| Blob {
            media_type: t.into(),
            digest: "sha256:x".into(),
            bytes: Arc::new(b),
        };
        let mut img = OciImage {
            reference: "busybox".into(),
            manifest: blob("application/vnd.oci.image.manifest.v1+json", vec![]),
            config: blob(CONFIG_TYPES[0], serde_json::to_vec(&config).unwrap()),
            layers: vec![blob(LAYER_TYPES[0], vec![])],
        };
        let d = img.defaults().unwrap();
        assert_eq!(d.entrypoint, vec!["/bin/sh"]);
        assert_eq!(
            d.env,
            vec![
                ("PATH".into(), "/bin".into()),
                ("EMPTY".into(), String::new())
            ]
        );
        assert_eq!(d.working_dir.as_deref(), Some("/srv"));
        assert_eq!(d.user, None);
        assert_eq!(img.diff_ids().unwrap(), vec!["sha256:11"]);
        img.layers.push(blob(LAYER_TYPES[0], vec![]));
        assert!(img.diff_ids().unwrap_err().to_string().contains("2 layers"));
        img.layers = vec![blob("application/wasm", vec![])];
        assert!(
            img.diff_ids()
                .unwrap_err()
                .to_string()
                .contains("not a filesystem layer")
        );
    }
}
