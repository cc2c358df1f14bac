//! The media types and platforms that tell a Wasm component image from a
//! container image, shared by the scheduler (which node can run a pod) and
//! the node agent (which runtime runs a container).

/// Layer media types that carry a Wasm component.
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
];

/// Index platform architectures of a Wasm component.
pub const WASM_ARCHES: &[&str] = &["wasm", "wasm32"];

/// Config media types of a container image.
pub const CONTAINER_CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Filesystem layer media types of a container image (those containerd's
/// diff service applies).
pub const CONTAINER_LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// What a manifest's config and layer media types make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Wasm,
    Container,
}

/// The kind of an image manifest from its config and layer media types: a
/// Wasm layer makes it Wasm; a container config with only filesystem layers a
/// container image; anything else neither.
pub fn kind_of(config_type: &str, layer_types: &[&str]) -> Option<ImageKind> {
    if layer_types.iter().any(|t| WASM_LAYER_TYPES.contains(t)) {
        return Some(ImageKind::Wasm);
    }
    let container = CONTAINER_CONFIG_TYPES.contains(&config_type)
        && !layer_types.is_empty()
        && layer_types
            .iter()
            .all(|t| CONTAINER_LAYER_TYPES.contains(t));
    container.then_some(ImageKind::Container)
}

/// This host's architecture as Go (and so OCI platforms and the
/// `kubernetes.io/arch` node label) spell it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let oci = CONTAINER_CONFIG_TYPES[0];
        let tar = CONTAINER_LAYER_TYPES[0];
        assert_eq!(kind_of("x", &["application/wasm"]), Some(ImageKind::Wasm));
        assert_eq!(kind_of(oci, &[tar, tar]), Some(ImageKind::Container));
        assert_eq!(kind_of(oci, &[]), None);
        assert_eq!(kind_of(oci, &[tar, "a/b"]), None);
        assert_eq!(kind_of("x/y", &[tar]), None);
    }
}
