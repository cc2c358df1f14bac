//! `metadata.managedFields`: reading and writing its entries, and giving the
//! writer of an update the fields it changed.

use serde_json::{Value, json};

use super::fieldset::{self, FieldSet};
use super::meta::now_rfc3339;

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Managed {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

pub fn read(obj: &Value) -> Vec<Managed> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Managed {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .to_string(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    time: e
                        .get("time")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    fields: e
                        .get("fieldsV1")
                        .map(fieldset::from_fields_v1)
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write(obj: &mut Value, entries: &[Managed]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fieldset::to_fields_v1(&e.fields),
            })
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Give `manager` (operation Update) the fields that changed from `old` to `new`,
/// taking them from other managers. Writes the result into `new`.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str) {
    let mut entries = old.map(read).unwrap_or_default();
    let changed = fieldset::changed(old.unwrap_or(&json!({})), new);
    if changed.is_empty() {
        write(new, &entries);
        return;
    }
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    for e in entries
        .iter_mut()
        .filter(|e| !(e.manager == manager && e.operation == "Update"))
    {
        e.fields.retain(|p| !changed.contains(p));
    }
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update")
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = now_rfc3339();
        }
        None => entries.push(Managed {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version,
            time: now_rfc3339(),
            fields: changed,
        }),
    }
    write(new, &entries);
}
