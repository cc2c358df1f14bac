//! skiff-node: the node agent. It registers its Node, heartbeats through a
//! Lease, builds the pod network (bridge, veth, a namespace per pod), and runs
//! every pod bound to it, each container either as a Wasm component in the
//! pod's sandbox threads or as an OCI container through containerd (the image
//! decides); it also runs the node's Service proxy (nftables), the activator
//! of scaled-to-zero Services, the cluster DNS, the Ingress router and the
//! routes to the other nodes' pods.

pub mod activator;
pub mod agent;
pub mod cgroup;
pub mod dns;
pub mod eviction;
#[cfg(test)]
pub(crate) mod fakes;
pub mod host;
pub mod ingress;
pub mod net;
pub mod netpol;
pub mod pod;
pub mod proxy;
pub mod stats;

pub use skiff_runtimes as runtimes;
