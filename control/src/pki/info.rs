//! What a certificate says: names, groups, validity, and when to renew it.

use std::time::{Duration, SystemTime};

use super::{PkiError, peer_name};

/// What a certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The serial number in hex.
    pub serial: String,
}

fn unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

impl CertInfo {
    /// Read a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertInfo, PkiError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
        let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
            it.filter_map(|a| a.as_str().ok().map(str::to_string))
                .collect::<Vec<_>>()
        };
        let subject = cert.subject();
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        };
        let v = cert.validity();
        Ok(CertInfo {
            common_name: strings(&mut subject.iter_common_name()).into_iter().next(),
            organizations: strings(&mut subject.iter_organization()),
            dns_names,
            not_before: unix(v.not_before.timestamp()),
            not_after: unix(v.not_after.timestamp()),
            serial: cert.raw_serial_as_string().replace(':', ""),
        })
    }

    /// Read the first certificate of a PEM bundle (a chain's leaf).
    pub fn from_pem(pem: &str) -> Result<CertInfo, PkiError> {
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .ok_or_else(|| PkiError::Parse("no certificate in PEM".into()))?
            .map_err(|e| PkiError::Parse(e.to_string()))?;
        CertInfo::from_der(&der)
    }

    /// When to replace it: two thirds into its validity.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }

    /// The member id a peer certificate names, if it is one.
    pub fn peer_id(&self) -> Option<u64> {
        let [name] = self.dns_names.as_slice() else {
            return None;
        };
        let hex = name.strip_suffix(".peer.skiff")?;
        u64::from_str_radix(hex, 16)
            .ok()
            .filter(|id| peer_name(*id) == *name)
    }
}
