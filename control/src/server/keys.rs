//! This server's encryption keys for values at rest: from
//! `--encryption-provider-config` (Kubernetes' `EncryptionConfiguration`,
//! the user's to keep the same on every server), or the cluster-managed
//! keyring in the store, sealed with a key derived from the join token.

use std::path::Path;

use crate::storage::Encryption;
use crate::storage::encryption::{EncryptionConfiguration, Keyring, MANAGED_RECORD, ManagedKeys};
use crate::store::Store;

use super::{ServerError, file_err, raw_cluster_value};

fn bootstrap_err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Bootstrap(e.to_string())
}

/// The managed keyring as this replica holds it now, if it has one.
fn local_keyring(store: &Store, managed: &ManagedKeys) -> Option<Keyring> {
    let kv = store.get_local(MANAGED_RECORD).ok()??;
    let config = managed.open_config(&kv.value).ok()?;
    Keyring::from_config(&config).ok()
}

/// Keys usable before the store has a leader: the user's file, or the
/// managed keyring in this replica (a restart). Returns the managed keys
/// unless the user brought a file.
pub(super) fn load(
    config: Option<&Path>,
    token: &str,
    store: &Store,
    enc: &Encryption,
) -> Result<Option<ManagedKeys>, ServerError> {
    if let Some(path) = config {
        let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
        let c = EncryptionConfiguration::from_yaml(&text).map_err(|e| file_err(path, e))?;
        enc.set(Keyring::from_config(&c).map_err(|e| file_err(path, e))?);
        return Ok(None);
    }
    let managed = ManagedKeys::from_join_token(token);
    if let Some(ring) = local_keyring(store, &managed) {
        enc.set(ring);
    }
    let (s, m) = (store.clone(), managed.clone());
    enc.set_reload(std::sync::Arc::new(move || local_keyring(&s, &m)));
    Ok(Some(managed))
}

/// The managed keyring from the store, made by the first server to ask (a
/// cluster from before encryption at rest included); then every value not
/// sealed yet is sealed.
pub(super) async fn ensure_managed(
    store: &Store,
    managed: &ManagedKeys,
    enc: &Encryption,
) -> Result<(), ServerError> {
    let fresh = managed.seal_config(&ManagedKeys::first_config());
    let stored = raw_cluster_value(store, MANAGED_RECORD, Some(fresh)).await?;
    let config = managed.open_config(&stored).map_err(bootstrap_err)?;
    enc.set(Keyring::from_config(&config).map_err(bootstrap_err)?);
    Ok(())
}
