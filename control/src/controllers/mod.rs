//! Controllers: level-triggered loops that run on the Raft leader.

pub mod nodes;
pub mod support;
