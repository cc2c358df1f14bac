//! Per-container checks: ports (IANA service names, unique across the pod,
//! numbers in range), volume mounts (unique mount paths, safe sub-paths),
//! resource quantities (valid, not negative, requests within limits) and
//! probes (non-negative fields, one handler, `successThreshold` 1 for
//! liveness and startup), as Kubernetes' `validateContainers`.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::super::validate::Cause;
use super::{duplicate, items, volumes};

/// An IANA service name (a port name): at most 15 lowercase alphanumerics or
/// '-', at least one letter, no leading, trailing or double '-'.
pub fn iana_svc_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 15 {
        return Err("must be no more than 15 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must not begin or end with a hyphen");
    }
    if s.contains("--") {
        return Err("must not contain consecutive hyphens");
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)");
    }
    Ok(())
}

/// A resource quantity at `field`: a valid, finite, non-negative quantity.
pub fn quantity(causes: &mut Vec<Cause>, field: &str, v: &Value) -> Option<f64> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            causes.push(Cause::invalid(field, &v.to_string(), "must be a quantity"));
            return None;
        }
    };
    let valid = text
        .trim()
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    match skiff_common::quantity::parse(&text).filter(|n| valid && n.is_finite()) {
        None => {
            causes.push(Cause::invalid(
                field,
                &text,
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ));
            None
        }
        Some(n) if n < 0.0 => {
            causes.push(Cause::invalid(
                field,
                &text,
                "must be greater than or equal to 0",
            ));
            None
        }
        Some(n) => Some(n),
    }
}

fn port_number(causes: &mut Vec<Cause>, field: &str, v: Option<&Value>, zero_ok: bool) {
    let Some(v) = v else { return };
    let n = v.as_i64().unwrap_or(-1);
    let lo = if zero_ok { 0 } else { 1 };
    if !(lo..=65535).contains(&n) {
        causes.push(Cause::invalid(
            field,
            &v.to_string(),
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// Ports of one container at `field`; `names` collects port names across the
/// pod (they must be unique in it).
fn ports(causes: &mut Vec<Cause>, names: &mut HashSet<String>, field: &str, c: &Value) {
    for (i, p) in items(c, "ports").iter().enumerate() {
        let pf = format!("{field}.ports[{i}]");
        if let Some(n) = p.get("name").and_then(Value::as_str) {
            if let Err(why) = iana_svc_name(n) {
                causes.push(Cause::invalid(&format!("{pf}.name"), n, why));
            } else if !names.insert(n.to_string()) {
                causes.push(duplicate(&format!("{pf}.name"), n));
            }
        }
        match p.get("containerPort") {
            None => causes.push(Cause::required(&format!("{pf}.containerPort"))),
            v => port_number(causes, &format!("{pf}.containerPort"), v, false),
        }
        port_number(causes, &format!("{pf}.hostPort"), p.get("hostPort"), true);
        if let Some(proto) = p.get("protocol").and_then(Value::as_str)
            && !matches!(proto, "TCP" | "UDP" | "SCTP")
        {
            causes.push(Cause::new(
                "FieldValueNotSupported",
                format!("{pf}.protocol"),
                format!(
                    "Unsupported value: \"{proto}\": supported values: \"SCTP\", \"TCP\", \"UDP\""
                ),
            ));
        }
    }
}

/// Requests and limits: valid quantities, requests not above limits.
fn resources(causes: &mut Vec<Cause>, field: &str, c: &Value) {
    let Some(r) = c.get("resources") else { return };
    let mut limits = HashMap::new();
    let mut requests = HashMap::new();
    for (key, into) in [("limits", &mut limits), ("requests", &mut requests)] {
        if let Some(m) = r.get(key).and_then(Value::as_object) {
            for (name, q) in m {
                if let Some(n) = quantity(causes, &format!("{field}.resources.{key}[{name}]"), q) {
                    into.insert(name.clone(), (n, q.clone()));
                }
            }
        }
    }
    for (name, (req, q)) in &requests {
        if let Some((lim, lq)) = limits.get(name)
            && req > lim
        {
            let text = q.as_str().map(str::to_string).unwrap_or(q.to_string());
            causes.push(Cause::invalid(
                &format!("{field}.resources.requests[{name}]"),
                &text,
                &format!(
                    "must be less than or equal to {name} limit of {}",
                    lq.as_str().map(str::to_string).unwrap_or(lq.to_string())
                ),
            ));
        }
    }
}

const HANDLERS: &[&str] = &["exec", "httpGet", "tcpSocket", "grpc"];

fn probe(causes: &mut Vec<Cause>, field: &str, p: &Value, success_must_be_one: bool) {
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    ] {
        if let Some(v) = p.get(key).filter(|v| !v.is_null())
            && v.as_i64().is_none_or(|n| n < 0)
        {
            causes.push(Cause::invalid(
                &format!("{field}.{key}"),
                &v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    if success_must_be_one
        && let Some(v) = p.get("successThreshold").and_then(Value::as_i64)
        && v != 1
    {
        causes.push(Cause::invalid(
            &format!("{field}.successThreshold"),
            &v.to_string(),
            "must be 1",
        ));
    }
    let handlers: Vec<&str> = HANDLERS
        .iter()
        .copied()
        .filter(|h| p.get(*h).is_some_and(|x| !x.is_null()))
        .collect();
    match handlers.len() {
        0 => causes.push(Cause::required(field).with_message("must specify a handler type")),
        1 => {}
        _ => causes.push(Cause::new(
            "FieldValueForbidden",
            format!("{field}.{}", handlers[1]),
            "Forbidden: may not specify more than 1 handler type",
        )),
    }
    for h in ["httpGet", "tcpSocket"] {
        if let Some(port) = p.pointer(&format!("/{h}/port")) {
            let pf = format!("{field}.{h}.port");
            match port {
                Value::String(s) => {
                    if let Err(why) = iana_svc_name(s) {
                        causes.push(Cause::invalid(&pf, s, why));
                    }
                }
                v => port_number(causes, &pf, Some(v), false),
            }
        }
    }
}

/// Every check of one container at `field`.
pub fn container(
    causes: &mut Vec<Cause>,
    port_names: &mut HashSet<String>,
    field: &str,
    c: &Value,
) {
    ports(causes, port_names, field, c);
    let mut paths = HashSet::new();
    for (j, m) in items(c, "volumeMounts").iter().enumerate() {
        let mf = format!("{field}.volumeMounts[{j}]");
        if let Some(p) = m.get("mountPath").and_then(Value::as_str)
            && !p.is_empty()
            && !paths.insert(p.to_string())
        {
            causes.push(Cause::invalid(
                &format!("{mf}.mountPath"),
                p,
                "must be unique",
            ));
        }
        volumes::sub_path(causes, &mf, m);
    }
    resources(causes, field, c);
    for (key, one) in [
        ("livenessProbe", true),
        ("readinessProbe", false),
        ("startupProbe", true),
    ] {
        if let Some(p) = c.get(key).filter(|p| !p.is_null()) {
            probe(causes, &format!("{field}.{key}"), p, one);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn port_names_table() {
        for ok in ["http", "metrics-1", "a1"] {
            assert_eq!(iana_svc_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "HTTP", "-a", "a-", "a--b", "123", "sixteen-chars-xx"] {
            assert!(iana_svc_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn container_checks_table() {
        let cases = [
            (
                json!({"ports": [{"name": "web", "containerPort": 80}, {"name": "web", "containerPort": 70000}]}),
                vec!["c.ports[1].name", "c.ports[1].containerPort"],
            ),
            (
                json!({"resources": {"requests": {"cpu": "2", "memory": "x"}, "limits": {"cpu": "1"}}}),
                vec!["c.resources.requests[memory]", "c.resources.requests[cpu]"],
            ),
            (
                json!({"resources": {"limits": {"memory": "-1Mi", "cpu": "inf"}}}),
                vec!["c.resources.limits[cpu]", "c.resources.limits[memory]"],
            ),
            (
                json!({"livenessProbe": {"periodSeconds": -1, "successThreshold": 2, "exec": {}, "httpGet": {"port": 8080}}}),
                vec![
                    "c.livenessProbe.periodSeconds",
                    "c.livenessProbe.successThreshold",
                    "c.livenessProbe.httpGet",
                ],
            ),
            (json!({"readinessProbe": {}}), vec!["c.readinessProbe"]),
            (
                json!({"volumeMounts": [{"name": "a", "mountPath": "/d"}, {"name": "b", "mountPath": "/d", "subPath": "../../etc"}]}),
                vec!["c.volumeMounts[1].mountPath", "c.volumeMounts[1].subPath"],
            ),
        ];
        for (c, want) in cases {
            let mut causes = Vec::new();
            container(&mut causes, &mut HashSet::new(), "c", &c);
            let got: Vec<String> = causes.into_iter().map(|c| c.field).collect();
            assert_eq!(got, want, "{c}");
        }
    }
}
