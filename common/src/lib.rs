//! skiff-common: small, dependency-free pieces both the control plane and the
//! node agent need, so neither has to link the other.

pub mod fs;
pub mod media;
pub mod notify;
pub mod prom;
pub mod qos;
pub mod quantity;
pub mod scale;
pub mod stats;
