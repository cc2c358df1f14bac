//! Scheduling predicates shared by the scheduler and the controllers that place
//! or evict pods: toleration of taints and node selector requirements
//! (Kubernetes' `component-helpers/scheduling`).

/// Kubernetes' `ToleratesTaint`: whether a toleration (key, operator, value,
/// effect) tolerates a taint (key, value, effect). An empty effect or key
/// matches every one; `Exists` matches any value, `Equal` (or empty) the same
/// value.
pub fn toleration_matches(
    (key, op, value, effect): (&str, &str, &str, &str),
    (taint_key, taint_value, taint_effect): (&str, &str, &str),
) -> bool {
    let effect_ok = effect.is_empty() || effect == taint_effect;
    let key_ok = key.is_empty() || key == taint_key;
    let value_ok = match op {
        "Exists" => true,
        "Equal" | "" => value == taint_value,
        _ => false,
    };
    effect_ok && key_ok && value_ok
}

/// A node selector requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`,
/// `Lt`) against the value the node has for its key, if any.
pub fn requirement_matches(have: Option<&str>, op: &str, values: &[String]) -> bool {
    match op {
        "In" => have.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => have.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" | "Lt" => {
            let (Some(a), Some(b)) = (
                have.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|x| x.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if op == "Gt" { a > b } else { a < b }
        }
        _ => false,
    }
}
