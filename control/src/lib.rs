//! skiff-control: everything that runs on a server: the Raft store, the API,
//! (later) controllers and the scheduler.

pub mod api;
pub mod controllers;
pub mod images;
pub mod metrics;
pub mod model;
pub mod scheduler;
pub mod server;
pub mod store;
