//! Object metadata helpers: server timestamps, uids, and reading an object's
//! name and finalizers.

use serde_json::Value;

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A new random (version 4) UUID, as `metadata.uid`.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        ["8", "9", "a", "b"][(b[8] & 3) as usize],
        &h[17..20],
        &h[20..32]
    )
}

/// The object's `metadata.name` ("" when absent).
pub fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The object's `metadata.finalizers`.
pub fn finalizers_of(obj: &Value) -> Vec<String> {
    strings(obj.pointer("/metadata/finalizers"))
}

/// The strings of a JSON array (none when it is missing or not an array).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the object is being deleted (`metadata.deletionTimestamp` set).
pub fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uids_are_version_4() {
        let u = new_uid();
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
        assert_ne!(u, new_uid());
    }

    #[test]
    fn metadata_reads() {
        let o = json!({"metadata": {"name": "a", "finalizers": ["x", 1, "y"], "deletionTimestamp": null}});
        assert_eq!(name_of(&o), "a");
        assert_eq!(finalizers_of(&o), ["x", "y"]);
        assert!(!deleting(&o));
        assert!(deleting(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        ));
        assert_eq!(name_of(&json!({})), "");
        assert_eq!(now_rfc3339().len(), "2026-01-01T00:00:00Z".len());
    }
}
