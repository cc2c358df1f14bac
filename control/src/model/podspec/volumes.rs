//! Volume sources: at most one source per volume, and every path a volume
//! writes or a mount reads beneath (`items[].path`, downward API paths,
//! `subPath`) relative and without `..`, as Kubernetes'
//! `validateLocalDescendingPath` and `validateLocalNonReservedPath`.

use serde_json::Value;

use super::super::validate::Cause;
use super::items;

/// The sources a volume may name (one of them).
const SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// Why `path` may not be a path beneath a volume, if it may not: absolute,
/// or with a `..` element.
pub fn descending_path(path: &str) -> Option<&'static str> {
    if path.starts_with('/') {
        return Some("must be a relative path");
    }
    if path.split('/').any(|seg| seg == "..") {
        return Some("must not contain '..'");
    }
    None
}

/// Like [`descending_path`], and not starting with `..` (the atomic writer's
/// own entries, `..data` and the timestamped directories, live there).
pub fn non_reserved_path(path: &str) -> Option<&'static str> {
    if let Some(why) = descending_path(path) {
        return Some(why);
    }
    if path.starts_with("..") {
        return Some("must not start with '..'");
    }
    None
}

fn check_path(causes: &mut Vec<Cause>, field: &str, item: &Value, key: &str) {
    match item.get(key).and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required(&format!("{field}.{key}"))),
        Some(p) => {
            if let Some(why) = non_reserved_path(p) {
                causes.push(Cause::invalid(&format!("{field}.{key}"), p, why));
            }
        }
    }
}

/// `items[].path` of a configMap, secret or downwardAPI source.
fn item_paths(causes: &mut Vec<Cause>, field: &str, source: &Value) {
    for (i, it) in items(source, "items").iter().enumerate() {
        check_path(causes, &format!("{field}.items[{i}]"), it, "path");
    }
}

/// The checks of one volume at `field` (`spec.volumes[i]`).
pub fn volume(causes: &mut Vec<Cause>, field: &str, v: &Value) {
    let named: Vec<&str> = SOURCES
        .iter()
        .copied()
        .filter(|s| v.get(*s).is_some_and(|x| !x.is_null()))
        .collect();
    if named.len() > 1 {
        causes.push(Cause::new(
            "FieldValueForbidden",
            format!("{field}.{}", named[1]),
            "Forbidden: may not specify more than 1 volume type",
        ));
    }
    for key in ["configMap", "secret", "downwardAPI"] {
        if let Some(src) = v.get(key) {
            item_paths(causes, &format!("{field}.{key}"), src);
        }
    }
    if let Some(p) = v.get("projected") {
        for (j, s) in items(p, "sources").iter().enumerate() {
            let sf = format!("{field}.projected.sources[{j}]");
            for key in ["configMap", "secret", "downwardAPI"] {
                if let Some(src) = s.get(key) {
                    item_paths(causes, &format!("{sf}.{key}"), src);
                }
            }
            if let Some(tok) = s.get("serviceAccountToken") {
                check_path(causes, &format!("{sf}.serviceAccountToken"), tok, "path");
            }
        }
    }
    if let Some(size) = v.pointer("/emptyDir/sizeLimit") {
        super::containers::quantity(causes, &format!("{field}.emptyDir.sizeLimit"), size);
    }
    if let Some(Value::String(p)) = v.pointer("/hostPath/path")
        && (!p.starts_with('/') || p.split('/').any(|s| s == ".."))
    {
        causes.push(Cause::invalid(
            &format!("{field}.hostPath.path"),
            p,
            "must be an absolute path without '..'",
        ));
    }
}

/// `subPath` and `subPathExpr` of one volume mount at `field`.
pub fn sub_path(causes: &mut Vec<Cause>, field: &str, m: &Value) {
    let sub = m.get("subPath").and_then(Value::as_str).unwrap_or("");
    let expr = m.get("subPathExpr").and_then(Value::as_str).unwrap_or("");
    if !sub.is_empty() && !expr.is_empty() {
        causes.push(Cause::invalid(
            &format!("{field}.subPathExpr"),
            expr,
            "subPathExpr and subPath are mutually exclusive",
        ));
    }
    for (key, p) in [("subPath", sub), ("subPathExpr", expr)] {
        if let Some(why) = descending_path(p) {
            causes.push(Cause::invalid(&format!("{field}.{key}"), p, why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_table() {
        let cases = [
            ("a", None, None),
            ("a/b/c", None, None),
            ("a..b", None, None),
            ("..data", None, Some("must not start with '..'")),
            ("/etc/passwd", Some("must be a relative path"), None),
            ("../../etc", Some("must not contain '..'"), None),
            ("a/../../b", Some("must not contain '..'"), None),
            ("a/..", Some("must not contain '..'"), None),
        ];
        for (p, descending, reserved) in cases {
            assert_eq!(descending_path(p), descending, "{p}");
            assert_eq!(non_reserved_path(p), descending.or(reserved), "{p}");
        }
    }
}
