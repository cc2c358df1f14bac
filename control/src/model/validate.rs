//! Admission checks: typed decoding through `k8s-openapi` (types, required fields),
//! unknown-field detection for `fieldValidation=Strict`, and metadata rules
//! (names, labels, annotations, sizes).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// One field-level problem, as in `metav1.StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn new(
        reason: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Cause {
        Cause {
            reason,
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn required(field: &str) -> Cause {
        Cause::new("FieldValueRequired", field, "Required value")
    }
    /// The same cause with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> Cause {
        self.message = message.into();
        self
    }
    pub fn invalid(field: &str, value: &str, why: &str) -> Cause {
        Cause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: \"{value}\": {why}"),
        )
    }
}

/// Decode `v` as `T` and serialise it back; errors carry the JSON path.
pub fn decode_typed<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, Vec<Cause>> {
    let typed: T = serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let (reason, field) = match inner.strip_prefix("missing field `") {
            Some(rest) => {
                let name = rest.split('`').next().unwrap_or_default();
                let field = if path == "." || path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
                ("FieldValueRequired", field)
            }
            None => ("FieldValueInvalid", path),
        };
        vec![Cause::new(reason, field, inner)]
    })?;
    serde_json::to_value(&typed)
        .map_err(|e| vec![Cause::new("FieldValueInvalid", "", e.to_string())])
}

/// Fields present in `input` (and not null) that the typed round trip dropped.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(input, typed, "", &mut out);
    out
}

fn walk_unknown(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(tv) => walk_unknown(v, tv, &p, out),
                    None if !v.is_null() && !is_empty_container(v) => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                walk_unknown(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty_container(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty()) || matches!(v, Value::Array(a) if a.is_empty())
}

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: at most 63 lowercase alphanumerics or '-', alphanumeric at both ends.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok = s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    if ok {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    let ok = s.chars().all(|c| is_alnum_lower(c) || c == '-' || c == '.')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    if ok {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into())
    }
}

/// RFC 1035 label (Service names): like a 1123 label but starting with a letter.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    dns1123_label(s)?;
    if s.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

/// A name usable as one URL path segment (RBAC objects, e.g. `system:viewer`).
pub fn path_segment_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('%') {
        return Err("may not be '.' or '..' and may not contain '/' or '%'".into());
    }
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    Ok(())
}

fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        dns1123_subdomain(p).map_err(|e| format!("prefix part {e}"))?;
    }
    label_value(name)?;
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    Ok(())
}

fn label_value(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = s.is_empty()
        || (s
            .chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
            && s.starts_with(alnum)
            && s.ends_with(alnum));
    if ok {
        Ok(())
    } else {
        Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
    }
}

/// Checks of `metadata` shared by all kinds: labels and annotations.
pub fn metadata(meta: &Map<String, Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(Value::Object(labels)) = meta.get("labels") {
        for (k, v) in labels {
            if let Err(e) = qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", k, &e));
            }
            match v.as_str() {
                Some(s) => {
                    if let Err(e) = label_value(s) {
                        causes.push(Cause::invalid(&format!("metadata.labels.{k}"), s, &e));
                    }
                }
                None => causes.push(Cause::invalid(
                    &format!("metadata.labels.{k}"),
                    &v.to_string(),
                    "must be a string",
                )),
            }
        }
    }
    if let Some(Value::Object(ann)) = meta.get("annotations") {
        let mut total = 0;
        for (k, v) in ann {
            if let Err(e) = qualified_name(&k.to_ascii_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", k, &e));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            causes.push(Cause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
    causes
}

/// Check `v` against the JSON schema `schema` (with `$ref`s into `defs`): types,
/// required properties, enums. k8s-openapi's decoders default missing required
/// lists, so required fields are checked here from the published schema.
pub fn schema(
    v: &Value,
    schema: &Value,
    defs: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Cause>,
) {
    let schema = resolve(schema, defs);
    if v.is_null() {
        return;
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for s in all {
            self::schema(v, s, defs, path, out);
        }
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !type_ok {
        let want = ty.unwrap_or("value");
        out.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: {}: {path} in body must be of type {want}",
                short(v)
            ),
        ));
        return;
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(v)
    {
        let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        out.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                short(v),
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(req)) = schema.get("required") {
                for r in req.iter().filter_map(Value::as_str) {
                    if m.get(r).is_none_or(Value::is_null) {
                        out.push(Cause::required(&join(path, r)));
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties");
            for (k, child) in m {
                let sub = props
                    .and_then(|p| p.get(k))
                    .or(extra.filter(|e| e.is_object()));
                if let Some(sub) = sub {
                    self::schema(child, sub, defs, &join(path, k), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self::schema(item, item_schema, defs, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.rsplit('/').next().and_then(|name| defs.get(name)) {
                Some(next) => s = next,
                None => return s,
            },
            None => return s,
        }
    }
    s
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 64 {
        format!("{}...", &s[..64])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let cases: &[(&str, bool, bool, bool)] = &[
            // name, label, subdomain, 1035
            ("web", true, true, true),
            ("web-1", true, true, true),
            ("1web", true, true, false),
            ("Web", false, false, false),
            ("a.b", false, true, false),
            ("-a", false, false, false),
            ("a-", false, false, false),
            ("", false, false, false),
        ];
        for (n, l, s, d) in cases {
            assert_eq!(dns1123_label(n).is_ok(), *l, "label {n}");
            assert_eq!(dns1123_subdomain(n).is_ok(), *s, "subdomain {n}");
            assert_eq!(dns1035_label(n).is_ok(), *d, "1035 {n}");
        }
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain(&"a".repeat(254)).is_err());
        assert!(path_segment_name("system:viewer").is_ok());
    }

    #[test]
    fn labels_table() {
        let meta = serde_json::json!({
            "labels": {"app": "web", "example.com/tier": "db", "bad key!": "x", "ok": "-bad"}
        });
        let causes = metadata(meta.as_object().unwrap());
        assert_eq!(causes.len(), 2, "{causes:?}");
    }

    #[test]
    fn typed_decode_reports_paths() {
        use k8s_openapi::api::core::v1::Pod;
        let reg = crate::model::Registry::builtin();
        let t = reg.by_kind("v1", "Pod").unwrap();
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"image": "x"}], "restartPolicy": 5}});
        let mut causes = Vec::new();
        schema(
            &pod,
            &serde_json::json!({"$ref": format!("#/components/schemas/{}", t.schema_name)}),
            reg.definitions(),
            "",
            &mut causes,
        );
        let fields: Vec<(&str, &str)> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason))
            .collect();
        assert!(
            fields.contains(&("spec.containers[0].name", "FieldValueRequired")),
            "{fields:?}"
        );
        assert!(
            fields.contains(&("spec.restartPolicy", "FieldValueTypeInvalid")),
            "{fields:?}"
        );
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        let err = decode_typed::<Pod>(&bad).unwrap_err();
        assert_eq!(err[0].field, "spec.containers");
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}], "extra": true}});
        let typed = decode_typed::<Pod>(&pod).unwrap();
        assert_eq!(
            unknown_fields(&pod, &typed),
            vec![
                "spec.containers[0].bogus".to_string(),
                "spec.extra".to_string()
            ]
        );
    }
}
