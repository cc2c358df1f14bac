//! Errors of the Wasm runtime.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The image is not a Wasm binary at all: another runtime should take it.
    #[error("not a wasm image: {reason}")]
    NotMine { reason: String },
    #[error("the image is a core wasm module, not a component; skiff runs components (wasi 0.2)")]
    CoreModule,
    #[error("compile component: {reason}")]
    Compile { reason: String },
    /// It imports interfaces (named, comma-separated) outside its world.
    #[error("the component imports {import}, which this node does not provide")]
    UnsupportedImport { import: String },
    #[error("the component fits none of the worlds this node hosts: {reason}")]
    UnsupportedWorld { reason: String },
    #[error("mount a volume: {reason}")]
    Mount { reason: String },
    #[error("engine: {reason}")]
    Engine { reason: String },
    #[error("component cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl WasmError {
    pub(crate) fn engine(e: impl std::fmt::Display) -> WasmError {
        WasmError::Engine {
            reason: format!("{e:#}"),
        }
    }
}
