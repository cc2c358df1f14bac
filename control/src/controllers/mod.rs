//! Controllers: level-triggered loops that run on the Raft leader.

pub mod bench;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod eligibility;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod manager;
pub mod nodes;
pub mod owners;
pub mod podutil;
pub mod replicaset;
pub mod revisions;
pub mod runtime;
pub mod servicelb;
pub mod statefulset;
pub mod support;
