//! Admission of an incoming object: kind and namespace checks, generated names,
//! metadata and per-kind validation (the kind's strategy), typed decoding
//! through `k8s-openapi`, strict field checks and defaults.

use serde_json::{Value, json};

use crate::model::meta::name_of;
use crate::model::status::{ApiError, ApiResult};
use crate::model::validate::{self, Cause};
use crate::model::{ResourceType, defaults};

use super::strategy::Strategy;
use super::{Objects, meta, meta_mut};

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> ApiResult<FieldValidation> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(o) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict, got {o:?}"
            ))),
        }
    }
}

/// Five characters for generated names, from Kubernetes' alphabet (no
/// vowels, no look-alikes).
pub(super) fn random_suffix() -> String {
    (0..5)
        .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27)]))
        .collect()
}

impl Objects {
    /// Admit an incoming object of type `t` in namespace `ns` under its kind's
    /// strategy: returns the object to store (typed-normalised, defaulted) and
    /// warnings.
    pub(super) fn admit(
        &self,
        strategy: &dyn Strategy,
        t: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        fv: FieldValidation,
    ) -> ApiResult<(Value, Vec<String>)> {
        let api_version = t.api_version();
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "a {} must be a JSON object",
                t.kind
            )));
        }
        let kind_ok = obj.get("kind").is_none_or(|k| k == t.kind);
        let av_ok = obj.get("apiVersion").is_none_or(|a| *a == api_version);
        if !kind_ok || !av_ok {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({api_version}) or kind ({}) does not match {}",
                obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                obj.get("kind").and_then(Value::as_str).unwrap_or(""),
                t.kind
            )));
        }
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(t.kind);
        let m = meta_mut(&mut obj);
        if t.namespaced {
            let ns = ns.unwrap_or("default");
            match m.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        if m.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            && let Some(prefix) = m.get("generateName").and_then(Value::as_str)
        {
            let name = format!("{prefix}{}", random_suffix());
            m.insert("name".into(), json!(name));
        }
        let name = name_of(&obj);
        let mut causes = Vec::new();
        if name.is_empty() {
            causes.push(Cause::required("metadata.name"));
        } else if let Err(e) = strategy.validate_name(&name) {
            causes.push(Cause::invalid("metadata.name", &name, &e));
        }
        if let Some(m) = meta(&obj) {
            causes.extend(validate::metadata(m));
        }
        causes.extend(crate::model::scaling::check(t.group, t.kind, &obj));
        causes.extend(crate::model::podspec::check(t.group, t.kind, &obj));
        causes.extend(strategy.validate(&obj));
        causes.extend(self.registry.check_schema(t, &obj));
        if !causes.is_empty() {
            return Err(ApiError::invalid(t.kind, &name, causes));
        }
        let typed = (t.decode)(&obj).map_err(|c| ApiError::invalid(t.kind, &name, c))?;
        let unknown = validate::unknown_fields(&obj, &typed);
        let mut warnings = Vec::new();
        if !unknown.is_empty() {
            match fv {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
                }
                FieldValidation::Ignore => {}
            }
        }
        let mut out = typed;
        defaults::apply(&api_version, t.kind, &mut out);
        Ok((out, warnings))
    }
}
