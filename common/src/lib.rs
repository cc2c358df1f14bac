//! skiff-common: small pieces (no dependency but serde) that more than one
//! crate must read the same way: the control plane, the node agent, the
//! runtimes and the `skiff` binary, so that none has to link another.

pub mod fs;
pub mod ingress;
pub mod jointoken;
pub mod labels;
pub mod media;
pub mod notify;
pub mod prom;
pub mod qos;
pub mod quantity;
pub mod scale;
pub mod stats;
pub mod sysctl;
