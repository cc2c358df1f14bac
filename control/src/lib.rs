//! skiff-control: everything that runs on a server: the Raft store, the API,
//! and the controllers (the scheduler among them).

pub mod api;
pub mod controllers;
pub mod images;
pub mod metrics;
pub mod model;
pub mod server;
pub mod store;
