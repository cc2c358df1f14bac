//! CertificateSigningRequests (`certificates.k8s.io/v1`), as Kubernetes'
//! `pkg/registry/certificates`: the spec is fixed at creation (who asked is
//! filled in by the API from the requester), `/approval` writes only the
//! Approved/Denied conditions, `/status` the rest of the status (the
//! signer's certificate).
//!
//! **Approved and Denied exclude each other and, once there, stay.**

use base64::Engine;
use serde_json::{Value, json};

use crate::model::ResourceType;
use crate::model::validate::Cause;

use super::strategy::Strategy;

pub struct CsrStrategy;

fn condition_types(obj: &Value) -> Vec<String> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("type").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The PEM a CSR's `spec.request` carries (base64 in JSON).
pub fn request_pem(obj: &Value) -> Option<String> {
    let b64 = obj.pointer("/spec/request").and_then(Value::as_str)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

impl Strategy for CsrStrategy {
    fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut causes = Vec::new();
        match request_pem(obj) {
            Some(pem) if pem.contains("CERTIFICATE REQUEST") => {}
            _ => causes.push(Cause::new(
                "FieldValueInvalid",
                "spec.request",
                "must be a PEM block of type CERTIFICATE REQUEST",
            )),
        }
        let signer = obj
            .pointer("/spec/signerName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if signer.is_empty() || !signer.contains('/') {
            causes.push(Cause::new(
                "FieldValueRequired",
                "spec.signerName",
                "a signer name of the form domain/path is required",
            ));
        }
        if let Some(secs) = obj
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            && secs < 600
        {
            causes.push(Cause::new(
                "FieldValueInvalid",
                "spec.expirationSeconds",
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
        let types = condition_types(obj);
        if types.iter().any(|t| t == "Approved") && types.iter().any(|t| t == "Denied") {
            causes.push(Cause::new(
                "FieldValueInvalid",
                "status.conditions",
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
        for t in ["Approved", "Denied", "Failed"] {
            if types.iter().filter(|x| *x == t).count() > 1 {
                causes.push(Cause::new(
                    "FieldValueDuplicate",
                    "status.conditions",
                    format!("only one {t} condition is allowed"),
                ));
            }
        }
        causes
    }

    fn prepare_for_update(
        &self,
        _t: &ResourceType,
        new: &mut Value,
        old: &Value,
        sub: Option<&str>,
    ) {
        let mut kept = old.clone();
        match sub {
            Some("approval") => {
                // Only the approval conditions change, and none goes away.
                let new_conds = new
                    .pointer("/status/conditions")
                    .cloned()
                    .unwrap_or(json!([]));
                let mut conds: Vec<Value> = old
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for c in new_conds.as_array().into_iter().flatten() {
                    let ty = c.get("type").and_then(Value::as_str).unwrap_or("");
                    if matches!(ty, "Approved" | "Denied")
                        && !conds.iter().any(|o| o.get("type") == c.get("type"))
                    {
                        let mut c = c.clone();
                        if c.get("lastUpdateTime").is_none_or(Value::is_null) {
                            c["lastUpdateTime"] = json!(crate::model::meta::now_rfc3339());
                        }
                        conds.push(c);
                    }
                }
                kept["status"]["conditions"] = Value::Array(conds);
            }
            Some("status") => {
                let mut status = new.get("status").cloned().unwrap_or(json!({}));
                // The approval conditions are /approval's.
                let approval: Vec<Value> = old
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| matches!(c["type"].as_str(), Some("Approved" | "Denied")))
                    .cloned()
                    .collect();
                let mut conds: Vec<Value> = status
                    .get("conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| !matches!(c["type"].as_str(), Some("Approved" | "Denied")))
                    .cloned()
                    .collect();
                conds.splice(0..0, approval);
                status["conditions"] = Value::Array(conds);
                kept["status"] = status;
            }
            // Metadata only: the spec is fixed and the status is the
            // subresources'.
            _ => kept["metadata"] = new["metadata"].clone(),
        }
        *new = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> Value {
        let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
        json!({"metadata": {"name": "jane"},
            "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"]}})
    }

    fn t() -> ResourceType {
        crate::model::Registry::builtin()
            .by_kind("certificates.k8s.io/v1", "CertificateSigningRequest")
            .cloned()
            .unwrap()
    }

    #[test]
    fn approval_adds_conditions_only_and_spec_stays() {
        let old = csr();
        let mut new = csr();
        new["spec"]["signerName"] = json!("evil/signer");
        new["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "reason": "ok"}],
            "certificate": "Zm9v"});
        CsrStrategy.prepare_for_update(&t(), &mut new, &old, Some("approval"));
        assert_eq!(
            new["spec"]["signerName"],
            "kubernetes.io/kube-apiserver-client"
        );
        assert_eq!(new["status"]["conditions"][0]["type"], "Approved");
        assert!(new["status"].get("certificate").is_none());
        // A later status write keeps the approval and adds the certificate.
        let approved = new.clone();
        let mut signed = approved.clone();
        signed["status"] = json!({"certificate": "Y2VydA==", "conditions": []});
        CsrStrategy.prepare_for_update(&t(), &mut signed, &approved, Some("status"));
        assert_eq!(signed["status"]["certificate"], "Y2VydA==");
        assert_eq!(signed["status"]["conditions"][0]["type"], "Approved");
        // A plain update changes neither.
        let mut plain = signed.clone();
        plain["spec"]["usages"] = json!(["server auth"]);
        plain["status"] = json!({});
        plain["metadata"]["labels"] = json!({"a": "b"});
        CsrStrategy.prepare_for_update(&t(), &mut plain, &signed, None);
        assert_eq!(plain["spec"]["usages"][0], "client auth");
        assert_eq!(plain["status"]["certificate"], "Y2VydA==");
        assert_eq!(plain["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn requests_need_a_pem_request_and_a_signer_and_one_verdict() {
        assert!(CsrStrategy.validate(&csr()).is_empty());
        let mut bad = csr();
        bad["spec"]["request"] = json!("bm90IGEgY3Ny");
        bad["spec"]["signerName"] = json!("");
        assert_eq!(CsrStrategy.validate(&bad).len(), 2);
        let mut both = csr();
        both["status"] = json!({"conditions": [{"type": "Approved"}, {"type": "Denied"}]});
        assert_eq!(CsrStrategy.validate(&both).len(), 1);
    }
}
