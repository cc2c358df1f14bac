//! What a node agent reports about resource use and traffic (`GET
//! /stats/summary` on the agent API), read by the API server for
//! `metrics.k8s.io`, the custom pod metrics and the autoscalers.
//!
//! Rates are over the agent's sampling window (`window_seconds`), from
//! cumulative counters sampled once a second.

use serde::{Deserialize, Serialize};

/// A node's report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeUsage,
    pub pods: Vec<PodUsage>,
    /// Connections the node's proxy sent to Services (ClusterIP, NodePort,
    /// LoadBalancer; the activator included).
    pub services: Vec<ServiceActivity>,
    /// The window the rates are measured over, in seconds.
    pub window_seconds: f64,
    /// RFC 3339 time of the newest sample.
    pub timestamp: String,
}

/// Node-wide use (all processes of the host).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    pub name: String,
    pub cpu_nanocores: u64,
    /// Working set: total minus available memory.
    pub memory_bytes: u64,
}

/// One pod's use.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
    pub containers: Vec<ContainerUsage>,
    /// Requests the agent served for the pod's Wasm HTTP containers; `None`
    /// for pods it does not see requests of (containers).
    pub http: Option<HttpUsage>,
    /// Seconds since the pod started running on the node.
    pub running_seconds: f64,
}

/// One container's share of its pod's use.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsage {
    pub name: String,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// HTTP traffic of a pod.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpUsage {
    pub requests_total: u64,
    pub requests_per_second: f64,
    /// Average number of requests in flight over the window.
    pub concurrency: f64,
    pub in_flight: u64,
    /// Seconds since the last request ended (0 while one is in flight), or
    /// since the pod started when it has had none.
    pub idle_seconds: f64,
}

/// Connections to one Service seen by one node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceActivity {
    pub namespace: String,
    pub name: String,
    pub connections_total: u64,
    /// Seconds since the last new connection, or since the agent began
    /// watching the Service when it has had none.
    pub idle_seconds: f64,
}
