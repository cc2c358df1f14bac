//! The cluster's certificates (rcgen, x509-parser): the CA, kept in the
//! replicated store, and the leaf certificates it issues — API serving
//! certificates, Raft peer certificates that name a member id, and client
//! certificates (user = CN, groups = O) — plus what a certificate says
//! (names, validity) and when it is due for renewal.
//!
//! **A peer certificate is valid for exactly one name, `<id in hex>.peer.skiff`:
//! the peer port accepts a member only over a certificate of the CA that
//! carries that member's id.**

mod info;
pub(crate) mod slot;

pub use info::CertInfo;
pub use slot::{CertSlot, client_config, mutual_tls, roots};

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};

/// Errors of issuing or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generate {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("read certificate: {0}")]
    Parse(String),
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

/// How long a leaf certificate is valid unless told otherwise.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a new CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long in the past (a tenth of a short lifetime),
/// for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

fn backdate(lifetime: Duration) -> Duration {
    BACKDATE.min(lifetime / 10)
}

/// The cluster CA as stored in the replicated store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication (API, agent API).
    Server,
    /// TLS client authentication (a user, the API server calling agents).
    Client,
    /// Both: a Raft peer dials and accepts.
    Peer,
}

/// A leaf certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub common_name: String,
    /// The organization (O): a client certificate's group. (rcgen keeps one
    /// value per attribute type; certificates with several O are read fine.)
    pub organization: Option<String>,
    /// DNS names and IP addresses (subject alternative names).
    pub hosts: Vec<String>,
    pub usage: Usage,
    pub lifetime: Duration,
}

/// An issued certificate: the chain (leaf, then the CA) and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

impl Leaf {
    fn params(&self) -> Result<CertificateParams, PkiError> {
        let mut params =
            CertificateParams::new(self.hosts.clone()).map_err(rcgen_err("leaf names"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.as_str());
        if let Some(o) = &self.organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match self.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        let now = SystemTime::now();
        params.not_before = offset(now - backdate(self.lifetime));
        params.not_after = offset(now + self.lifetime);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(
            &rand::random::<[u8; 16]>().map(|b| b & 0x7f),
        ));
        Ok(params)
    }
}

impl ClusterCa {
    /// A new self-signed cluster CA, valid for ten years.
    pub fn generate() -> Result<ClusterCa, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_err("ca key"))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("ca params"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "skiff-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(now + CA_LIFETIME);
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("ca certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(rcgen_err("parse ca key"))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(rcgen_err("parse ca certificate"))
    }

    /// Issue `leaf` with a new key.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_err("leaf key"))?;
        let cert = leaf
            .params()?
            .signed_by(&key, &self.issuer()?)
            .map_err(rcgen_err("leaf certificate"))?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issue `leaf` for the key of a certificate signing request (PEM). Only
    /// the request's key is used: names, usages and validity are `leaf`'s.
    /// Returns the chain.
    pub fn sign_request(&self, leaf: &Leaf, csr_pem: &str) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Parse(format!("certificate signing request: {e}")))?;
        let req = CertificateSigningRequestParams {
            params: leaf.params()?,
            public_key: csr.public_key,
        };
        let cert = req
            .signed_by(&self.issuer()?)
            .map_err(rcgen_err("leaf certificate"))?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// A new key and a certificate signing request for it (PEMs): what a joining
/// server sends, so its key never leaves it.
pub fn signing_request(common_name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(rcgen_err("key"))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("request params"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params
        .serialize_request(&key)
        .map_err(rcgen_err("certificate signing request"))?;
    let pem = csr
        .pem()
        .map_err(rcgen_err("certificate signing request"))?;
    Ok((key.serialize_pem(), pem))
}

/// The one name a Raft member's certificate is valid for.
pub fn peer_name(id: u64) -> String {
    format!("{id:x}.peer.skiff")
}

/// The peer certificate of member `id`.
pub fn peer_leaf(id: u64, lifetime: Duration) -> Leaf {
    Leaf {
        common_name: format!("skiff-peer-{id:x}"),
        organization: Some("skiff:peers".into()),
        hosts: vec![peer_name(id)],
        usage: Usage::Peer,
        lifetime,
    }
}

/// A node agent's serving certificate (the kubelet's, in Kubernetes' names).
pub fn agent_serving_leaf(node: &str, hosts: Vec<String>, lifetime: Duration) -> Leaf {
    Leaf {
        common_name: format!("system:node:{node}"),
        organization: Some("system:nodes".into()),
        hosts,
        usage: Usage::Server,
        lifetime,
    }
}

/// The client certificate API servers present to node agents.
pub fn apiserver_client_leaf(lifetime: Duration) -> Leaf {
    Leaf {
        common_name: "skiff-apiserver".into(),
        organization: Some(APISERVERS_GROUP.into()),
        hosts: vec![],
        usage: Usage::Client,
        lifetime,
    }
}

/// The organization of the API servers' client certificates: what an agent
/// API requires of its callers.
pub const APISERVERS_GROUP: &str = "skiff:apiservers";

/// The API serving certificate for `hosts`.
pub fn serving_leaf(hosts: Vec<String>, lifetime: Duration) -> Leaf {
    Leaf {
        common_name: "skiff-apiserver".into(),
        organization: None,
        hosts,
        usage: Usage::Server,
        lifetime,
    }
}

/// The names a server's certificate covers: localhost, loopback, the in-cluster
/// names of the API (`kubernetes`, ..., `kubernetes.default.svc.cluster.local`,
/// as Kubernetes has them: agents may reach any server by such a fixed name),
/// its API host unless unspecified, and `extra` (`--tls-san`, the node IP).
pub fn serving_hosts(api_addr: &str, extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    let mut add = |h: String| {
        if !h.is_empty() && !hosts.contains(&h) {
            hosts.push(h);
        }
    };
    if let Ok(sa) = api_addr.parse::<std::net::SocketAddr>() {
        let ip: IpAddr = sa.ip();
        if !ip.is_unspecified() {
            add(ip.to_string());
        }
    }
    for h in extra {
        // An IP in any spelling ("::0001") is stored in its canonical form.
        let h = h.trim();
        add(h
            .parse::<IpAddr>()
            .map_or_else(|_| h.to_string(), |ip| ip.to_string()));
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_certificates_name_exactly_their_member() {
        let ca = ClusterCa::generate().unwrap();
        let issued = ca.issue(&peer_leaf(0xabc, LEAF_LIFETIME)).unwrap();
        let info = CertInfo::from_pem(&issued.chain_pem).unwrap();
        assert_eq!(info.peer_id(), Some(0xabc));
        assert_eq!(info.dns_names, vec!["abc.peer.skiff".to_string()]);
        let serving = ca
            .issue(&serving_leaf(
                vec!["localhost".into(), "abc.peer.skiff.evil".into()],
                LEAF_LIFETIME,
            ))
            .unwrap();
        assert_eq!(
            CertInfo::from_pem(&serving.chain_pem).unwrap().peer_id(),
            None
        );
    }

    /// A joining server's request is signed with the CA's names and usages,
    /// not the ones it asked for, and keeps the requester's key.
    #[test]
    fn a_signing_request_gets_the_leaf_the_ca_decides() {
        let ca = ClusterCa::generate().unwrap();
        let (key_pem, csr) = signing_request("whatever-i-like").unwrap();
        let chain = ca.sign_request(&peer_leaf(7, LEAF_LIFETIME), &csr).unwrap();
        let info = CertInfo::from_pem(&chain).unwrap();
        assert_eq!(info.peer_id(), Some(7));
        assert_eq!(info.common_name.as_deref(), Some("skiff-peer-7"));
        let key = KeyPair::from_pem(&key_pem).unwrap();
        let der = rustls_pemfile::certs(&mut chain.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        assert!(
            ca.sign_request(&peer_leaf(7, LEAF_LIFETIME), "junk")
                .is_err()
        );
    }

    #[test]
    fn client_certificates_carry_user_and_groups_and_renew_two_thirds_in() {
        let ca = ClusterCa::generate().unwrap();
        let leaf = Leaf {
            common_name: "jane".into(),
            organization: Some("dev".into()),
            hosts: vec![],
            usage: Usage::Client,
            lifetime: Duration::from_secs(3 * 3600),
        };
        let info = CertInfo::from_pem(&ca.issue(&leaf).unwrap().chain_pem).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("jane"));
        assert_eq!(info.organizations, vec!["dev".to_string()]);
        // Backdated an hour at most, renewed two thirds in.
        let life = info.not_after.duration_since(info.not_before).unwrap();
        assert!(
            (3 * 3600..=4 * 3600 + 1).contains(&life.as_secs()),
            "{life:?}"
        );
        let at = info.renew_at().duration_since(info.not_before).unwrap();
        assert_eq!(at, life * 2 / 3);
        let again = CertInfo::from_pem(&ca.issue(&leaf).unwrap().chain_pem).unwrap();
        assert_ne!(info.serial, again.serial);
    }

    #[test]
    fn serving_hosts_cover_fixed_names_the_api_host_and_extras() {
        let h = serving_hosts(
            "0.0.0.0:6443",
            &["edge.example".into(), "10.0.0.5".into(), "localhost".into()],
        );
        for want in [
            "localhost",
            "127.0.0.1",
            "kubernetes.default.svc.cluster.local",
            "edge.example",
            "10.0.0.5",
        ] {
            assert!(h.contains(&want.to_string()), "{want} in {h:?}");
        }
        assert!(!h.contains(&"0.0.0.0".to_string()), "{h:?}");
        assert_eq!(h.iter().filter(|x| *x == "localhost").count(), 1);
        let h = serving_hosts("192.168.1.4:6443", &["::0001".into()]);
        assert!(h.contains(&"192.168.1.4".to_string()), "{h:?}");
        assert_eq!(h.iter().filter(|x| *x == "::1").count(), 1, "{h:?}");
    }
}
