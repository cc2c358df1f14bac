//! Components built in-test from WIT: the top-level `wit/` plus extra
//! packages given as text, one of their worlds, and wit-component's dummy
//! core module (every function traps), encoded as a component. Shared by the
//! runtime's tests and the end-to-end tests.

use std::path::PathBuf;

use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

/// The repository's top-level `wit/`.
pub fn wit_dir() -> PathBuf {
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !root.join("wit").is_dir() {
        root = root.join("..");
    }
    root.join("wit")
}

/// `wit/` resolved, and the ids of its main package and of `packages`.
pub fn resolve(packages: &[&str]) -> (Resolve, Vec<wit_parser::PackageId>) {
    let mut resolve = Resolve::default();
    let (skiff, _) = resolve.push_dir(wit_dir()).expect("wit/ resolves");
    let mut main = vec![skiff];
    for (i, text) in packages.iter().enumerate() {
        let id = resolve
            .push_str(format!("extra{i}.wit"), text)
            .expect("the extra WIT resolves");
        main.push(id);
    }
    (resolve, main)
}

/// A component of `world` (e.g. `skiff:pods/http-pod` or `test:kv/kv-http`),
/// resolved against `wit/` and the extra WIT `packages`.
pub fn component(packages: &[&str], world: &str) -> Vec<u8> {
    let (resolve, main) = resolve(packages);
    let world = resolve
        .select_world(&main, Some(world))
        .expect("the world exists");
    let mut module =
        wit_component::dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed the world");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("the dummy module")
        .validate(true)
        .encode()
        .expect("encode the component")
}

/// A package with `wasi:keyvalue/store` (a WASI proposal Skiff does not host)
/// and a world `test:kv/kv-http`: an HTTP component that also imports it.
pub const KEYVALUE_HTTP: &[&str] = &[
    r#"package wasi:keyvalue@0.2.0-draft;

interface store {
  resource bucket {
    get: func(key: string) -> result<option<list<u8>>, string>;
  }
  open: func(identifier: string) -> result<bucket, string>;
}
"#,
    r#"package test:kv;

world kv-http {
  include wasi:http/proxy@0.2.12;
  import wasi:keyvalue/store@0.2.0-draft;
}
"#,
];
