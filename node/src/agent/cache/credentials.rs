//! What the agent got by joining (the cluster CA, its API token, its serving
//! certificate and key), kept so that it can start while no server answers.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agent::tls::Issued;

const FILE: &str = "credentials.json";

/// The agent's credentials as last issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub ca_cert: String,
    pub token: String,
    pub cert_chain: String,
    pub key_pem: String,
}

impl Credentials {
    pub fn of(ca_cert: &str, token: &str, serving: &Issued) -> Credentials {
        Credentials {
            ca_cert: ca_cert.to_string(),
            token: token.to_string(),
            cert_chain: serving.cert_chain.clone(),
            key_pem: serving.key_pem.clone(),
        }
    }

    /// The serving certificate, to be renewed at once when the servers answer.
    pub fn serving(&self) -> Issued {
        Issued {
            cert_chain: self.cert_chain.clone(),
            ca_cert: self.ca_cert.clone(),
            renew_after_seconds: 1,
            key_pem: self.key_pem.clone(),
        }
    }

    /// Keep them in `dir` (owner only, synced).
    pub fn save(&self, dir: &Path) {
        let Ok(bytes) = serde_json::to_vec(self) else {
            return;
        };
        if let Err((path, e)) = skiff_common::fs::write_private(&dir.join(FILE), &bytes) {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the agent's credentials");
        }
    }

    /// Those kept in `dir`, if any.
    pub fn load(dir: &Path) -> Option<Credentials> {
        serde_json::from_slice(&std::fs::read(dir.join(FILE)).ok()?).ok()
    }
}
