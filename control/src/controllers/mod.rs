//! Controllers: level-triggered loops that run on the Raft leader.

pub mod bench;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod eligibility;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod manager;
pub mod metricsapi;
pub mod nodes;
pub mod owners;
pub mod podutil;
pub mod replicaset;
pub mod revisions;
pub mod runtime;
pub mod scaletozero;
pub mod serviceips;
pub mod servicelb;
pub mod statefulset;
pub mod support;
