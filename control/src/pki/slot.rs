//! Certificates replaced while in use, and the rustls configurations around
//! them: a new handshake gets the newest certificate, open connections keep
//! theirs.

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use super::{CertInfo, Issued, PkiError};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Parse(e.to_string())
}

fn certified(issued: &Issued) -> Result<(Arc<CertifiedKey>, CertInfo), PkiError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut issued.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(pem_err)?;
    let leaf = certs
        .first()
        .ok_or_else(|| PkiError::Parse("no certificate in chain".into()))?;
    let info = CertInfo::from_der(leaf)?;
    let key = rustls_pemfile::private_key(&mut issued.key_pem.as_bytes())
        .map_err(pem_err)?
        .ok_or_else(|| PkiError::Parse("no private key".into()))?;
    let key = provider().key_provider.load_private_key(key)?;
    Ok((Arc::new(CertifiedKey::new(certs, key)), info))
}

/// A certificate and key that can be replaced while TLS configurations built
/// on it are in use.
#[derive(Clone, Debug)]
pub struct CertSlot(Arc<RwLock<(Arc<CertifiedKey>, CertInfo)>>);

impl CertSlot {
    pub fn new(issued: &Issued) -> Result<CertSlot, PkiError> {
        Ok(CertSlot(Arc::new(RwLock::new(certified(issued)?))))
    }

    /// Use `issued` from the next handshake on.
    pub fn replace(&self, issued: &Issued) -> Result<(), PkiError> {
        let next = certified(issued)?;
        *self.0.write().unwrap() = next;
        Ok(())
    }

    /// What the current certificate says.
    pub fn info(&self) -> CertInfo {
        self.0.read().unwrap().1.clone()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap().0.clone()
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertSlot {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The certificates of a PEM bundle as trust roots.
pub fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.map_err(pem_err)?)?;
    }
    if roots.is_empty() {
        return Err(PkiError::Parse("no CA certificate".into()));
    }
    Ok(Arc::new(roots))
}

/// A server configuration presenting `slot`'s certificate; with `client_ca`,
/// a client must present a certificate of that CA.
pub fn server_config(
    slot: &CertSlot,
    client_ca: Option<&str>,
) -> Result<rustls::ServerConfig, PkiError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(pem_err)?,
        ),
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(Arc::new(slot.clone())))
}

/// A client configuration trusting only `ca_pem`, presenting `slot`'s
/// certificate when given.
pub fn client_config(
    ca_pem: &str,
    slot: Option<&CertSlot>,
) -> Result<rustls::ClientConfig, PkiError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    Ok(match slot {
        Some(slot) => builder.with_client_cert_resolver(Arc::new(slot.clone())),
        None => builder.with_no_client_auth(),
    })
}

/// Both sides of a mutually authenticated link (the Raft peer port, the
/// agent API): each presents `slot` and trusts only the CA of `ca_pem`.
pub fn mutual_tls(
    ca_pem: &str,
    slot: &CertSlot,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), PkiError> {
    Ok((
        Arc::new(server_config(slot, Some(ca_pem))?),
        Arc::new(client_config(ca_pem, Some(slot))?),
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pki::{ClusterCa, LEAF_LIFETIME, peer_leaf, peer_name};

    /// Run a TLS handshake in memory between `client` (for `name`) and
    /// `server`, then send "ping" through it; the server's side of the
    /// connection, or the error of either side.
    pub(crate) fn handshake(
        client: Arc<rustls::ClientConfig>,
        name: &str,
        server: Arc<rustls::ServerConfig>,
    ) -> Result<rustls::ServerConnection, rustls::Error> {
        use std::io::{Read, Write};
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(client, name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        c.writer().write_all(b"ping").unwrap();
        for _ in 0..20 {
            if !(c.is_handshaking() || s.is_handshaking() || c.wants_write()) {
                break;
            }
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
        }
        let mut got = [0u8; 4];
        s.reader()
            .read_exact(&mut got)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        assert_eq!(&got, b"ping");
        Ok(s)
    }

    /// Two members complete mutual TLS; a client without a certificate, or
    /// with one of another CA, does not; after `replace` the next handshake
    /// presents the new certificate.
    #[test]
    fn mutual_tls_needs_a_certificate_of_the_ca_and_renews_in_place() {
        let ca = ClusterCa::generate().unwrap();
        let a = CertSlot::new(&ca.issue(&peer_leaf(1, LEAF_LIFETIME)).unwrap()).unwrap();
        let b = CertSlot::new(&ca.issue(&peer_leaf(2, LEAF_LIFETIME)).unwrap()).unwrap();
        let (a_server, _) = mutual_tls(&ca.cert_pem, &a).unwrap();
        let (_, b_client) = mutual_tls(&ca.cert_pem, &b).unwrap();
        let conn = handshake(b_client, &peer_name(1), a_server.clone()).unwrap();
        let leaf = &conn.peer_certificates().unwrap()[0];
        assert_eq!(CertInfo::from_der(leaf).unwrap().peer_id(), Some(2));

        let anonymous = Arc::new(client_config(&ca.cert_pem, None).unwrap());
        assert!(handshake(anonymous, &peer_name(1), a_server.clone()).is_err());
        let other = ClusterCa::generate().unwrap();
        let stranger = CertSlot::new(&other.issue(&peer_leaf(2, LEAF_LIFETIME)).unwrap()).unwrap();
        let (_, s_client) = mutual_tls(&ca.cert_pem, &stranger).unwrap();
        assert!(handshake(s_client, &peer_name(1), a_server.clone()).is_err());

        let before = b.info().serial;
        b.replace(&ca.issue(&peer_leaf(2, LEAF_LIFETIME)).unwrap())
            .unwrap();
        assert_ne!(b.info().serial, before);
        let (_, b_client) = mutual_tls(&ca.cert_pem, &b).unwrap();
        let conn = handshake(b_client, &peer_name(1), a_server).unwrap();
        let leaf = &conn.peer_certificates().unwrap()[0];
        assert_eq!(CertInfo::from_der(leaf).unwrap().serial, b.info().serial);
    }
}
