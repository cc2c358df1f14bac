//! Key rotation (`skiff secrets rotate-key`): a new primary key in the
//! cluster-managed keyring, then every value sealed with an older key (or
//! not sealed yet) written again with it.
//!
//! **The new keyring is in the store before anything is sealed with it, and
//! a server that meets a key it does not know reloads the keyring from its
//! replica; the old keys stay for reading.**

use crate::model::status::{ApiError, ApiResult};
use crate::store::{ConflictKind, Op, StoreError};

use super::Objects;
use super::encryption::{Keyring, MANAGED_RECORD, ManagedKeys};

/// The cluster's own secrets (CA key, admin token, signing key).
pub const CLUSTER_VALUES: &str = "/skiff/cluster/";

/// What a rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotated {
    /// The new primary key's name.
    pub key: String,
    /// Values written again.
    pub rewritten: usize,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

impl Objects {
    /// Make a new primary key and seal everything with it.
    pub async fn rotate_encryption_key(&self, managed: &ManagedKeys) -> ApiResult<Rotated> {
        let current = self
            .store
            .get(MANAGED_RECORD)
            .await?
            .ok_or_else(|| ApiError::internal("this cluster has no managed encryption keys"))?;
        let config = managed.open_config(&current.value).map_err(internal)?;
        let next = ManagedKeys::rotated(&config);
        let ring = Keyring::from_config(&next).map_err(internal)?;
        match self
            .store
            .write(Op::update(
                MANAGED_RECORD,
                managed.seal_config(&next),
                current.mod_revision,
            ))
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "Conflict",
                    "another rotation changed the keys at the same time; try again",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.encryption.set(ring);
        let rewritten = self.reseal_all().await?;
        let key = next
            .secret_keys()
            .first()
            .map(|k| k.name.clone())
            .unwrap_or_default();
        tracing::info!(%key, rewritten, "rotated the encryption key");
        Ok(Rotated { key, rewritten })
    }

    /// Write again every value that is not sealed with the current key: the
    /// sealed resources and the cluster's own secrets.
    pub async fn reseal_all(&self) -> ApiResult<usize> {
        let ring = self.encryption.get();
        let mut prefixes: Vec<(String, bool)> = ring
            .sealed_prefixes()
            .unwrap_or_else(|| vec!["/".into()])
            .into_iter()
            .map(|p| (p, false))
            .collect();
        prefixes.push((CLUSTER_VALUES.into(), true));
        let mut n = 0;
        for (prefix, is_internal) in prefixes {
            let (kvs, _) = self.store.list(&prefix, None, usize::MAX).await?;
            for kv in kvs {
                if kv.key == MANAGED_RECORD || (!is_internal && kv.key.starts_with(CLUSTER_VALUES))
                {
                    continue;
                }
                if self.reseal_one(&ring, kv, is_internal).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn reseal_one(
        &self,
        ring: &Keyring,
        mut kv: crate::store::KeyValue,
        is_internal: bool,
    ) -> ApiResult<bool> {
        for _ in 0..10 {
            let Some(value) = ring
                .reseal(&kv.key, &kv.value, is_internal)
                .map_err(internal)?
            else {
                return Ok(false);
            };
            match self
                .store
                .write(Op::update(kv.key.clone(), value, kv.mod_revision))
                .await
            {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict {
                    kind: ConflictKind::RevisionMismatch { .. },
                    ..
                }) => match self.store.get(&kv.key).await? {
                    Some(again) => kv = again,
                    None => return Ok(false),
                },
                Err(StoreError::Conflict { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "Conflict",
            format!("{} kept changing while it was sealed again", kv.key),
        ))
    }
}
