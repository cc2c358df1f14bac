//! The Wasm side of a container: what a component is given to run — its
//! argv (`command` and `args` with `$(VAR)` expanded), environment, preopened
//! mounts, memory limit and the pod's network namespace — and the ports an
//! HTTP component listens on.
//!
//! **A container that declares no TCP port is served on
//! [`super::DEFAULT_HTTP_PORT`].**

use skiff_runtimes::ContainerSpec;

use super::super::env::Env;
use super::{DEFAULT_HTTP_PORT, Runner};

impl Runner {
    pub(super) fn container_spec(
        &self,
        env: &Env,
        mounts: Vec<skiff_runtimes::Mount>,
    ) -> ContainerSpec {
        let expanded = |list: &Option<Vec<String>>| -> Vec<String> {
            list.iter().flatten().map(|s| env.expand(s)).collect()
        };
        // Command and args see `$(VAR)` of the container's environment.
        let command: Vec<String> = expanded(&self.spec.command);
        let (argv0, mut args) = match command.split_first() {
            Some((first, rest)) => (first.clone(), rest.to_vec()),
            None => (self.name(), Vec::new()),
        };
        args.extend(expanded(&self.spec.args));
        let memory_limit = super::super::resource(&self.spec, "limits", "memory")
            .and_then(super::super::quantity)
            .map(|b| b as u64);
        ContainerSpec {
            name: argv0,
            args,
            env: env.vars.clone(),
            memory_limit,
            timeout: None,
            mounts,
            netns: Some(self.netns.clone()),
            memory_gauge: self.ctx.stats.pod(&self.pod.uid).map(|p| p.memory.clone()),
            max_concurrency: self.pod.max_concurrency,
        }
    }

    pub(super) fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        if ports.is_empty() {
            ports.push(DEFAULT_HTTP_PORT);
        }
        ports
    }
}
