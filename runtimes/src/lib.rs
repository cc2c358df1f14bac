//! skiff-runtimes: the `Runtime` trait and its Wasm (wasmtime) and OCI (containerd)
//! backends.
//!
//! Empty until the runtimes land; the control plane must never depend on this crate.
