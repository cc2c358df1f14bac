//! Build the example Wasm components (release, wasm32-wasip2) into
//! `target/wasm`. Shared by the end-to-end tests and the runtime's tests.

use std::path::PathBuf;
use std::process::Command;

/// The repository's root (where `examples/` is).
pub fn repo_root() -> PathBuf {
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !root.join("examples").is_dir() {
        root = root.join("..");
    }
    root
}

/// Build `examples/<crate_dir>` and return the path of its `file`.
pub fn example_wasm(crate_dir: &str, file: &str) -> PathBuf {
    let root = repo_root();
    let target = root.join("target/wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join(format!("examples/{crate_dir}/Cargo.toml")))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(
        ok.success(),
        "building examples/{crate_dir} for wasm32-wasip2 (rustup target add wasm32-wasip2)"
    );
    let out = target.join(format!("wasm32-wasip2/release/{file}"));
    assert!(
        out.is_file(),
        "examples/{crate_dir} built, but {} is not there (a lib crate's file is named with `_`)",
        out.display()
    );
    out
}
