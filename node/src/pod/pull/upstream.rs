//! Images from the registry an image reference names (or its mirrors in
//! `registries.yaml`), through `oci-client`: the manifest (an index resolved
//! to this node's platform, a Wasm entry first), then blobs on demand. Each
//! credential is tried with a client of its own, so a token one pod's secret
//! earned is never used for another pod's pull.

use oci_client::Reference;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;

use super::creds::{Credential, Keyring};
use super::registries::{Endpoint, Registries};

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Why an upstream pull failed; `unreachable` when no endpoint answered at
/// all (so a copy the cluster already holds may stand in).
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    pub unreachable: bool,
}

/// Where the image was found, to fetch its blobs from.
pub struct Source {
    client: oci_client::Client,
    reference: Reference,
    /// `host[:port]` answered.
    pub host: String,
}

/// A manifest found upstream (an index already resolved).
pub struct Found {
    pub source: Source,
    pub manifest: Vec<u8>,
    pub digest: String,
    pub media_type: String,
    /// The config and the layers, which the manifest names.
    pub blobs: Vec<OciDescriptor>,
}

impl Source {
    /// A blob, its digest verified by the client.
    pub async fn blob(&self, d: &OciDescriptor) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(usize::try_from(d.size).unwrap_or(0).min(1 << 30));
        self.client
            .pull_blob(&self.reference, d, &mut out)
            .await
            .map_err(|e| format!("blob {} from {}: {}", d.digest, self.host, describe(&e)))?;
        Ok(out)
    }
}

fn client_for(regs: &Registries, ep: &Endpoint) -> Result<oci_client::Client, String> {
    let trust = regs.trust(&ep.host)?;
    let mut certs = Vec::new();
    for pem in &trust.ca_pem {
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            let c = c.map_err(|e| format!("CA bundle for {}: {e}", ep.host))?;
            certs.push(Certificate {
                encoding: CertificateEncoding::Der,
                data: c.to_vec(),
            });
        }
    }
    let config = ClientConfig {
        protocol: if ep.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: trust.insecure_skip_verify,
        extra_root_certificates: certs,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        user_agent: concat!("skiff/", env!("CARGO_PKG_VERSION")),
        // Indexes are resolved here, not by the client.
        platform_resolver: None,
        ..ClientConfig::default()
    };
    oci_client::Client::try_from(config).map_err(|e| format!("client for {}: {e}", ep.host))
}

/// The reference to ask `ep` for.
fn at_endpoint(r: &Reference, ep: &Endpoint) -> Reference {
    let mut out = match (r.tag(), r.digest()) {
        (_, Some(d)) => Reference::with_digest(
            r.registry().to_string(),
            ep.repository.clone(),
            d.to_string(),
        ),
        (t, None) => Reference::with_tag(
            r.registry().to_string(),
            ep.repository.clone(),
            t.unwrap_or("latest").to_string(),
        ),
    };
    if ep.mirror {
        out.set_mirror_registry(ep.host.clone());
    }
    out
}

/// Whether the registry refused the credential (try the next one).
fn refused(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 401 || *code == 403,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

/// Whether nothing answered (a connection or timeout error).
fn no_answer(e: &OciDistributionError) -> bool {
    matches!(e, OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout())
}

/// A registry's error as a person reads it: the status first.
pub fn describe(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::UnauthorizedError { url } => {
            format!("401 Unauthorized ({url}): no credential, or the registry refused it")
        }
        OciDistributionError::AuthenticationFailure(m) => {
            format!("401 Unauthorized: authentication failed: {m}")
        }
        OciDistributionError::ServerError { code, url, message } => {
            let m: String = message.chars().take(200).collect();
            format!("{code} from {url}: {m}")
        }
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|x| format!("{:?}: {}", x.code, x.message))
                .collect();
            format!("{url}: {}", codes.join("; "))
        }
        OciDistributionError::RequestError(r) => {
            let mut s = r.to_string();
            let mut src = std::error::Error::source(r);
            while let Some(x) = src {
                s.push_str(": ");
                s.push_str(&x.to_string());
                src = x.source();
            }
            s
        }
        other => other.to_string(),
    }
}

/// The media type a manifest declares (else an OCI image manifest).
fn media_type_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
        .unwrap_or_else(|| {
            // An index without mediaType still lists `manifests`.
            if serde_json::from_slice::<OciImageIndex>(bytes).is_ok_and(|i| !i.manifests.is_empty())
            {
                INDEX_TYPES[0].to_string()
            } else {
                ACCEPT[0].to_string()
            }
        })
}

/// Find `r` upstream: each endpoint in turn, each credential in turn.
pub async fn find(regs: &Registries, keyring: &Keyring, r: &Reference) -> Result<Found, Failure> {
    let endpoints = regs.endpoints(r.registry(), r.repository());
    if endpoints.is_empty() {
        return Err(Failure {
            reason: format!(
                "not found in the cluster's image store (import or push it there), and this node contacts no registry for {} (the default endpoint is disabled and registries.yaml names no mirror)",
                r.registry()
            ),
            unreachable: false,
        });
    }
    let mut reasons = Vec::new();
    let mut all_unreachable = true;
    for ep in endpoints {
        let target = at_endpoint(r, &ep);
        let mut creds: Vec<Credential> = keyring.lookup(&ep.host, &ep.repository);
        if ep.mirror {
            // A mirror also takes the credentials given for the registry itself.
            creds.extend(keyring.lookup(r.registry(), r.repository()));
        }
        if let Some(c) = regs.auth(&ep.host) {
            creds.push(c);
        }
        let mut auths: Vec<RegistryAuth> = Vec::new();
        for c in creds {
            let a = c.to_auth();
            if !auths.contains(&a) {
                auths.push(a);
            }
        }
        if auths.is_empty() {
            auths.push(RegistryAuth::Anonymous);
        }
        for auth in auths {
            let client = match client_for(regs, &ep) {
                Ok(c) => c,
                Err(e) => {
                    all_unreachable = false;
                    reasons.push(e);
                    break;
                }
            };
            match manifest(&client, &target, &auth).await {
                Ok((manifest, digest, media_type, blobs)) => {
                    return Ok(Found {
                        source: Source {
                            client,
                            reference: target,
                            host: ep.host.clone(),
                        },
                        manifest,
                        digest,
                        media_type,
                        blobs,
                    });
                }
                Err(Step::Registry(e)) => {
                    if !no_answer(&e) {
                        all_unreachable = false;
                    }
                    reasons.push(format!("{}: {}", ep.host, describe(&e)));
                    if refused(&e) {
                        continue;
                    }
                    break;
                }
                Err(Step::Unusable(why)) => {
                    all_unreachable = false;
                    reasons.push(format!("{}: {why}", ep.host));
                    break;
                }
            }
        }
    }
    Err(Failure {
        reason: reasons.join("; "),
        unreachable: all_unreachable,
    })
}

enum Step {
    Registry(OciDistributionError),
    Unusable(String),
}

/// The manifest `r` names, an index resolved to one entry.
async fn manifest(
    client: &oci_client::Client,
    r: &Reference,
    auth: &RegistryAuth,
) -> Result<(Vec<u8>, String, String, Vec<OciDescriptor>), Step> {
    let (mut bytes, mut digest) = client
        .pull_manifest_raw(r, auth, ACCEPT)
        .await
        .map_err(Step::Registry)?;
    let mut media_type = media_type_of(&bytes);
    if INDEX_TYPES.contains(&media_type.as_str()) {
        let index: OciImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| Step::Unusable(format!("the image index does not parse: {e}")))?;
        let entries: Vec<(String, String)> = index
            .manifests
            .iter()
            .map(|m| {
                (
                    m.platform
                        .as_ref()
                        .map(|p| p.architecture.clone())
                        .unwrap_or_default(),
                    m.digest.clone(),
                )
            })
            .collect();
        let pick = super::pick_platform(&entries)
            .ok_or_else(|| Step::Unusable("the image index lists no manifests".into()))?;
        (bytes, digest) = client
            .pull_manifest_raw(&r.clone_with_digest(pick), auth, ACCEPT)
            .await
            .map_err(Step::Registry)?;
        media_type = media_type_of(&bytes);
        if INDEX_TYPES.contains(&media_type.as_str()) {
            return Err(Step::Unusable("an index inside an index".into()));
        }
    }
    let m: OciImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| Step::Unusable(format!("the image manifest does not parse: {e}")))?;
    let mut blobs = vec![m.config];
    blobs.extend(m.layers);
    Ok((bytes, digest, media_type, blobs))
}
