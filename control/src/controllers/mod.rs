//! Controllers: level-triggered loops that run on the Raft leader.

pub mod cronjob;
pub mod deployment;
pub mod gc;
pub mod job;
pub mod manager;
pub mod nodes;
pub mod owners;
pub mod podutil;
pub mod replicaset;
pub mod runtime;
pub mod support;
