//! This server's certificates: its Raft peer certificate, kept in
//! `<data-dir>/tls/` because the peer port needs it before the store can be
//! read, and its API serving certificate; both renewed in place, two thirds
//! into their validity, without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::api::prom::Metrics;
use crate::pki::{self, CertInfo, CertSlot, ClusterCa, Issued};
use crate::store::PeerTls;

use super::{ServerError, file_err, write_private};

fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The files a server keeps its peer identity in.
struct PeerFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl PeerFiles {
    fn of(data_dir: &Path) -> PeerFiles {
        let dir = tls_dir(data_dir);
        PeerFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("peer.crt"),
            key: dir.join("peer.key"),
        }
    }
}

/// The stored peer certificate of member `id` and the CA it trusts, if there
/// is one for this member (a certificate for another id is ignored).
fn load_peer(data_dir: &Path, id: u64) -> Option<(String, Issued)> {
    let f = PeerFiles::of(data_dir);
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let (ca, chain, key) = (read(&f.ca)?, read(&f.cert)?, read(&f.key)?);
    match CertInfo::from_pem(&chain).map(|i| i.peer_id()) {
        Ok(Some(got)) if got == id => Some((
            ca,
            Issued {
                chain_pem: chain,
                key_pem: key,
            },
        )),
        other => {
            tracing::warn!(path = %f.cert.display(), found = ?other, "stored peer certificate is not this member's; issuing another");
            None
        }
    }
}

fn save_peer(data_dir: &Path, ca_pem: &str, issued: &Issued) -> Result<(), ServerError> {
    let dir = tls_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
    let f = PeerFiles::of(data_dir);
    write_private(&f.key, &issued.key_pem)?;
    write_private(&f.cert, &issued.chain_pem)?;
    write_private(&f.ca, ca_pem)
}

/// This server's peer identity: what the peer port presents and trusts.
pub(super) struct PeerIdentity {
    pub tls: PeerTls,
    slot: Option<CertSlot>,
}

impl PeerIdentity {
    /// The identity stored for member `id`, if any, already in use by `tls`.
    pub fn load(data_dir: &Path, id: u64, tls: PeerTls) -> Result<PeerIdentity, ServerError> {
        let mut me = PeerIdentity { tls, slot: None };
        if let Some((ca, issued)) = load_peer(data_dir, id) {
            me.install(&ca, &issued)?;
        }
        Ok(me)
    }

    pub fn is_set(&self) -> bool {
        self.slot.is_some()
    }

    fn install(&mut self, ca_pem: &str, issued: &Issued) -> Result<(), ServerError> {
        let slot = CertSlot::new(issued)?;
        self.tls.use_cert(ca_pem, &slot)?;
        self.slot = Some(slot);
        Ok(())
    }

    /// Keep and use a certificate the cluster issued (a join's answer).
    pub fn adopt(
        &mut self,
        data_dir: &Path,
        ca_pem: &str,
        issued: &Issued,
    ) -> Result<(), ServerError> {
        save_peer(data_dir, ca_pem, issued)?;
        self.install(ca_pem, issued)
    }

    /// Issue this member's certificate with the cluster CA, keep and use it.
    pub fn issue(
        &mut self,
        data_dir: &Path,
        ca: &ClusterCa,
        id: u64,
        lifetime: Duration,
    ) -> Result<(), ServerError> {
        let issued = ca.issue(&pki::peer_leaf(id, lifetime))?;
        self.adopt(data_dir, &ca.cert_pem, &issued)
    }
}

/// Renews the peer and serving certificates before they expire.
pub(super) struct Renewal {
    pub data_dir: PathBuf,
    pub ca: ClusterCa,
    pub id: u64,
    pub peer: Option<CertSlot>,
    pub serving: CertSlot,
    /// What this server presents to node agents.
    pub client: CertSlot,
    pub serving_hosts: Vec<String>,
    pub lifetime: Duration,
    pub metrics: Arc<Metrics>,
}

impl Renewal {
    pub fn new(
        data_dir: &Path,
        ca: &ClusterCa,
        id: u64,
        peer: &PeerIdentity,
        serving_hosts: Vec<String>,
        lifetime: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Renewal, ServerError> {
        let serving = ca.issue(&pki::serving_leaf(serving_hosts.clone(), lifetime))?;
        let client = CertSlot::new(&ca.issue(&pki::apiserver_client_leaf(lifetime))?)?;
        let r = Renewal {
            client,
            data_dir: data_dir.to_path_buf(),
            ca: ca.clone(),
            id,
            peer: peer.slot.clone(),
            serving: CertSlot::new(&serving)?,
            serving_hosts,
            lifetime,
            metrics,
        };
        r.save_serving(&serving)?;
        r.report();
        Ok(r)
    }

    /// The serving certificate is kept only for people to read (`skiff
    /// version --verbose`); each start issues a new one.
    fn save_serving(&self, issued: &Issued) -> Result<(), ServerError> {
        let dir = tls_dir(&self.data_dir);
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        write_private(&dir.join("serving.crt"), &issued.chain_pem)
    }

    fn report(&self) {
        let mut certs = vec![
            ("serving", self.serving.info()),
            ("client", self.client.info()),
        ];
        certs.extend(self.peer.as_ref().map(|p| ("peer", p.info())));
        certs.extend(
            CertInfo::from_pem(&self.ca.cert_pem)
                .ok()
                .map(|ca| ("ca", ca)),
        );
        for (name, info) in certs {
            let secs = info
                .not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.metrics.set_certificate_expiry(name, secs);
        }
    }

    fn renew(&self) -> Result<(), ServerError> {
        let now = SystemTime::now();
        if self.serving.info().renew_at() <= now {
            let issued = self.ca.issue(&pki::serving_leaf(
                self.serving_hosts.clone(),
                self.lifetime,
            ))?;
            self.serving.replace(&issued)?;
            self.save_serving(&issued)?;
            tracing::info!(serial = %self.serving.info().serial, "renewed the serving certificate");
        }
        if self.client.info().renew_at() <= now {
            self.client
                .replace(&self.ca.issue(&pki::apiserver_client_leaf(self.lifetime))?)?;
            tracing::info!(serial = %self.client.info().serial, "renewed the client certificate for agents");
        }
        if let Some(peer) = &self.peer
            && peer.info().renew_at() <= now
        {
            let issued = self.ca.issue(&pki::peer_leaf(self.id, self.lifetime))?;
            save_peer(&self.data_dir, &self.ca.cert_pem, &issued)?;
            peer.replace(&issued)?;
            tracing::info!(serial = %peer.info().serial, "renewed the peer certificate");
        }
        self.report();
        Ok(())
    }

    /// When the next certificate is due, from now (at least a second, at
    /// most an hour: a clock that jumps is noticed within the hour).
    fn next_check(&self) -> Duration {
        let mut due = vec![
            self.serving.info().renew_at(),
            self.client.info().renew_at(),
        ];
        due.extend(self.peer.as_ref().map(|p| p.info().renew_at()));
        let first = due.into_iter().min().unwrap_or_else(SystemTime::now);
        first
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    pub async fn run(self) {
        loop {
            tokio::time::sleep(self.next_check()).await;
            if let Err(e) = self.renew() {
                tracing::warn!(error = %e, "certificate renewal failed; retrying in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}
