//! skiff-node: the node agent. Today it registers its Node (capacity, runtimes,
//! system info) and heartbeats through a Lease; pod workers, the pod network and
//! the service proxy come next.

pub mod agent;

pub use skiff_runtimes as runtimes;
