//! End-to-end tests, in one test binary: each starts real `skiff server` (and
//! `skiff agent`) processes on unique loopback ports with their own data dirs,
//! and drives them with the real `kubectl`, the Python client or HTTP.
//!
//! The tiers below this one need no processes: unit tests sit beside the code,
//! and `control/tests/` holds the in-process tier (a store, the API router and
//! an in-process client in one test process).
//!
//! - `user::` tests need no privileges: servers run with `--disable-agent`, so
//!   nothing touches the host beyond loopback ports and temp dirs.
//! - `root::` files hold the tests that need root: they start node agents that
//!   create network namespaces, bridges, routes, nftables tables, cgroups and
//!   containerd tasks (every name unique to the test; all removed at the end).
//!   A few tests in these files need no root themselves but share the file's
//!   helpers (`config::config_file_env_and_flags_kubeconfig_and_version`,
//!   `host::volume_names_that_are_paths_are_refused`,
//!   `host::install_script_writes_units_systemd_accepts`,
//!   `host::the_server_tells_systemd_it_is_ready_and_alive`, and every
//!   `store_cluster` test but `servers_restarted_one_at_a_time_…`).
//!
//! Pick a tier with a filter: `cargo nextest run --test e2e 'user::'`.

mod common;

mod user {
    mod api_semantics;
    mod at_rest;
    mod crash_cycles;
    mod helm;
    mod images;
    mod kubectl_api;
    mod limits;
    mod podsecurity;
    mod quota;
    mod rbac;
    mod scheduling;
    mod snapshot;
}

mod root {
    mod agent;
    mod autoscale;
    mod chaos;
    mod config;
    mod containers;
    mod edge;
    mod eviction;
    mod host;
    mod hostns;
    mod incluster;
    mod ingress;
    mod isolation;
    mod jobs;
    mod netpol;
    mod pods;
    mod podspec;
    mod pull;
    mod push;
    mod services;
    mod sets;
    mod store_cluster;
    mod wit_worlds;
    mod workloads;
    mod world;
}
