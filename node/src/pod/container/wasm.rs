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
            netns: Some(self.netns.clone()),
            memory_gauge: self.ctx.stats.pod(&self.pod.uid).map(|p| p.memory.clone()),
            max_concurrency: self.pod.max_concurrency,
            resolver: Some(self.resolver()),
            trust_pem: self.trust(env, &mounts),
            mounts,
        }
    }

    /// The pod's names, as its `resolv.conf` gives them.
    fn resolver(&self) -> skiff_runtimes::Resolver {
        let host_network = self.pod.spec.host_network == Some(true);
        let from = self.ctx.resolv_sources(host_network);
        let text = crate::net::resolv::render(&self.pod.namespace, &self.pod.spec, &from);
        crate::dns::pod::for_pod(&self.ctx.dns, &text, from.cluster)
    }

    /// What the guest's `https` trusts besides the platform's roots: the
    /// cluster CA, and the bundle its `SSL_CERT_FILE` names in one of its
    /// volumes (a ConfigMap of certificates, say), as OpenSSL would read it.
    fn trust(&self, env: &Env, mounts: &[skiff_runtimes::Mount]) -> Vec<u8> {
        let mut pem = self.ctx.cluster_ca.clone().into_bytes();
        let named = env.vars.iter().find(|(k, _)| k == "SSL_CERT_FILE");
        if let Some((_, file)) = named {
            let found = mounts.iter().find_map(|m| {
                let rest = file.strip_prefix(m.guest_path.trim_end_matches('/'))?;
                Some(m.host_path.join(rest.trim_start_matches('/')))
            });
            match found.map(std::fs::read) {
                Some(Ok(bytes)) => {
                    pem.push(b'\n');
                    pem.extend(bytes);
                }
                Some(Err(e)) => tracing::warn!(file, error = %e, "SSL_CERT_FILE cannot be read"),
                None => tracing::warn!(file, "SSL_CERT_FILE is in none of the container's volumes"),
            }
        }
        pem
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
