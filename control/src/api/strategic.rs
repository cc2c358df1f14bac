//! Strategic merge patch (`application/strategic-merge-patch+json`) for the built-in
//! types: lists of objects merge by their merge key (containers by `name`, volume
//! mounts by `mountPath`, ...), with the `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList` and `$setElementOrder` directives.

use serde_json::{Map, Value};

use crate::model::mergekeys::merge_key;

/// Lists of scalars that merge (union) instead of being replaced.
fn merges_primitives(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Apply `patch` to `target` in place.
pub fn apply(target: &mut Value, patch: &Value) {
    merge_value(target, patch, "", "");
}

fn merge_value(target: &mut Value, patch: &Value, parent: &str, field: &str) {
    match (target.as_object_mut(), patch) {
        (Some(t), Value::Object(p)) => merge_map(t, p, field),
        _ => *target = strip_directives(patch),
    }
    let _ = parent;
}

fn merge_map(t: &mut Map<String, Value>, p: &Map<String, Value>, this_field: &str) {
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = p.clone();
        replaced.remove("$patch");
        *t = match strip_directives(&Value::Object(replaced)) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        return;
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
    }
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Value::Array(del)) = (t.get_mut(list), v) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Object(pm) if pm.get("$patch").and_then(Value::as_str) == Some("delete") => {
                t.remove(k);
            }
            Value::Object(_) => match t.get_mut(k) {
                Some(cur) if cur.is_object() => merge_value(cur, v, this_field, k),
                _ => {
                    let mut fresh = Value::Object(Map::new());
                    merge_value(&mut fresh, v, this_field, k);
                    t.insert(k.clone(), fresh);
                }
            },
            Value::Array(items) => {
                let cur = t.remove(k);
                let merged = merge_list(cur, items, this_field, k);
                t.insert(k.clone(), merged);
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(cur: Option<Value>, patch: &[Value], parent: &str, field: &str) -> Value {
    let cur = match cur {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    // A lone {"$patch": "replace"} item means: the list is exactly the other items.
    if patch
        .iter()
        .any(|x| x.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Value::Array(
            patch
                .iter()
                .filter(|x| x.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
    }
    if let Some(key) = merge_key(parent, field) {
        let mut out = cur;
        for item in patch {
            let Some(kv) = item.get(key) else {
                out.push(strip_directives(item));
                continue;
            };
            let pos = out.iter().position(|o| o.get(key) == Some(kv));
            let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
            match (pos, delete) {
                (Some(i), true) => {
                    out.remove(i);
                }
                (None, true) => {}
                (Some(i), false) => merge_value(&mut out[i], item, parent, field),
                (None, false) => out.push(strip_directives(item)),
            }
        }
        return Value::Array(out);
    }
    if merges_primitives(field) {
        let mut out = cur;
        for item in patch {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        return Value::Array(out);
    }
    Value::Array(patch.iter().map(strip_directives).collect())
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_cases() {
        let cases = vec![
            // containers merge by name; other fields kept
            (
                json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}}),
                json!({"spec": {"containers": [{"name": "b", "image": "y:2"}]}}),
                json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}]}}),
            ),
            // delete a list item by key
            (
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
                json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
                json!({"spec": {"containers": [{"name": "b"}]}}),
            ),
            // null removes a field; labels merge
            (
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
                json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
                json!({"metadata": {"labels": {"b": "2", "c": "3"}}}),
            ),
            // lists without a merge key are replaced
            (
                json!({"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}}),
                json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}}),
                json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}}),
            ),
            // container ports merge by containerPort, service ports by port
            (
                json!({"spec": {"ports": [{"port": 80, "name": "http"}]}}),
                json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}),
                json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}),
            ),
            // $patch: replace on a map
            (
                json!({"data": {"a": "1", "b": "2"}}),
                json!({"data": {"$patch": "replace", "c": "3"}}),
                json!({"data": {"c": "3"}}),
            ),
            // finalizers union; deleteFromPrimitiveList
            (
                json!({"metadata": {"finalizers": ["x"]}}),
                json!({"metadata": {"finalizers": ["y"], "$deleteFromPrimitiveList/finalizers": ["x"]}}),
                json!({"metadata": {"finalizers": ["y"]}}),
            ),
            // setElementOrder is ignored
            (
                json!({"spec": {"replicas": 1}}),
                json!({"spec": {"replicas": 5, "$setElementOrder/containers": [{"name": "a"}]}}),
                json!({"spec": {"replicas": 5}}),
            ),
        ];
        for (mut orig, patch, want) in cases {
            apply(&mut orig, &patch);
            assert_eq!(orig, want, "patch {patch}");
        }
    }
}
