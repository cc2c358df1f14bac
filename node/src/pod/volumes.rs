//! Pod volumes as host directories the Wasm guest sees as preopened
//! directories (and containers as bind mounts): `configMap`, `secret`,
//! `downwardAPI`, `projected` (of those three and `serviceAccountToken`) and
//! `emptyDir`, each under `<pods dir>/<pod uid>/volumes/<name>`.
//!
//! **A volume's directory belongs to the pod: it is shared by all its
//! containers (init containers too) and removed with the pod. ConfigMap,
//! Secret and downward API volumes are always mounted read-only. Secret and
//! projected volumes (tokens) live in memory (tmpfs on a node), as the
//! kubelet keeps them: they never reach the node's disk.**

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, PodSpec, ServiceAccountTokenProjection, Volume,
};
use skiff_runtimes::Mount;

use super::env::{ConfigError, Kind, PodFacts, Refs, Sources};
use super::subpath;
use super::tokens::TokenRef;

/// The tmpfs of a Secret or projected volume.
const SECRET_VOLUME_SIZE: u64 = 64 << 20;

/// A volume that cannot be set up (event `FailedMount`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {reason}")]
pub struct VolumeError {
    pub volume: String,
    pub reason: String,
}

/// The host mounts of pod volumes: Secret and projected volumes in memory
/// and sub-paths pinned by descriptor on a node (see `host::mounts::Tmpfs`);
/// plain directories where nothing may be mounted (tests).
pub trait VolumeMedia: Send + Sync {
    /// Make the volume directory `dir` memory-backed, at most `size` bytes
    /// (idempotent).
    fn memory(&self, dir: &Path, size: u64) -> Result<(), String>;
    /// Make what `source` resolved to visible at `target` (a path the pod
    /// cannot change) and return the path to hand the runtime.
    fn pin(&self, source: &subpath::Resolved, target: &Path) -> Result<PathBuf, String>;
    /// Undo every mount under the pod directory `dir`, before it is removed.
    fn release(&self, dir: &Path);
}

/// Volumes on disk, like any directory; a sub-path is handed on as the path
/// its descriptor resolved to.
pub struct Disk;

impl VolumeMedia for Disk {
    fn memory(&self, _dir: &Path, _size: u64) -> Result<(), String> {
        Ok(())
    }

    fn pin(&self, source: &subpath::Resolved, _target: &Path) -> Result<PathBuf, String> {
        std::fs::read_link(subpath::proc_path(&source.fd)).map_err(|e| e.to_string())
    }

    fn release(&self, _dir: &Path) {}
}

/// The directory of one pod's files (volumes) on the node.
#[derive(Debug, Clone)]
pub struct PodDir(pub PathBuf);

impl PodDir {
    /// The directory of the volume `name`; a name that is not one plain path
    /// component (`/tmp/x`, `..`, `a/b`) is refused, so a manifest never names
    /// a place outside the pod's directory.
    pub fn volume(&self, name: &str) -> Result<PathBuf, String> {
        plain_name(name).map_err(|why| format!("volume name {name:?} {why}"))?;
        Ok(self.0.join("volumes").join(name))
    }

    /// Remove everything the pod had on disk (and in memory).
    pub fn remove(&self, media: &dyn VolumeMedia) {
        media.release(&self.0);
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove pod volumes");
        }
    }
}

/// The ConfigMaps and Secrets a pod's volumes refer to.
pub fn refs(spec: &PodSpec) -> Refs {
    let mut r = Refs::default();
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            r.add(Kind::ConfigMap, &cm.name);
        }
        if let Some(n) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            r.add(Kind::Secret, n);
        }
        for s in v
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(cm) = &s.config_map {
                r.add(Kind::ConfigMap, &cm.name);
            }
            if let Some(sec) = &s.secret {
                r.add(Kind::Secret, &sec.name);
            }
            if let Some(t) = &s.service_account_token {
                r.tokens
                    .insert(TokenRef::of(t.audience.as_deref(), t.expiration_seconds));
            }
        }
    }
    r
}

fn err(volume: &str, reason: impl ToString) -> VolumeError {
    VolumeError {
        volume: volume.to_string(),
        reason: reason.to_string(),
    }
}

/// Files of an object-backed volume: every key, or the listed `items`.
fn object_files(
    sources: &Sources,
    kind: Kind,
    name: &str,
    items: &[KeyToPath],
    optional: bool,
    files: &mut BTreeMap<PathBuf, Vec<u8>>,
) -> Result<(), String> {
    let Some(data) = sources
        .data(kind, name, optional)
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    if items.is_empty() {
        for (k, v) in data {
            files.insert(PathBuf::from(k), v.clone());
        }
        return Ok(());
    }
    for item in items {
        let (key, path) = (item.key.as_str(), item.path.as_str());
        match data.get(key) {
            Some(v) => {
                files.insert(PathBuf::from(path), v.clone());
            }
            None if optional => {}
            None => {
                return Err(format!(
                    "{} references non-existent config key: {key}",
                    kind.name()
                ));
            }
        }
    }
    Ok(())
}

/// Files of a downward API volume.
fn downward_files(
    facts: &PodFacts,
    items: &[DownwardAPIVolumeFile],
    files: &mut BTreeMap<PathBuf, Vec<u8>>,
) -> Result<(), ConfigError> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            facts.field(&f.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            facts.resource(
                None,
                r.container_name.as_deref(),
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
            )?
        } else {
            continue;
        };
        files.insert(PathBuf::from(&item.path), value.into_bytes());
    }
    Ok(())
}

/// Whether `name` can be one component of a host path: not empty, not `.` or
/// `..`, no `/` and no NUL. The API admits only DNS labels; this guards the
/// host against anything that reached the node another way.
/// The file of a `serviceAccountToken` projection.
fn token_file(
    sources: &Sources,
    src: &ServiceAccountTokenProjection,
    files: &mut BTreeMap<PathBuf, Vec<u8>>,
) -> Result<(), String> {
    let path = PathBuf::from(&src.path);
    safe_relative(&path)?;
    let r = TokenRef::of(src.audience.as_deref(), src.expiration_seconds);
    let token = sources
        .tokens
        .get(&r)
        .ok_or_else(|| "the service account token is not available yet".to_string())?;
    files.insert(path, token.clone().into_bytes());
    Ok(())
}

pub fn plain_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err("is not a plain name (one path component)");
    }
    Ok(())
}

/// A relative path with no `..`, or an error.
fn safe_relative(p: &Path) -> Result<(), String> {
    if p.as_os_str().is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("invalid path {:?} in the volume", p.display()));
    }
    Ok(())
}

/// Create or refresh every volume of the pod in `dir`.
pub fn materialise(
    dir: &PodDir,
    spec: &PodSpec,
    facts: &PodFacts,
    sources: &Sources,
    media: &dyn VolumeMedia,
) -> Result<(), VolumeError> {
    for v in spec.volumes.iter().flatten() {
        let name = v.name.as_str();
        let path = dir.volume(name).map_err(|e| err(name, e))?;
        let optional = |o: Option<bool>| o == Some(true);
        let mut files = BTreeMap::new();
        if let Some(ed) = &v.empty_dir {
            std::fs::create_dir_all(&path)
                .map_err(|e| err(name, format!("create {}: {e}", path.display())))?;
            if ed.medium.as_deref() == Some("Memory") {
                // A tmpfs of `sizeLimit` (else the tmpfs default, half the
                // node's memory); what it holds counts as the pod's memory.
                let size = ed
                    .size_limit
                    .as_ref()
                    .and_then(|q| skiff_common::quantity::parse(&q.0))
                    .map_or(0, |b| b as u64);
                media.memory(&path, size).map_err(|e| err(name, e))?;
            }
            continue;
        } else if let Some(src) = &v.config_map {
            object_files(
                sources,
                Kind::ConfigMap,
                &src.name,
                src.items.as_deref().unwrap_or_default(),
                optional(src.optional),
                &mut files,
            )
            .map_err(|e| err(name, e))?;
        } else if let Some(src) = &v.secret {
            let n = src.secret_name.as_deref().unwrap_or("");
            object_files(
                sources,
                Kind::Secret,
                n,
                src.items.as_deref().unwrap_or_default(),
                optional(src.optional),
                &mut files,
            )
            .map_err(|e| err(name, e))?;
        } else if let Some(src) = &v.downward_api {
            downward_files(facts, src.items.as_deref().unwrap_or_default(), &mut files)
                .map_err(|e| err(name, e))?;
        } else if let Some(src) = &v.projected {
            for s in src.sources.iter().flatten() {
                let r = if let Some(o) = &s.config_map {
                    object_files(
                        sources,
                        Kind::ConfigMap,
                        &o.name,
                        o.items.as_deref().unwrap_or_default(),
                        optional(o.optional),
                        &mut files,
                    )
                } else if let Some(o) = &s.secret {
                    object_files(
                        sources,
                        Kind::Secret,
                        &o.name,
                        o.items.as_deref().unwrap_or_default(),
                        optional(o.optional),
                        &mut files,
                    )
                } else if let Some(o) = &s.downward_api {
                    downward_files(facts, o.items.as_deref().unwrap_or_default(), &mut files)
                        .map_err(|e| e.to_string())
                } else if let Some(o) = &s.service_account_token {
                    token_file(sources, o, &mut files)
                } else {
                    Err("projected sources other than configMap, secret, downwardAPI and serviceAccountToken are not supported".to_string())
                };
                r.map_err(|e| err(name, e))?;
            }
        } else {
            return Err(err(
                name,
                format!(
                    "volume type {:?} is not supported for Wasm pods (configMap, secret, emptyDir, downwardAPI and projected are)",
                    volume_type(v)
                ),
            ));
        }
        if v.secret.is_some() || v.projected.is_some() {
            std::fs::create_dir_all(&path)
                .map_err(|e| err(name, format!("create {}: {e}", path.display())))?;
            media
                .memory(&path, SECRET_VOLUME_SIZE)
                .map_err(|e| err(name, e))?;
        }
        super::atomic::write(&path, &files).map_err(|e| err(name, e))?;
    }
    Ok(())
}

/// The field naming a volume's type, as the API writes it (`hostPath`,
/// `persistentVolumeClaim`, ...): the first one set besides `name`.
fn volume_type(v: &Volume) -> String {
    // Serialised rather than listed, so a type added to the API is named too.
    serde_json::to_value(v)
        .ok()
        .and_then(|o| {
            o.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_default()
}

/// Whether the volume's kind is always read-only.
fn read_only_kind(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

/// The container's `volumeMounts` as host paths (preopened directories of a
/// Wasm pod, bind mounts of a container). A `subPath` is resolved beneath
/// its volume without following symlinks and pinned by `media` under
/// `<pod dir>/subpaths/<container>/<mount index>`.
pub fn mounts(
    dir: &PodDir,
    spec: &PodSpec,
    container: &Container,
    media: &dyn VolumeMedia,
) -> Result<Vec<Mount>, ConfigError> {
    let mut out = Vec::new();
    for (i, m) in container.volume_mounts.iter().flatten().enumerate() {
        let name = m.name.as_str();
        let Some(vol) = spec.volumes.iter().flatten().find(|v| v.name == name) else {
            return Err(ConfigError::Invalid(format!(
                "volumeMount {name:?} names no volume of the pod"
            )));
        };
        let guest = m.mount_path.as_str();
        if !guest.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "mountPath {guest:?} of volume {name:?} must be absolute"
            )));
        }
        let mut host = dir.volume(name).map_err(ConfigError::Invalid)?;
        let sub = m.sub_path.as_deref().unwrap_or("");
        if !sub.is_empty() {
            let invalid = |e: String| {
                ConfigError::Invalid(format!(
                    "failed to prepare subPath for volumeMount {name:?} of container {:?}: {e}",
                    container.name
                ))
            };
            safe_relative(Path::new(sub)).map_err(invalid)?;
            let resolved =
                subpath::open_beneath(&host, sub, vol.empty_dir.is_some()).map_err(invalid)?;
            plain_name(&container.name).map_err(|why| invalid(format!("container name {why}")))?;
            let target = dir
                .0
                .join("subpaths")
                .join(&container.name)
                .join(i.to_string());
            host = media.pin(&resolved, &target).map_err(invalid)?;
        }
        out.push(Mount {
            host_path: host,
            guest_path: guest.to_string(),
            read_only: read_only_kind(vol) || m.read_only == Some(true),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn spec(v: Value) -> PodSpec {
        serde_json::from_value(v).expect("a pod spec")
    }

    fn container(v: Value) -> Container {
        serde_json::from_value(v).expect("a container")
    }

    fn facts() -> PodFacts {
        PodFacts {
            metadata: serde_json::from_value(
                json!({"name": "p", "namespace": "ns", "labels": {"app": "x"}}),
            )
            .expect("metadata"),
            spec: spec(
                json!({"containers": [{"name": "c", "resources": {"limits": {"memory": "2Mi"}}}]}),
            ),
            pod_ip: Some("10.88.0.9".into()),
            host_ip: "127.0.0.1".into(),
            node_cpu_millis: 2000,
            node_memory: 1 << 30,
            api_service: None,
        }
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.config_maps.insert(
            "cfg".into(),
            Some(
                [
                    ("a".to_string(), b"1".to_vec()),
                    ("b".to_string(), b"2".to_vec()),
                ]
                .into(),
            ),
        );
        s.config_maps.insert("gone".into(), None);
        s.secrets.insert(
            "sec".into(),
            Some([("token".to_string(), b"s3cret".to_vec())].into()),
        );
        s
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn volumes_materialise_and_mount() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PodDir(tmp.path().join("uid"));
        let json_spec = json!({"volumes": [
            {"name": "all", "configMap": {"name": "cfg"}},
            {"name": "some", "configMap": {"name": "cfg", "items": [{"key": "b", "path": "sub/bee"}]}},
            {"name": "opt", "configMap": {"name": "gone", "optional": true}},
            {"name": "sec", "secret": {"secretName": "sec"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Ki"}}]}},
            {"name": "proj", "projected": {"sources": [
                {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "a"}]}},
                {"secret": {"name": "sec"}}]}},
        ]});
        let spec1 = spec(json_spec.clone());
        materialise(&dir, &spec1, &facts(), &sources(), &Disk).unwrap();
        assert_eq!(read(dir.volume("all").unwrap().join("a")), "1");
        assert_eq!(read(dir.volume("all").unwrap().join("b")), "2");
        assert_eq!(read(dir.volume("some").unwrap().join("sub/bee")), "2");
        assert!(!dir.volume("some").unwrap().join("a").exists());
        assert!(dir.volume("opt").unwrap().is_dir());
        assert_eq!(read(dir.volume("sec").unwrap().join("token")), "s3cret");
        assert!(dir.volume("scratch").unwrap().is_dir());
        assert_eq!(read(dir.volume("info").unwrap().join("name")), "p");
        assert_eq!(
            read(dir.volume("info").unwrap().join("labels")),
            "app=\"x\""
        );
        assert_eq!(read(dir.volume("info").unwrap().join("mem")), "2048");
        assert_eq!(read(dir.volume("proj").unwrap().join("token")), "s3cret");
        assert_eq!(read(dir.volume("proj").unwrap().join("a")), "1");

        // A refresh drops keys that went away and keeps emptyDir contents.
        std::fs::write(dir.volume("scratch").unwrap().join("keep"), "k").unwrap();
        let mut fewer = sources();
        fewer.config_maps.insert(
            "cfg".into(),
            Some([("a".to_string(), b"one".to_vec())].into()),
        );
        let spec2 = spec(
            json!({"volumes": [json_spec["volumes"][0].clone(), json_spec["volumes"][4].clone()]}),
        );
        materialise(&dir, &spec2, &facts(), &fewer, &Disk).unwrap();
        assert_eq!(read(dir.volume("all").unwrap().join("a")), "one");
        assert!(!dir.volume("all").unwrap().join("b").exists());
        assert_eq!(read(dir.volume("scratch").unwrap().join("keep")), "k");

        let c = container(json!({"name": "c", "volumeMounts": [
            {"name": "all", "mountPath": "/etc/config"},
            {"name": "scratch", "mountPath": "/data"},
            {"name": "scratch", "mountPath": "/ro", "readOnly": true},
            {"name": "scratch", "mountPath": "/sub", "subPath": "x/y"},
        ]}));
        let m = mounts(&dir, &spec1, &c, &Disk).unwrap();
        assert_eq!(m.len(), 4);
        assert!(m[0].read_only && m[0].guest_path == "/etc/config");
        assert!(!m[1].read_only);
        assert!(m[2].read_only);
        assert!(m[3].host_path.ends_with("scratch/x/y") && m[3].host_path.is_dir());

        dir.remove(&Disk);
        assert!(!tmp.path().join("uid").exists());
    }

    #[test]
    fn names_that_are_not_one_path_component_touch_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PodDir(tmp.path().join("uid"));
        let outside = tmp.path().join("outside");
        for name in [
            outside.to_str().unwrap(),
            "../outside",
            "a/b",
            "..",
            ".",
            "",
        ] {
            let spec = spec(json!({"volumes": [{"name": name, "emptyDir": {}}]}));
            let e = materialise(&dir, &spec, &facts(), &sources(), &Disk).unwrap_err();
            assert!(e.to_string().contains("is not a plain name"), "{name}: {e}");
            let m = container(json!({"volumeMounts": [{"name": name, "mountPath": "/x"}]}));
            assert!(mounts(&dir, &spec, &m, &Disk).is_err(), "{name}");
        }
        assert!(!outside.exists() && !tmp.path().join("uid").exists());
        assert!(plain_name("data-1").is_ok());
    }

    #[test]
    fn volume_errors_name_the_cause() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PodDir(tmp.path().join("uid"));
        let cases = [
            (
                json!({"name": "v", "configMap": {"name": "gone"}}),
                "MountVolume.SetUp failed for volume \"v\" : configmap \"gone\" not found",
            ),
            (
                json!({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}}),
                "MountVolume.SetUp failed for volume \"v\" : configmap references non-existent config key: zz",
            ),
            (
                json!({"name": "v", "secret": {"secretName": "cfg"}}),
                "MountVolume.SetUp failed for volume \"v\" : secret \"cfg\" not found",
            ),
            (
                json!({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "../x"}]}}),
                "MountVolume.SetUp failed for volume \"v\" : invalid path \"../x\" in the volume",
            ),
            (
                json!({"name": "v", "hostPath": {"path": "/etc"}}),
                "MountVolume.SetUp failed for volume \"v\" : volume type \"hostPath\" is not supported for Wasm pods (configMap, secret, emptyDir, downwardAPI and projected are)",
            ),
        ];
        for (v, want) in cases {
            let spec = spec(json!({ "volumes": [v] }));
            let e = materialise(&dir, &spec, &facts(), &sources(), &Disk).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
        let spec = spec(json!({"volumes": [{"name": "v", "emptyDir": {}}]}));
        let bad = container(json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}));
        assert!(mounts(&dir, &spec, &bad, &Disk).is_err());
    }
}
