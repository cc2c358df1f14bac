//! The agent's on-disk cache of what it last read from the API, so that a
//! node cut off from every server keeps working from its last view, and an
//! agent restarted while the servers are away starts its pods again from it.
//!
//! Every successful `GET` of a JSON document (an object, a list, an image
//! manifest) is written under the request's key; a watch's events are applied
//! to the list it continues, so a list read at start stays current while the
//! agent runs. The cache is read only while the servers are unreachable
//! ([`Offline`]): then reads answer from it, writes fail at once, and a watch
//! waits until a server answers again (the caller then lists afresh).
//!
//! **The cache never answers while a server does: it is the last view, not
//! a second source of truth.** Files are the owner's alone (they hold Secrets).

mod credentials;
mod layer;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use credentials::Credentials;
pub use layer::CacheLayer;

use super::apiservers::Servers;

/// Query parameters that say how to read, not what: requests differing only
/// in these read the same thing.
const HOW_TO_READ: &[&str] = &[
    "watch",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "allowWatchBookmarks",
    "sendInitialEvents",
    "limit",
];

/// Paths whose answers are not worth keeping (they change on every beat).
const NOT_KEPT: &[&str] = &["/apis/coordination.k8s.io/"];

/// How often dirty lists are written and an unreachable API is tried again.
const EVERY: Duration = Duration::from_secs(1);

/// The largest answer kept.
const MAX_BODY: usize = 32 << 20;

/// The cache key of a request (`path?sorted query` without the parameters
/// of [`HOW_TO_READ`]); `None` when it is not kept (a continued page).
pub fn key(uri: &http::Uri) -> Option<String> {
    let path = uri.path();
    if NOT_KEPT.iter().any(|p| path.starts_with(p)) {
        return None;
    }
    let mut params: Vec<&str> = Vec::new();
    for p in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let name = p.split('=').next().unwrap_or(p);
        if name == "continue" {
            return None;
        }
        if !HOW_TO_READ.contains(&name) {
            params.push(p);
        }
    }
    params.sort_unstable();
    Some(if params.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", params.join("&"))
    })
}

/// Whether a request is a watch (`watch=true` or `watch=1`).
pub fn is_watch(uri: &http::Uri) -> bool {
    uri.query()
        .unwrap_or("")
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1")
}

/// One kept answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    pub key: String,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub body: String,
}

/// Whether the API servers answer, and a way to wait until they do.
#[derive(Clone, Default)]
pub struct Offline {
    flag: Arc<AtomicBool>,
    back: Arc<tokio::sync::Notify>,
}

impl Offline {
    pub fn is(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Mark the servers unreachable; true if they were reachable before.
    fn set(&self) -> bool {
        !self.flag.swap(true, Ordering::AcqRel)
    }

    fn clear(&self) {
        if self.flag.swap(false, Ordering::AcqRel) {
            tracing::info!("an api server answers again: reading from it, not from the cache");
        }
        self.back.notify_waiters();
    }

    /// Wait until a server answers again (at once if none is known to be away).
    pub async fn until_back(&self) {
        loop {
            let back = self.back.notified();
            if !self.is() {
                return;
            }
            back.await;
        }
    }
}

#[derive(Default)]
struct State {
    /// Hash of the body last written per key (unchanged answers are not rewritten).
    written: HashMap<String, [u8; 32]>,
    /// Lists followed by a watch, as JSON, by key.
    lists: HashMap<String, Value>,
    dirty: HashSet<String>,
}

/// The cache: a directory of kept answers.
#[derive(Clone)]
pub struct Cache {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    pub offline: Offline,
    servers: Servers,
}

/// Write `bytes` to `path` (mode 0600) through a renamed temporary file: a
/// reader sees the old or the new answer, never half of one. Not synced: a
/// cache lost in a crash is only an older view.
fn write_owned(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?
        .write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Cache {
    /// Open (create) the cache in `dir`; `servers` are tried while offline.
    pub fn open(dir: &Path, servers: Servers) -> std::io::Result<Cache> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            state: Arc::default(),
            offline: Offline::default(),
            servers,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, key: &str) -> PathBuf {
        let h = hash(key.as_bytes());
        let name: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    fn write(&self, kept: &Kept) {
        let Ok(bytes) = serde_json::to_vec(kept) else {
            return;
        };
        let path = self.file(&kept.key);
        if let Err(e) = write_owned(&path, &bytes) {
            tracing::debug!(path = %path.display(), error = %e, "cannot write to the cache");
        }
    }

    /// Keep a successful answer to `key`.
    pub fn store(&self, key: &str, content_type: &str, digest: Option<&str>, body: &[u8]) {
        if body.len() > MAX_BODY {
            return;
        }
        let h = hash(body);
        {
            let mut st = self.state.lock().expect("cache");
            if st.written.get(key) == Some(&h) {
                return;
            }
            st.written.insert(key.to_string(), h);
            // A list read afresh replaces the one its watch was keeping.
            if st.lists.contains_key(key) {
                match serde_json::from_slice(body) {
                    Ok(v) => {
                        st.lists.insert(key.to_string(), v);
                    }
                    Err(_) => {
                        st.lists.remove(key);
                    }
                }
                st.dirty.remove(key);
            }
        }
        self.write(&Kept {
            key: key.to_string(),
            content_type: content_type.to_string(),
            digest: digest.map(str::to_string),
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }

    /// The last answer to `key`, if any.
    pub fn load(&self, key: &str) -> Option<Kept> {
        let list = self.state.lock().expect("cache").lists.get(key).cloned();
        let mut kept: Kept = serde_json::from_slice(&std::fs::read(self.file(key)).ok()?).ok()?;
        if kept.key != key {
            return None;
        }
        if let Some(v) = list {
            kept.body = v.to_string();
        }
        Some(kept)
    }

    /// Forget `key` (the API said it is gone).
    pub fn forget(&self, key: &str) {
        let mut st = self.state.lock().expect("cache");
        st.written.remove(key);
        st.lists.remove(key);
        st.dirty.remove(key);
        let _ = std::fs::remove_file(self.file(key));
    }

    /// Apply one watch event (a line of a watch's answer) to the list `key`.
    pub fn apply(&self, key: &str, line: &[u8]) {
        let Ok(event) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(object) = event.get("object") else {
            return;
        };
        let followed = self.state.lock().expect("cache").lists.contains_key(key);
        if !followed {
            // The list as kept on disk (read without the lock: `load` takes it).
            let Some(list) = self
                .load(key)
                .and_then(|k| serde_json::from_str::<Value>(&k.body).ok())
            else {
                return;
            };
            self.state
                .lock()
                .expect("cache")
                .lists
                .entry(key.to_string())
                .or_insert(list);
        }
        let mut st = self.state.lock().expect("cache");
        let Some(list) = st.lists.get_mut(key) else {
            return;
        };
        if apply_event(list, kind, object) {
            st.dirty.insert(key.to_string());
        }
    }

    /// Write the lists changed by watches since the last call.
    pub fn flush(&self) {
        let dirty: Vec<(String, String)> = {
            let mut st = self.state.lock().expect("cache");
            let keys: Vec<String> = st.dirty.drain().collect();
            keys.into_iter()
                .filter_map(|k| st.lists.get(&k).map(|v| (k, v.to_string())))
                .collect()
        };
        for (key, body) in dirty {
            let Some(mut kept) = self.load(&key) else {
                continue;
            };
            kept.body = body;
            self.state
                .lock()
                .expect("cache")
                .written
                .insert(key.clone(), hash(kept.body.as_bytes()));
            self.write(&kept);
        }
    }

    /// The servers did not answer: are they all away? Marks the cache
    /// offline (and starts trying them again) when none accepts a connection.
    pub async fn check_servers(&self) -> bool {
        if self.offline.is() {
            return true;
        }
        if self.servers.connect().await.is_ok() {
            return false;
        }
        self.go_offline();
        true
    }

    /// Serve from the cache until a server accepts a connection again.
    pub fn go_offline(&self) {
        if !self.offline.set() {
            return;
        }
        tracing::warn!("no api server answers: the node runs from its cache of the last view");
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(EVERY).await;
                if me.servers.connect().await.is_ok() {
                    me.offline.clear();
                    return;
                }
            }
        });
    }

    /// Write dirty lists every second, for as long as the agent runs.
    pub async fn run(self) {
        loop {
            tokio::time::sleep(EVERY).await;
            self.flush();
        }
    }
}

/// The identity of an object in a list: `namespace/name`.
fn identity(v: &Value) -> Option<(String, String)> {
    let m = v.get("metadata")?;
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let name = s("name");
    (!name.is_empty()).then(|| (s("namespace"), name))
}

/// Apply a watch event to a list document; true if it changed.
fn apply_event(list: &mut Value, kind: &str, object: &Value) -> bool {
    let rv = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(rv) = &rv
        && let Some(meta) = list.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("resourceVersion".into(), Value::String(rv.clone()));
    }
    if kind == "BOOKMARK" {
        return rv.is_some();
    }
    let Some(id) = identity(object) else {
        return false;
    };
    let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) else {
        return false;
    };
    let at = items.iter().position(|i| identity(i).as_ref() == Some(&id));
    match (kind, at) {
        ("ADDED" | "MODIFIED", Some(i)) => items[i] = object.clone(),
        ("ADDED" | "MODIFIED", None) => items.push(object.clone()),
        ("DELETED", Some(i)) => {
            items.remove(i);
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests;
