//! skiff-control: everything that runs on a server: the Raft store, the storage
//! layer over it, the HTTP API, the controllers and the scheduler.
//!
//! **Top-level modules import each other in one direction** (checked by
//! `tests/layering.rs`): each imports only modules listed before it in
//! `store`, `model`, `agents`, `images`, `storage`, `metrics`, `controllers`,
//! `scheduler`, `api`, `server`.

pub mod agents;
pub mod api;
pub mod controllers;
pub mod images;
pub mod metrics;
pub mod model;
pub mod scheduler;
pub mod server;
pub mod storage;
pub mod store;
