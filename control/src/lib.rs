//! skiff-control: everything that runs on a server: the Raft store, the
//! storage layer over it, the Kubernetes API (HTTP only), the image store and
//! its OCI distribution endpoint, the metrics collector, and the controllers
//! and the scheduler (both on the Raft leader only).
//!
//! **Never depends on wasmtime, containerd or skiff-node: it meets the nodes
//! only over the API.**
//!
//! **Top-level modules import each other in one direction** (checked by
//! `tests/layering.rs`): each imports only modules listed before it in
//! `store`, `model`, `agents`, `imagestore`, `storage`, `auth`, `metrics`, `controllers`
//! (the scheduler among them), `api`, `server`.

pub mod agents;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod controllers;
pub mod imagestore;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod podsecurity;
pub mod server;
pub mod storage;
pub mod store;
