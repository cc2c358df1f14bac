//! Signs approved CertificateSigningRequests of the
//! `kubernetes.io/kube-apiserver-client` signer with the cluster CA, as
//! Kubernetes' `csrsigning` controller: the certificate carries the
//! request's subject (CN = user, O = group) and key, client authentication
//! only, valid for `expirationSeconds` (at least 10 minutes) or at most the
//! server's certificate lifetime. A request of that signer that asks for
//! anything a client certificate may not have gets a `Failed` condition;
//! other signers' requests are left to them.
//!
//! **Level-triggered: an approved, undenied, unfailed request without a
//! certificate is signed; nothing else is touched.**

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::controllers::framework::{Action, Controller, Informer, Key, Queue, Reconciler, Result};
use crate::controllers::registration::Ctx;
use crate::pki::{ClusterCa, Leaf, Usage};

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

pub struct Signing {
    client: kube::Client,
    csrs: Arc<Informer<CertificateSigningRequest>>,
    ca: Arc<ClusterCa>,
    max: Duration,
}

/// What to do with a request: sign it for a CN and O, fail it, or nothing.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Sign(Leaf),
    Fail(String),
    Skip,
}

/// The decision for `csr` (pure: the table test drives it).
pub fn decide(csr: &CertificateSigningRequest, max: Duration) -> Verdict {
    let status = csr.status.as_ref();
    if status.and_then(|s| s.certificate.as_ref()).is_some() {
        return Verdict::Skip;
    }
    let has = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    if csr.spec.signer_name != CLIENT_SIGNER || !has("Approved") || has("Denied") || has("Failed") {
        return Verdict::Skip;
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if let Some(u) = usages.iter().find(|u| {
        !matches!(
            u.as_str(),
            "client auth" | "digital signature" | "key encipherment"
        )
    }) {
        return Verdict::Fail(format!(
            "usage {u:?} is not allowed for signer {CLIENT_SIGNER}"
        ));
    }
    if !usages.iter().any(|u| u == "client auth") {
        return Verdict::Fail("usages must include \"client auth\"".into());
    }
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let Ok(der) = pem_der(&pem) else {
        return Verdict::Fail("spec.request is not a PEM certificate request".into());
    };
    use x509_parser::prelude::FromDer;
    let Ok((_, req)) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
    else {
        return Verdict::Fail("spec.request does not parse as a certificate request".into());
    };
    if req.verify_signature().is_err() {
        return Verdict::Fail("the request's signature does not verify".into());
    }
    let subject = &req.certification_request_info.subject;
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let cn = first(&mut subject.iter_common_name());
    let orgs = first(&mut subject.iter_organization());
    let Some(cn) = cn.into_iter().next().filter(|c| !c.is_empty()) else {
        return Verdict::Fail("the request's subject has no common name (the user)".into());
    };
    if orgs.len() > 1 {
        return Verdict::Fail(
            "the request names more than one organization; Skiff signs one group per certificate"
                .into(),
        );
    }
    let asked = csr
        .spec
        .expiration_seconds
        .map_or(max, |s| Duration::from_secs(s.max(600) as u64));
    Verdict::Sign(Leaf {
        common_name: cn,
        organization: orgs.into_iter().next(),
        hosts: vec![],
        usage: Usage::Client,
        lifetime: asked.min(max),
    })
}

fn pem_der(pem: &str) -> std::result::Result<Vec<u8>, ()> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    if !pem.contains("CERTIFICATE REQUEST") {
        return Err(());
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| ())
}

impl Reconciler for Signing {
    fn name(&self) -> &'static str {
        "csrsigning"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let Some(csr) = self.csrs.get(key) else {
            return Ok(Action::await_change());
        };
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        let now = crate::model::meta::now_rfc3339();
        let mut conditions = csr
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .unwrap_or(json!([]));
        let status = match decide(&csr, self.max) {
            Verdict::Skip => return Ok(Action::await_change()),
            Verdict::Fail(why) => {
                tracing::info!(csr = %key.name, %why, "certificate request failed");
                if let Some(cs) = conditions.as_array_mut() {
                    cs.push(json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                        "message": why, "lastUpdateTime": now, "lastTransitionTime": now}));
                }
                json!({"conditions": conditions})
            }
            Verdict::Sign(leaf) => {
                let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
                let chain = match self.ca.sign_request(&leaf, &pem) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(csr = %key.name, error = %e, "cannot sign");
                        return Ok(Action::await_change());
                    }
                };
                // The leaf alone: clients know the CA from their kubeconfig.
                let leaf_pem = chain
                    .split_inclusive("-----END CERTIFICATE-----\n")
                    .next()
                    .unwrap_or(&chain)
                    .to_string();
                tracing::info!(csr = %key.name, user = %leaf.common_name, "signed a client certificate");
                json!({"conditions": conditions,
                    "certificate": base64::engine::general_purpose::STANDARD.encode(leaf_pem)})
            }
        };
        api.patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
        Ok(Action::await_change())
    }
}

pub fn start(ctx: &mut Ctx<'_>) {
    let csrs = ctx.informer::<CertificateSigningRequest>();
    let Some((ca, max)) = ctx.settings.signer.clone() else {
        return;
    };
    let c = Arc::new(Signing {
        client: ctx.client.clone(),
        csrs: csrs.clone(),
        ca,
        max,
    });
    let q = Queue::new();
    {
        let q = q.clone();
        csrs.on(move |_, r| q.add(Key::new("", r.metadata.name.as_deref().unwrap_or(""))));
    }
    let all = csrs.clone();
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![(&csrs).into()])
            .resync(move || {
                all.list("")
                    .iter()
                    .map(|r| Key::new("", r.metadata.name.as_deref().unwrap_or("")))
                    .collect()
            }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, org: Option<&str>) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if let Some(o) = org {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, o);
        }
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(pem: &str, signer: &str, usages: &[&str], conds: &[&str]) -> CertificateSigningRequest {
        serde_json::from_value(json!({"metadata": {"name": "x"},
            "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": signer, "usages": usages, "expirationSeconds": 3600},
            "status": {"conditions": conds.iter().map(|t| json!({"type": t, "status": "True"})).collect::<Vec<_>>()}}))
        .unwrap()
    }

    #[test]
    fn decisions_table() {
        let max = Duration::from_secs(86400);
        let jane = request("jane", Some("dev"));
        let client = ["client auth", "digital signature"];
        match decide(&csr(&jane, CLIENT_SIGNER, &client, &["Approved"]), max) {
            Verdict::Sign(l) => {
                assert_eq!(
                    (l.common_name.as_str(), l.organization.as_deref()),
                    ("jane", Some("dev"))
                );
                assert_eq!(l.lifetime, Duration::from_secs(3600));
            }
            v => panic!("{v:?}"),
        }
        for (c, why) in [
            (csr(&jane, CLIENT_SIGNER, &client, &[]), "not approved"),
            (csr(&jane, CLIENT_SIGNER, &client, &["Denied"]), "denied"),
            (
                csr(&jane, CLIENT_SIGNER, &client, &["Approved", "Failed"]),
                "failed",
            ),
            (
                csr(&jane, "example.com/other", &client, &["Approved"]),
                "another signer",
            ),
        ] {
            assert_eq!(decide(&c, max), Verdict::Skip, "{why}");
        }
        assert!(matches!(
            decide(
                &csr(&jane, CLIENT_SIGNER, &["server auth"], &["Approved"]),
                max
            ),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            decide(
                &csr(&request("", None), CLIENT_SIGNER, &client, &["Approved"]),
                max
            ),
            Verdict::Fail(_)
        ));
    }
}
