//! Encryption at rest: values of chosen resources (Secrets by default) and the
//! cluster's own secrets are sealed with AES-256-GCM before they are
//! proposed, so neither the Raft log nor the state in sled holds them in
//! plain text. Keys come in Kubernetes' `EncryptionConfiguration` format
//! (`aesgcm` and `identity` providers) and the stored form is Kubernetes'
//! aesgcm form: `k8s:enc:aesgcm:v1:<key name>:` + 12-byte nonce + ciphertext
//! and tag, with the store key as associated data (a value cannot be moved
//! to another key).
//!
//! **The first provider seals; every provider opens. A value without the
//! `k8s:enc:` prefix is plain (written before encryption, or by `identity`).**

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use base64::Engine;
use serde::{Deserialize, Serialize};

const PREFIX: &[u8] = b"k8s:enc:";
const AESGCM: &[u8] = b"k8s:enc:aesgcm:v1:";

/// Errors of keys and sealed values.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("encryption configuration: {0}")]
    Config(String),
    #[error("value of {key} is sealed with key {name:?}, which this server does not have")]
    UnknownKey { key: String, name: String },
    #[error("value of {key} does not open: {reason}")]
    Corrupt { key: String, reason: String },
}

/// `apiserver.config.k8s.io/v1` `EncryptionConfiguration` (the parts Skiff reads).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    pub resources: Vec<ResourceConfig>,
}

fn api_version() -> String {
    "apiserver.config.k8s.io/v1".into()
}

fn kind() -> String {
    "EncryptionConfiguration".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ResourceConfig {
    pub resources: Vec<String>,
    pub providers: Vec<Provider>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    Aesgcm(KeyList),
    Identity(serde_json::Value),
    /// Providers Kubernetes has and Skiff does not (aescbc, secretbox, kms).
    #[serde(untagged)]
    Other(serde_json::Value),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyList {
    pub keys: Vec<NamedKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NamedKey {
    pub name: String,
    /// 32 random bytes, base64.
    pub secret: String,
}

impl NamedKey {
    /// A new random key.
    pub fn generate(name: &str) -> NamedKey {
        NamedKey {
            name: name.into(),
            secret: base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()),
        }
    }
}

impl EncryptionConfiguration {
    /// Secrets sealed with `key`, plain values still readable.
    pub fn secrets_with(keys: Vec<NamedKey>) -> EncryptionConfiguration {
        EncryptionConfiguration {
            api_version: api_version(),
            kind: kind(),
            resources: vec![ResourceConfig {
                resources: vec!["secrets".into()],
                providers: vec![
                    Provider::Aesgcm(KeyList { keys }),
                    Provider::Identity(serde_json::json!({})),
                ],
            }],
        }
    }

    pub fn from_yaml(text: &str) -> Result<EncryptionConfiguration, EncryptionError> {
        let c: EncryptionConfiguration =
            serde_norway::from_str(text).map_err(|e| EncryptionError::Config(e.to_string()))?;
        if c.kind != kind() {
            return Err(EncryptionError::Config(format!(
                "kind is {:?}, not EncryptionConfiguration",
                c.kind
            )));
        }
        Ok(c)
    }

    /// The aesgcm keys of the entry for Secrets, primary first.
    pub fn secret_keys(&self) -> Vec<NamedKey> {
        self.resources
            .iter()
            .filter(|r| r.resources.iter().any(|x| x == "secrets"))
            .flat_map(|r| r.providers.iter())
            .flat_map(|p| match p {
                Provider::Aesgcm(k) => k.keys.clone(),
                _ => vec![],
            })
            .collect()
    }
}

/// AES-GCM with a 16- or 32-byte key (Kubernetes also takes 24).
enum Cipher {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
}

impl Cipher {
    fn new(bytes: &[u8]) -> Option<Cipher> {
        match bytes.len() {
            16 => Aes128Gcm::new_from_slice(bytes)
                .ok()
                .map(|c| Cipher::Aes128(Box::new(c))),
            32 => Aes256Gcm::new_from_slice(bytes)
                .ok()
                .map(|c| Cipher::Aes256(Box::new(c))),
            _ => None,
        }
    }

    fn encrypt(&self, nonce: &[u8], p: Payload<'_, '_>) -> Result<Vec<u8>, aes_gcm::Error> {
        let nonce = Nonce::from_slice(nonce);
        match self {
            Cipher::Aes128(c) => c.encrypt(nonce, p),
            Cipher::Aes256(c) => c.encrypt(nonce, p),
        }
    }

    fn decrypt(&self, nonce: &[u8], p: Payload<'_, '_>) -> Result<Vec<u8>, aes_gcm::Error> {
        let nonce = Nonce::from_slice(nonce);
        match self {
            Cipher::Aes128(c) => c.decrypt(nonce, p),
            Cipher::Aes256(c) => c.decrypt(nonce, p),
        }
    }
}

struct Key {
    name: String,
    cipher: Cipher,
}

/// How one group of store keys is sealed.
struct Rule {
    /// Store key prefixes (`/core/secrets/`), or none for every key.
    prefixes: Option<Vec<String>>,
    /// The first provider: a key, or none for identity.
    seal: Option<Arc<Key>>,
}

/// The keys in use: what seals each store key, and every key that opens.
#[derive(Default)]
pub struct Keyring {
    rules: Vec<Rule>,
    keys: Vec<Arc<Key>>,
    /// What seals the cluster's own values (CA key, tokens): the first key.
    internal: Option<Arc<Key>>,
}

/// The store key prefix of a resource name in a configuration: `secrets`,
/// `deployments.apps`, `*.*` (every resource: `None`).
fn prefix_of(resource: &str) -> Option<String> {
    match resource.split_once('.') {
        Some(("*", "*")) => None,
        Some((plural, group)) => Some(format!("/{group}/{plural}/")),
        None => Some(format!("/core/{resource}/")),
    }
}

impl Keyring {
    /// Nothing sealed.
    pub fn identity() -> Keyring {
        Keyring::default()
    }

    pub fn from_config(c: &EncryptionConfiguration) -> Result<Keyring, EncryptionError> {
        let mut ring = Keyring::default();
        let mut by_name: std::collections::HashMap<String, Arc<Key>> = Default::default();
        for r in &c.resources {
            let mut first: Option<Option<Arc<Key>>> = None;
            for p in &r.providers {
                let sealer = match p {
                    Provider::Aesgcm(list) => {
                        let mut firsts = None;
                        for k in &list.keys {
                            let key = match by_name.get(&k.name) {
                                Some(key) => key.clone(),
                                None => {
                                    let bytes = base64::engine::general_purpose::STANDARD
                                        .decode(k.secret.trim())
                                        .map_err(|e| {
                                            EncryptionError::Config(format!("key {}: {e}", k.name))
                                        })?;
                                    let cipher = Cipher::new(&bytes).ok_or_else(|| {
                                        EncryptionError::Config(format!(
                                            "key {} is {} bytes; aesgcm here takes 16 or 32",
                                            k.name,
                                            bytes.len()
                                        ))
                                    })?;
                                    let key = Arc::new(Key {
                                        name: k.name.clone(),
                                        cipher,
                                    });
                                    by_name.insert(k.name.clone(), key.clone());
                                    ring.keys.push(key.clone());
                                    key
                                }
                            };
                            firsts.get_or_insert(key);
                        }
                        Some(firsts.ok_or_else(|| {
                            EncryptionError::Config("an aesgcm provider without keys".into())
                        })?)
                    }
                    Provider::Identity(_) => None,
                    Provider::Other(v) => {
                        return Err(EncryptionError::Config(format!(
                            "unsupported provider {v} (Skiff has aesgcm and identity)"
                        )));
                    }
                };
                first.get_or_insert(sealer);
            }
            let prefixes: Option<Vec<String>> = r.resources.iter().map(|x| prefix_of(x)).collect();
            ring.rules.push(Rule {
                prefixes,
                seal: first.flatten(),
            });
        }
        ring.internal = ring.keys.first().cloned();
        Ok(ring)
    }

    fn sealer(&self, key: &str) -> Option<&Arc<Key>> {
        self.rules
            .iter()
            .find(|r| match &r.prefixes {
                None => true,
                Some(ps) => ps.iter().any(|p| key.starts_with(p.as_str())),
            })
            .and_then(|r| r.seal.as_ref())
    }

    /// Whether values under `key` are sealed.
    pub fn seals(&self, key: &str) -> bool {
        self.sealer(key).is_some()
    }

    fn seal_with(k: &Key, key: &str, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = rand::random();
        let sealed = k
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: key.as_bytes(),
                },
            )
            .expect("aes-gcm seals any length we store");
        let mut out = Vec::with_capacity(AESGCM.len() + k.name.len() + 1 + 12 + sealed.len());
        out.extend_from_slice(AESGCM);
        out.extend_from_slice(k.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The stored form of `plain` under store key `key`.
    pub fn seal(&self, key: &str, plain: Vec<u8>) -> Vec<u8> {
        match self.sealer(key) {
            Some(k) => Keyring::seal_with(k, key, &plain),
            None => plain,
        }
    }

    /// The stored form of one of the cluster's own values (CA key, tokens):
    /// sealed with the first key there is.
    pub fn seal_internal(&self, key: &str, plain: Vec<u8>) -> Vec<u8> {
        match &self.internal {
            Some(k) => Keyring::seal_with(k, key, &plain),
            None => plain,
        }
    }

    /// The plain value stored under `key`.
    pub fn open<'a>(&self, key: &str, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, EncryptionError> {
        if !stored.starts_with(PREFIX) {
            return Ok(Cow::Borrowed(stored));
        }
        let corrupt = |reason: &str| EncryptionError::Corrupt {
            key: key.into(),
            reason: reason.into(),
        };
        let rest = stored
            .strip_prefix(AESGCM)
            .ok_or_else(|| corrupt("sealed by a provider Skiff does not have"))?;
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| corrupt("no key name"))?;
        let name = String::from_utf8_lossy(&rest[..colon]).into_owned();
        let body = &rest[colon + 1..];
        let k = self.keys.iter().find(|k| k.name == name).ok_or_else(|| {
            EncryptionError::UnknownKey {
                key: key.into(),
                name,
            }
        })?;
        if body.len() < 12 + 16 {
            return Err(corrupt("too short"));
        }
        let (nonce, sealed) = body.split_at(12);
        k.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: sealed,
                    aad: key.as_bytes(),
                },
            )
            .map(Cow::Owned)
            .map_err(|_| {
                corrupt("authentication failed (wrong key, or the value was altered or moved)")
            })
    }

    /// The store key prefixes of the resources this keyring seals (`None`:
    /// every key).
    pub fn sealed_prefixes(&self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for r in self.rules.iter().filter(|r| r.seal.is_some()) {
            out.extend(r.prefixes.clone()?);
        }
        Some(out)
    }

    /// `stored` sealed again with the current key, if it is not already;
    /// `internal`: one of the cluster's own values.
    pub fn reseal(
        &self,
        key: &str,
        stored: &[u8],
        internal: bool,
    ) -> Result<Option<Vec<u8>>, EncryptionError> {
        let target = if internal {
            self.internal.as_ref()
        } else {
            self.sealer(key)
        };
        let current = match target {
            None => !stored.starts_with(PREFIX),
            Some(k) => stored.starts_with(&[AESGCM, k.name.as_bytes(), b":"].concat()),
        };
        if current {
            return Ok(None);
        }
        let plain = self.open(key, stored)?.into_owned();
        Ok(Some(match target {
            Some(k) => Keyring::seal_with(k, key, &plain),
            None => plain,
        }))
    }

    /// Whether `stored` is sealed with the key that seals `key` now
    /// (rotation rewrites the rest).
    pub fn is_current(&self, key: &str, stored: &[u8]) -> bool {
        match self.sealer(key) {
            None => !stored.starts_with(PREFIX),
            Some(k) => {
                let mut want = AESGCM.to_vec();
                want.extend_from_slice(k.name.as_bytes());
                want.push(b':');
                stored.starts_with(&want)
            }
        }
    }
}

/// Where a newer keyring comes from when a value names a key this server
/// does not have yet (another server rotated).
pub type Reload = Arc<dyn Fn() -> Option<Keyring> + Send + Sync>;

#[derive(Default)]
struct Shared {
    ring: RwLock<Arc<Keyring>>,
    reload: RwLock<Option<Reload>>,
}

/// The keyring in use, shared by every clone (every reader and writer of a
/// server) and replaced on rotation.
#[derive(Clone, Default)]
pub struct Encryption(Arc<Shared>);

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encryption({} keys)", self.get().keys.len())
    }
}

impl Encryption {
    pub fn get(&self) -> Arc<Keyring> {
        self.0.ring.read().unwrap().clone()
    }

    pub fn set(&self, ring: Keyring) {
        *self.0.ring.write().unwrap() = Arc::new(ring);
    }

    pub fn set_reload(&self, reload: Reload) {
        *self.0.reload.write().unwrap() = Some(reload);
    }

    pub fn seal(&self, key: &str, plain: Vec<u8>) -> Vec<u8> {
        self.get().seal(key, plain)
    }

    /// Open a stored value; a value sealed with a key this server has not
    /// seen yet reloads the keyring once.
    pub fn open<'a>(&self, key: &str, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, EncryptionError> {
        // Most values (every kind but the sealed ones) are plain: no lock.
        if !stored.starts_with(PREFIX) {
            return Ok(Cow::Borrowed(stored));
        }
        match self.get().open(key, stored) {
            Ok(v) => return Ok(v),
            Err(EncryptionError::UnknownKey { .. }) => {}
            Err(e) => return Err(e),
        }
        let reload = self.0.reload.read().unwrap().clone();
        if let Some(ring) = reload.and_then(|r| r()) {
            self.set(ring);
        }
        self.get().open(key, stored)
    }
}

/// Where the cluster-managed keyring lives: an `EncryptionConfiguration`
/// sealed with the key-encryption key.
pub const MANAGED_RECORD: &str = "/skiff/cluster/encryption-config";

/// The cluster-managed keyring's wrapping: a key-encryption key derived
/// from the cluster's join token (`<data-dir>/join-token`, mode 0600, which
/// every server has and a snapshot carries), so the data keys in the store
/// are useless without a server's data dir.
#[derive(Clone)]
pub struct ManagedKeys {
    kek: Arc<Keyring>,
}

impl ManagedKeys {
    pub fn from_join_token(token: &str) -> ManagedKeys {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"skiff/encryption-key-encryption-key/v1\0");
        h.update(token.as_bytes());
        let secret = base64::engine::general_purpose::STANDARD.encode(h.finalize());
        let c = EncryptionConfiguration {
            api_version: api_version(),
            kind: kind(),
            resources: vec![ResourceConfig {
                resources: vec!["*.*".into()],
                providers: vec![Provider::Aesgcm(KeyList {
                    keys: vec![NamedKey {
                        name: "kek".into(),
                        secret,
                    }],
                })],
            }],
        };
        ManagedKeys {
            kek: Arc::new(Keyring::from_config(&c).expect("a derived 32-byte key")),
        }
    }

    /// A first keyring: one new key for Secrets.
    pub fn first_config() -> EncryptionConfiguration {
        EncryptionConfiguration::secrets_with(vec![NamedKey::generate(&key_name())])
    }

    /// The keyring with a new primary key, the old ones kept for reading.
    pub fn rotated(c: &EncryptionConfiguration) -> EncryptionConfiguration {
        let mut keys = vec![NamedKey::generate(&key_name())];
        keys.extend(c.secret_keys());
        EncryptionConfiguration::secrets_with(keys)
    }

    pub fn seal_config(&self, c: &EncryptionConfiguration) -> Vec<u8> {
        // JSON: YAML would write the providers as tagged values.
        self.kek.seal(
            MANAGED_RECORD,
            serde_json::to_vec(c).expect("configuration serialises"),
        )
    }

    pub fn open_config(&self, stored: &[u8]) -> Result<EncryptionConfiguration, EncryptionError> {
        let plain = self.kek.open(MANAGED_RECORD, stored).map_err(|e| {
            EncryptionError::Config(format!(
                "{e}: the stored keys are sealed with another cluster's join token"
            ))
        })?;
        serde_json::from_slice(&plain).map_err(|e| EncryptionError::Config(e.to_string()))
    }
}

/// A key name that sorts by creation.
fn key_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("key-{secs}-{:04x}", rand::random::<u16>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> (EncryptionConfiguration, Keyring) {
        let c = EncryptionConfiguration::secrets_with(
            keys.iter().map(|k| NamedKey::generate(k)).collect(),
        );
        let r = Keyring::from_config(&c).unwrap();
        (c, r)
    }

    #[test]
    fn secrets_are_sealed_other_resources_are_not_and_both_read_back() {
        let (_, r) = ring(&["k1"]);
        let secret = "/core/secrets/default/db";
        let sealed = r.seal(secret, br#"{"data":{"password":"aHVudGVyMg=="}}"#.to_vec());
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
        assert!(!sealed.windows(12).any(|w| w == b"aHVudGVyMg=="));
        assert_eq!(
            &*r.open(secret, &sealed).unwrap(),
            br#"{"data":{"password":"aHVudGVyMg=="}}"#
        );
        let cm = "/core/configmaps/default/x";
        assert_eq!(r.seal(cm, b"{}".to_vec()), b"{}");
        assert_eq!(&*r.open(cm, b"{}").unwrap(), b"{}");
        // Plain values from before encryption still read.
        assert_eq!(&*r.open(secret, b"{\"a\":1}").unwrap(), b"{\"a\":1}");
        // Moved to another key, or altered: refused.
        assert!(matches!(
            r.open("/core/secrets/default/other", &sealed),
            Err(EncryptionError::Corrupt { .. })
        ));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(r.open(secret, &bad).is_err());
    }

    #[test]
    fn rotation_seals_with_the_new_key_and_opens_with_either() {
        let (c, old) = ring(&["k1"]);
        let secret = "/core/secrets/ns/s";
        let before = old.seal(secret, b"v".to_vec());
        let mut keys = vec![NamedKey::generate("k2")];
        keys.extend(c.secret_keys());
        let new = Keyring::from_config(&EncryptionConfiguration::secrets_with(keys)).unwrap();
        assert!(!new.is_current(secret, &before));
        let after = new.seal(secret, b"v".to_vec());
        assert!(after.starts_with(b"k8s:enc:aesgcm:v1:k2:") && new.is_current(secret, &after));
        assert_eq!(&*new.open(secret, &before).unwrap(), b"v");
        assert!(matches!(
            old.open(secret, &after),
            Err(EncryptionError::UnknownKey { name, .. }) if name == "k2"
        ));
    }

    #[test]
    fn the_managed_keyring_opens_only_with_the_same_join_token() {
        let m = ManagedKeys::from_join_token("abc");
        let c = ManagedKeys::first_config();
        let sealed = m.seal_config(&c);
        assert!(!String::from_utf8_lossy(&sealed).contains(&c.secret_keys()[0].secret));
        assert_eq!(m.open_config(&sealed).unwrap(), c);
        assert!(
            ManagedKeys::from_join_token("abd")
                .open_config(&sealed)
                .is_err()
        );
        let r = ManagedKeys::rotated(&c);
        assert_eq!(r.secret_keys().len(), 2);
        assert_eq!(r.secret_keys()[1], c.secret_keys()[0]);
    }

    #[test]
    fn kubernetes_configuration_files_are_read_and_bad_ones_refused() {
        let yaml = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets, configmaps, deployments.apps]\n    providers:\n      - aesgcm:\n          keys:\n            - name: key1\n              secret: MDEyMzQ1Njc4OWFiY2RlZg==\n      - identity: {}\n";
        let c = EncryptionConfiguration::from_yaml(yaml).unwrap();
        let r = Keyring::from_config(&c).unwrap();
        for k in [
            "/core/secrets/a/b",
            "/core/configmaps/a/b",
            "/apps/deployments/a/b",
        ] {
            assert!(r.seals(k), "{k}");
        }
        assert!(!r.seals("/core/pods/a/b"));
        let identity_first =
            yaml.replace("      - aesgcm:", "      - identity: {}\n      - aesgcm:");
        let r = Keyring::from_config(&EncryptionConfiguration::from_yaml(&identity_first).unwrap())
            .unwrap();
        assert!(
            !r.seals("/core/secrets/a/b"),
            "identity first: written plain"
        );
        let short = yaml.replace("MDEyMzQ1Njc4OWFiY2RlZg==", "c2hvcnQ=");
        assert!(
            Keyring::from_config(&EncryptionConfiguration::from_yaml(&short).unwrap()).is_err()
        );
        let kms = yaml.replace("      - identity: {}", "      - kms: {name: x}");
        let err = EncryptionConfiguration::from_yaml(&kms)
            .and_then(|c| Keyring::from_config(&c).map(|_| ()))
            .unwrap_err();
        assert!(err.to_string().contains("unsupported provider"), "{err}");
    }
}
