//! The merge keys of list fields in the built-in types (Kubernetes' `patchMergeKey`):
//! which field identifies an item, for strategic merge, managed fields and OpenAPI.

/// The merge key of a list field, given the field that holds the enclosing object
/// (`""` at the top), or None when the list is replaced as a whole.
pub fn merge_key(parent: &str, field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports"
            if matches!(
                parent,
                "containers" | "initContainers" | "ephemeralContainers"
            ) =>
        {
            "containerPort"
        }
        "ports" => "port",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "readinessGates" => "conditionType",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}
