//! Field sets for managed fields: which leaf fields an object (or an applied
//! configuration) sets, in the `FieldsV1` shape Kubernetes shows in
//! `metadata.managedFields` (`f:spec`, `k:{"name":"c"}`, `.`).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::mergekeys::merge_key;

/// A set of paths; each path is a list of `f:name` / `k:{...}` segments.
pub type FieldSet = BTreeSet<Vec<String>>;

/// Fields that are the server's, never owned by a manager.
fn skipped(path: &[String], key: &str) -> bool {
    match path {
        [] => matches!(key, "apiVersion" | "kind" | "status"),
        [m] if m == "f:metadata" => matches!(
            key,
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "deletionTimestamp"
                | "managedFields"
                | "selfLink"
        ),
        _ => false,
    }
}

/// The leaf fields `v` sets.
pub fn of(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), "", &mut out);
    out
}

fn walk(v: &Value, path: &mut Vec<String>, parent: &str, out: &mut FieldSet) {
    let Value::Object(m) = v else {
        out.insert(path.clone());
        return;
    };
    if m.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    let this = path
        .last()
        .and_then(|s| s.strip_prefix("f:"))
        .unwrap_or(parent)
        .to_string();
    for (k, child) in m {
        if skipped(path, k) {
            continue;
        }
        path.push(format!("f:{k}"));
        match child {
            Value::Object(_) => walk(child, path, &this, out),
            Value::Array(items) => match merge_key(&this, k) {
                Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                    for item in items {
                        let id = json!({ key: item.get(key).cloned().unwrap_or(Value::Null) });
                        path.push(format!("k:{id}"));
                        let mut dot = path.clone();
                        dot.push(".".into());
                        out.insert(dot);
                        walk(item, path, k, out);
                        path.pop();
                    }
                }
                _ => {
                    out.insert(path.clone());
                }
            },
            _ => {
                out.insert(path.clone());
            }
        }
        path.pop();
    }
}

/// The value at a path, if the object has it.
pub fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        if seg == "." {
            return Some(cur);
        }
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let id: Value = serde_json::from_str(k).ok()?;
            let (key, val) = id.as_object()?.iter().next()?;
            cur = cur.as_array()?.iter().find(|i| i.get(key) == Some(val))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Remove the field at a path (a list item for a path ending in `.`).
pub fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    if last == "." {
        let Some((item, list_path)) = parent_path.split_last() else {
            return;
        };
        let (Some(k), Some(list)) = (item.strip_prefix("k:"), get_mut(v, list_path)) else {
            return;
        };
        let Ok(Value::Object(id)) = serde_json::from_str::<Value>(k) else {
            return;
        };
        if let (Some((key, val)), Some(arr)) = (id.iter().next(), list.as_array_mut()) {
            arr.retain(|i| i.get(key) != Some(val));
        }
        return;
    }
    if let (Some(f), Some(Value::Object(m))) = (last.strip_prefix("f:"), get_mut(v, parent_path)) {
        m.remove(f);
    }
}

fn get_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let id: Value = serde_json::from_str(k).ok()?;
            let (key, val) = id.as_object()?.iter().next()?;
            let (key, val) = (key.clone(), val.clone());
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|i| i.get(&key) == Some(&val))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// `FieldsV1` JSON of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let e = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            cur = e.as_object_mut().expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// Parse `FieldsV1` JSON back into a set of leaf paths.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn go(v: &Value, path: &mut Vec<String>, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, c) in m {
                    path.push(k.clone());
                    go(c, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    go(v, &mut Vec::new(), &mut out);
    out
}

/// Leaf paths whose value differs between `old` and `new` (in either direction).
pub fn changed(old: &Value, new: &Value) -> FieldSet {
    let a = of(old);
    let b = of(new);
    a.union(&b)
        .filter(|p| get(old, p) != get(new, p))
        .cloned()
        .collect()
}

/// Human form of a path (`.spec.containers[name="c"].image`).
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let inner = serde_json::from_str::<Value>(k)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .and_then(|m| m.into_iter().next())
                .map(|(k, v)| format!("{k}={v}"))
                .unwrap_or_default();
            s.push_str(&format!("[{inner}]"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fieldset_roundtrip_and_removal() {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i:1", "args": ["a"]}]}}}});
        let set = of(&obj);
        let shown: Vec<String> = set.iter().map(|p| display(p)).collect();
        assert!(
            shown.contains(&".metadata.labels.app".to_string()),
            "{shown:?}"
        );
        assert!(
            shown.contains(&".spec.template.spec.containers[name=\"c\"].image".to_string()),
            "{shown:?}"
        );
        assert!(!shown.iter().any(|s| s.contains("metadata.name")));
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        let image: Vec<String> = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"c\"}",
            "f:image",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(get(&obj, &image), Some(&json!("i:1")));
        let mut o2 = obj.clone();
        remove(&mut o2, &image);
        assert!(
            o2.pointer("/spec/template/spec/containers/0/image")
                .is_none()
        );
        let replicas = vec!["f:spec".to_string(), "f:replicas".to_string()];
        let mut o3 = obj.clone();
        o3["spec"]["replicas"] = json!(5);
        assert_eq!(changed(&obj, &o3), FieldSet::from([replicas]));
    }
}
