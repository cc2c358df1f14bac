//! Server-side apply (`application/apply-patch+yaml`); the `metadata.managedFields`
//! bookkeeping of every write is `model::managed`.
//!
//! **A field set by one manager and applied with a different value by another is a
//! conflict (409) unless the apply is forced; a forced apply takes the field over.
//! Fields a manager applied before and no longer applies are removed, unless
//! another manager also owns them.**

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::model::ResourceType;
use crate::model::fieldset::{self, FieldSet};
use crate::model::managed::{Managed, read, write};
use crate::model::meta::now_rfc3339;

use super::patch::PatchOptions;
use super::{body, strategic};
use crate::model::status::{ApiError, ApiResult};
use crate::storage::{Objects, WriteOptions, Written, qualified};

/// Server-side apply of `doc` to `t`/`ns`/`name`.
pub async fn server_side_apply(
    o: &Objects,
    t: &ResourceType,
    ns: Option<&str>,
    name: &str,
    doc: &[u8],
    opts: &PatchOptions,
) -> ApiResult<Written> {
    let manager = opts
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
            )
        })?;
    let mut config = body::yaml(doc)?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "an applied configuration must be an object",
        ));
    }
    let given = config
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name);
    if given != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    let applied = fieldset::of(&config);
    let api_version = t.api_version();
    for _ in 0..8 {
        let current = match o.get(t, ns, name).await {
            Ok(c) => Some(c),
            Err(e) if e.code == StatusCode::NOT_FOUND => None,
            Err(e) => return Err(e),
        };
        let Some(current) = current else {
            let mut obj = config.clone();
            let m = obj
                .as_object_mut()
                .expect("object")
                .entry("metadata")
                .or_insert_with(|| json!({}));
            m["name"] = json!(name);
            let wo = WriteOptions {
                field_validation: opts.field_validation,
                dry_run: opts.dry_run,
                manager: manager.clone(),
                apply_fields: Some(applied.clone()),
            };
            match o.create(t, ns, obj, &wo).await {
                Err(e) if e.reason == "AlreadyExists" => continue,
                other => return other,
            }
        };
        let mut entries = read(&current);
        let others: Vec<&Managed> = entries
            .iter()
            .filter(|e| !(e.manager == manager && e.operation == "Apply"))
            .collect();
        let mut conflicts = Vec::new();
        for p in &applied {
            if p.last().is_some_and(|s| s == ".") {
                continue;
            }
            for e in &others {
                if e.fields.contains(p) && fieldset::get(&current, p) != fieldset::get(&config, p) {
                    conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !opts.force {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, av, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {av}"), "field": fieldset::display(p)}))
                .collect();
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(m, _, p)| format!("conflict with \"{m}\": {}", fieldset::display(p)))
                .collect();
            let mut err = ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    lines.len(),
                    if lines.len() == 1 { "" } else { "s" },
                    lines.join("\n")
                ),
            );
            err.details =
                Some(json!({"name": name, "kind": t.plural, "group": t.group, "causes": causes}));
            return Err(err);
        }
        // Forced: the other managers (an Update by the same name is another one) lose
        // the applied fields.
        for e in entries
            .iter_mut()
            .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        {
            e.fields.retain(|p| !applied.contains(p));
        }
        let previous = entries
            .iter()
            .find(|e| e.manager == manager && e.operation == "Apply")
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let still_owned: FieldSet = entries
            .iter()
            .filter(|e| !(e.manager == manager && e.operation == "Apply"))
            .flat_map(|e| e.fields.iter().cloned())
            .collect();
        let mut merged = current.clone();
        // Remove what this manager applied before and dropped now (deepest first).
        let mut dropped: Vec<&Vec<String>> = previous
            .iter()
            .filter(|p| !applied.contains(*p) && !still_owned.contains(*p))
            .collect();
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in dropped {
            fieldset::remove(&mut merged, p);
        }
        strategic::apply(&mut merged, &config);
        match entries
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Apply")
        {
            Some(e) => {
                e.fields = applied.clone();
                e.time = now_rfc3339();
                e.api_version = api_version.clone();
            }
            None => entries.push(Managed {
                manager: manager.clone(),
                operation: "Apply".into(),
                api_version: api_version.clone(),
                time: now_rfc3339(),
                fields: applied.clone(),
            }),
        }
        write(&mut merged, &entries);
        let wo = WriteOptions {
            field_validation: opts.field_validation,
            dry_run: opts.dry_run,
            manager: manager.clone(),
            apply_fields: Some(FieldSet::new()),
        };
        match o.update(t, ns, name, merged, None, &wo).await {
            Err(e) if e.code == StatusCode::CONFLICT && e.reason == "Conflict" => continue,
            other => return other,
        }
    }
    Err(ApiError::conflict(&qualified(t), name))
}
