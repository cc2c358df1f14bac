//! The Wasm runtime: one shared wasmtime `Engine` (component model, async,
//! epoch interruption, pooling allocator), compiled components cached on disk by
//! digest, `wasi:cli/command` components run as processes and `wasi:http/proxy`
//! components served per request.
//!
//! **A guest's failure (trap, memory limit, timeout) ends that guest's run or
//! request only; the runtime and its other guests keep going.**

mod command;
mod egress;
mod error;
mod http;
pub mod run;
mod state;
mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use command::run_command;
pub use error::WasmError;
pub use http::{HttpApp, HttpStats};
pub use wasmtime::component::Component;
pub use world::{World, check as check_world};

/// How often the epoch advances: the granularity of timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// What kind of Wasm binary some bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    Component,
    CoreModule,
}

/// Classify bytes: a component, a core module, or not Wasm (the agent's "not mine").
pub fn classify(bytes: &[u8]) -> Result<BinaryKind, WasmError> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(WasmError::NotMine {
            reason: "no \\0asm header".into(),
        });
    }
    // Version 1 is a core module; components carry layer 1 in the upper half.
    match (
        bytes[4..6] == [1, 0],
        bytes[6..8] == [0, 0],
        bytes[6..8] == [1, 0],
    ) {
        (true, true, _) => Ok(BinaryKind::CoreModule),
        (_, _, true) => Ok(BinaryKind::Component),
        _ => Err(WasmError::NotMine {
            reason: format!("unknown wasm version/layer {:?}", &bytes[4..8]),
        }),
    }
}

/// The world a component targets, from its imports and exports checked
/// against the worlds in `wit/` (see `world`); then the linker of that world
/// type-checks the imports. An error names an import Skiff does not provide,
/// or what the component exports instead of a world Skiff runs.
pub fn world(rt: &WasmRuntime, component: &Component) -> Result<World, WasmError> {
    let ty = component.component_type();
    let w = world::check(
        ty.imports(rt.engine()).map(|(name, _)| name),
        ty.exports(rt.engine()).map(|(name, _)| name),
    )?;
    command::linker(rt, w == World::Http)?
        .instantiate_pre(component)
        .map_err(command::pre_error)?;
    Ok(w)
}

/// Linkers built once per runtime: WASI p2, and WASI p2 with wasi:http.
pub(crate) struct Linkers {
    pub cli: wasmtime::component::Linker<state::GuestState>,
    pub http: wasmtime::component::Linker<state::GuestState>,
}

/// The per-agent Wasm runtime.
#[derive(Clone)]
pub struct WasmRuntime {
    engine: Engine,
    cache_dir: PathBuf,
    stop: Arc<AtomicBool>,
    pub(crate) linkers: Arc<Linkers>,
    /// Compiled components by digest, shared by every pod that runs them.
    loaded: Arc<std::sync::Mutex<std::collections::HashMap<String, Component>>>,
    compiling: Arc<std::sync::Mutex<()>>,
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        if Arc::strong_count(&self.stop) == 1 {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl WasmRuntime {
    /// A runtime caching compiled components in `cache_dir`.
    pub fn new(cache_dir: &Path) -> Result<WasmRuntime, WasmError> {
        std::fs::create_dir_all(cache_dir).map_err(|source| WasmError::Cache {
            path: cache_dir.to_path_buf(),
            source,
        })?;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(2000)
            .total_core_instances(4000)
            .total_memories(4000)
            .total_tables(4000)
            .max_memory_size(1 << 30);
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).or_else(|e| {
            // A host that cannot reserve the pool's address space still runs guests.
            tracing::warn!(error = %e, "pooling allocator unavailable; allocating on demand");
            let mut cfg = Config::new();
            cfg.wasm_component_model(true).epoch_interruption(true);
            Engine::new(&cfg)
        });
        let engine = engine.map_err(WasmError::engine)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match e.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(WasmError::Io)?;
        let linkers = Arc::new(Linkers {
            cli: command::new_linker(&engine, false)?,
            http: command::new_linker(&engine, true)?,
        });
        Ok(WasmRuntime {
            engine,
            cache_dir: cache_dir.to_path_buf(),
            stop,
            linkers,
            loaded: Arc::default(),
            compiling: Arc::default(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled component for an image layer, from the cache when it is there.
    /// `digest` names the bytes (e.g. `sha256:...`).
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<Component, WasmError> {
        if classify(bytes)? == BinaryKind::CoreModule {
            return Err(WasmError::CoreModule);
        }
        if let Some(c) = self.loaded.lock().expect("component cache").get(digest) {
            return Ok(c.clone());
        }
        // One compile at a time (it uses every core anyway); whoever waited
        // finds the result in the map.
        let _one = self.compiling.lock().expect("compile lock");
        if let Some(c) = self.loaded.lock().expect("component cache").get(digest) {
            return Ok(c.clone());
        }
        let c = self.load_uncached(digest, bytes)?;
        self.loaded
            .lock()
            .expect("component cache")
            .insert(digest.to_string(), c.clone());
        Ok(c)
    }

    fn load_uncached(&self, digest: &str, bytes: &[u8]) -> Result<Component, WasmError> {
        let file = digest.replace([':', '/'], "_");
        let path = self.cache_dir.join(format!("{file}.cwasm"));
        if path.exists() {
            // SAFETY: the cache directory is private to this runtime and its files
            // are written only below from `Component::serialize` of the same
            // engine; wasmtime also rejects artifacts of another version/config.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "recompiling stale cache entry")
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| WasmError::Compile {
            reason: format!("{e:#}"),
        })?;
        // The on-disk cache only saves the next start a compile: a full disk
        // or a read-only cache costs time, not the pod.
        let tmp = path.with_extension("tmp");
        let written = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "compiled component not cached");
        }
        Ok(component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases: &[(&[u8], Option<BinaryKind>)] = &[
            (b"\0asm\x01\0\0\0", Some(BinaryKind::CoreModule)),
            (b"\0asm\x0d\0\x01\0", Some(BinaryKind::Component)),
            (b"\x7fELF\x02\x01\x01\0", None),
            (b"\0asm", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(classify(bytes).ok(), *want, "{bytes:?}");
        }
    }
}
