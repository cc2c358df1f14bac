//! skiff-control: everything that runs on a server: the Raft store, the
//! Kubernetes API, the image store and its OCI distribution endpoint, the
//! metrics collector, and the controllers and the scheduler (both on the Raft
//! leader only).
//!
//! **Never depends on wasmtime, containerd or skiff-node: it meets the nodes
//! only over the API.**

pub mod api;
pub mod controllers;
pub mod images;
pub mod metrics;
pub mod model;
pub mod server;
pub mod store;
