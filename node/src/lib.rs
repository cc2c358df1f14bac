//! skiff-node: the node agent (pod workers, pod network, service proxy).
//!
//! Empty until the agent lands (issue "Node agent, scheduler and Wasm pods"); the crate
//! exists now so the dependency direction `skiff -> skiff-node -> skiff-runtimes` is fixed.

pub use skiff_runtimes as runtimes;
