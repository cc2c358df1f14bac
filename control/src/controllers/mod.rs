//! Controllers: level-triggered reconcilers on the controller framework that
//! run on the Raft leader, one folder per controller, started from the
//! registration table; plus what several of them share (pod helpers, owner
//! claiming, events, node eligibility, revisions).

pub mod bench;
pub mod clusterroles;
pub mod cronjob;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod eligibility;
pub mod endpoints;
pub mod events;
pub mod framework;
pub mod gc;
pub mod hpa;
pub mod ingressstatus;
pub mod job;
pub mod manager;
pub mod metricsapi;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod owners;
pub mod podutil;
pub mod registration;
pub mod replicaset;
pub mod resourcequota;
pub mod revisions;
pub mod scaletozero;
pub mod scheduler;
pub mod serviceaccounts;
pub mod serviceips;
pub mod servicelb;
pub mod statefulset;
pub mod tainteviction;
