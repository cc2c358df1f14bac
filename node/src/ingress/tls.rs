//! TLS for the router's HTTPS port: the certificate of the Ingress TLS
//! Secret whose `hosts` name the client's SNI (exact, then `*.` wildcard),
//! else one listed without hosts, else a self-signed certificate of the
//! router's own. ALPN offers HTTP/2 and HTTP/1.1.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Certificates by host name, swapped whole when Secrets or Ingresses change.
#[derive(Debug, Default)]
pub struct Certs {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    /// From a TLS entry without hosts.
    default: Option<Arc<CertifiedKey>>,
}

impl Certs {
    pub fn add(&mut self, hosts: &[String], key: Arc<CertifiedKey>) {
        if hosts.is_empty() {
            self.default.get_or_insert(key);
            return;
        }
        for h in hosts {
            self.by_host
                .entry(h.to_ascii_lowercase())
                .or_insert_with(|| key.clone());
        }
    }

    fn find(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let sni = sni.to_ascii_lowercase();
        if let Some(k) = self.by_host.get(&sni) {
            return Some(k.clone());
        }
        let wildcard = sni.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        wildcard
            .and_then(|w| self.by_host.get(&w).cloned())
            .or_else(|| self.default.clone())
    }
}

/// A key pair of PEM certificate chain and key, ready to serve.
pub fn certified(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("tls.key: {e}"))?
        .ok_or("tls.key holds no private key")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// The resolver the HTTPS listener asks.
#[derive(Debug)]
pub struct Resolver {
    pub certs: RwLock<Arc<Certs>>,
    fallback: Arc<CertifiedKey>,
}

impl Resolver {
    /// With a self-signed fallback certificate for `node`.
    pub fn new(node: &str) -> Result<Resolver, String> {
        let name = format!("skiff-ingress.{node}");
        let cert = rcgen::generate_simple_self_signed(vec![name]).map_err(|e| e.to_string())?;
        let fallback = certified(
            cert.cert.pem().as_bytes(),
            cert.signing_key.serialize_pem().as_bytes(),
        )?;
        Ok(Resolver {
            certs: RwLock::new(Arc::default()),
            fallback,
        })
    }

    pub fn set(&self, certs: Certs) {
        *self.certs.write().expect("certs") = Arc::new(certs);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().expect("certs").clone();
        hello
            .server_name()
            .and_then(|n| certs.find(n))
            .or_else(|| certs.default.clone())
            .or_else(|| Some(self.fallback.clone()))
    }
}

/// The server config of the HTTPS listener.
pub fn server_config(resolver: Arc<Resolver>) -> rustls::ServerConfig {
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        certified(
            c.cert.pem().as_bytes(),
            c.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn sni_finds_exact_then_wildcard_then_default() {
        let (a, w, d) = (key("a.example"), key("*.example"), key("other"));
        let mut c = Certs::default();
        c.add(&["a.example".into()], a.clone());
        c.add(&["*.example".into()], w.clone());
        assert!(c.find("b.example").is_some_and(|k| Arc::ptr_eq(&k, &w)));
        assert!(c.find("A.example").is_some_and(|k| Arc::ptr_eq(&k, &a)));
        assert!(c.find("x.y.example").is_none());
        c.add(&[], d.clone());
        assert!(c.find("x.y.example").is_some_and(|k| Arc::ptr_eq(&k, &d)));
        assert!(certified(b"junk", b"junk").is_err());
    }
}
