//! The top-level `wit/` against the Wasm runtime: it parses with wit-parser;
//! its worlds are what the runtime's linkers provide (a component importing
//! every interface of a world loads as that world); the example components fit
//! their worlds; a component importing an interface Skiff does not host is
//! refused with an error naming it.

use skiff_runtimes::wasm::{WasmError, WasmRuntime, World, world};

#[path = "../../tests/e2e/common/components.rs"]
mod components;
#[path = "../../tests/e2e/common/examples.rs"]
mod examples;

fn runtime() -> (tempfile::TempDir, WasmRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let rt = WasmRuntime::new(&dir.path().join("cache")).unwrap();
    (dir, rt)
}

#[test]
fn wit_parses_with_wit_parser() {
    let (resolve, main) = components::resolve(&[]);
    let pkg = &resolve.packages[main[0]];
    assert_eq!(pkg.name.to_string(), "skiff:pods@0.1.0");
    let worlds: Vec<&str> = pkg.worlds.keys().map(String::as_str).collect();
    assert_eq!(worlds, ["http-pod", "command-pod"]);
    let mut wasi: Vec<String> = resolve
        .packages
        .iter()
        .filter(|(_, p)| p.name.namespace == "wasi")
        .map(|(_, p)| p.name.to_string())
        .collect();
    wasi.sort();
    assert_eq!(
        wasi,
        [
            "wasi:cli@0.2.12",
            "wasi:clocks@0.2.12",
            "wasi:filesystem@0.2.12",
            "wasi:http@0.2.12",
            "wasi:io@0.2.12",
            "wasi:random@0.2.12",
            "wasi:sockets@0.2.12",
        ]
    );
}

#[test]
fn each_world_is_what_the_runtime_links() {
    let (_dir, rt) = runtime();
    for (name, want, at_least) in [
        ("skiff:pods/http-pod", World::Http, 25),
        ("skiff:pods/command-pod", World::Command, 20),
    ] {
        let bytes = components::component(&[], name);
        let c = rt.load(&format!("sha256:{name}"), &bytes).unwrap();
        let imports = c.component_type().imports(rt.engine()).len();
        assert!(imports >= at_least, "{name} imports only {imports}");
        match world(&rt, &c) {
            Ok(w) => assert_eq!(w, want, "{name}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn examples_fit_their_worlds() {
    let (_dir, rt) = runtime();
    for (dir, file, want) in [
        ("hello-wasm", "hello_wasm.wasm", World::Http),
        ("wasm-job", "wasm_job.wasm", World::Command),
    ] {
        let bytes = std::fs::read(examples::example_wasm(dir, file)).unwrap();
        let c = rt.load(&format!("sha256:{dir}"), &bytes).unwrap();
        assert_eq!(world(&rt, &c).unwrap(), want, "{dir}");
    }
}

#[test]
fn an_import_skiff_does_not_host_is_named() {
    let (_dir, rt) = runtime();
    let bytes = components::component(components::KEYVALUE_HTTP, "test:kv/kv-http");
    let c = rt.load("sha256:kv", &bytes).unwrap();
    let err = world(&rt, &c).unwrap_err();
    assert!(
        matches!(&err, WasmError::UnsupportedImport { import } if import == "wasi:keyvalue/store@0.2.0-draft"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the component imports wasi:keyvalue/store@0.2.0-draft, which this node does not provide"
    );
    // A command that imports wasi:http is refused too: commands get no wasi:http.
    let bytes = components::component(
        &[
            "package test:cmd;\nworld fetching-command {\n  include wasi:cli/command@0.2.12;\n  import wasi:http/outgoing-handler@0.2.12;\n}\n",
        ],
        "test:cmd/fetching-command",
    );
    let c = rt.load("sha256:cmd", &bytes).unwrap();
    let err = world(&rt, &c).unwrap_err();
    assert!(
        matches!(&err, WasmError::UnsupportedImport { import } if import.contains("wasi:http/outgoing-handler@0.2.12")),
        "{err:?}"
    );
}
