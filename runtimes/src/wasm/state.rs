//! The per-store state of a guest: WASI contexts and resource limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::ContainerSpec;

use super::EPOCH_TICK;

/// Caps a guest's linear memory and remembers when it refused growth, so an
/// out-of-memory end is known for sure rather than guessed from a message.
pub(crate) struct MemoryLimit {
    max: Option<usize>,
    pub hit: Arc<AtomicBool>,
    /// The pod's gauge of memory in use, and this store's part of it.
    gauge: Option<Arc<AtomicU64>>,
    counted: u64,
    /// The container's memory in use across all its instances: `max` is
    /// the budget of them all together, not of each one.
    pub budget: Option<Arc<AtomicU64>>,
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.fetch_sub(self.counted, Ordering::Relaxed);
        }
        if let Some(b) = &self.budget {
            b.fetch_sub(self.counted, Ordering::AcqRel);
        }
    }
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        match self.max {
            Some(max) if desired > max => {
                self.hit.store(true, Ordering::Relaxed);
                Err(wasmtime::format_err!(
                    "memory limit of {max} bytes reached (wanted {desired})"
                ))
            }
            _ => {
                let grown = desired.saturating_sub(current) as u64;
                if let (Some(b), Some(max)) = (&self.budget, self.max) {
                    let total = b.fetch_add(grown, Ordering::AcqRel) + grown;
                    if total > max as u64 {
                        b.fetch_sub(grown, Ordering::AcqRel);
                        self.hit.store(true, Ordering::Relaxed);
                        return Err(wasmtime::format_err!(
                            "memory limit of {max} bytes reached by the container's requests together (wanted {grown} more, {} in use)",
                            total - grown
                        ));
                    }
                }
                if let Some(g) = &self.gauge {
                    g.fetch_add(grown, Ordering::Relaxed);
                }
                self.counted += grown;
                Ok(true)
            }
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

pub(crate) struct GuestState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limits: MemoryLimit,
    pub egress: super::egress::PodEgress,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

/// The WASI context of one run or request: `argv` (name then args), env,
/// stdout/stderr to `out`/`err`, and the spec's mounts as preopened directories.
pub(crate) fn wasi_ctx(
    spec: &ContainerSpec,
    out: std::fs::File,
    err: std::fs::File,
) -> wasmtime::Result<WasiCtx> {
    let mut args = vec![spec.name.clone()];
    args.extend(spec.args.iter().cloned());
    let mut b = WasiCtx::builder();
    b.args(&args)
        .envs(&spec.env)
        .stdout(wasmtime_wasi::cli::OutputFile::new(out))
        .stderr(wasmtime_wasi::cli::OutputFile::new(err));
    for m in &spec.mounts {
        let perms = if m.read_only {
            wasmtime_wasi::FsPerms::ReadOnly
        } else {
            wasmtime_wasi::FsPerms::ReadWrite
        };
        b.preopened_dir(&m.host_path, &m.guest_path, perms)
            .map_err(|e| {
                wasmtime::format_err!(
                    "preopen {} at {}: {e:#}",
                    m.host_path.display(),
                    m.guest_path
                )
            })?;
    }
    Ok(b.build())
}

/// A store for one run or request, with the spec's memory limit and timeout.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    spec: &ContainerSpec,
    wasi: WasiCtx,
) -> Store<GuestState> {
    let limits = MemoryLimit {
        max: spec
            .memory_limit
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        hit: Arc::default(),
        gauge: spec.memory_gauge.clone(),
        counted: 0,
        budget: None,
    };
    let mut store = Store::new(
        engine,
        GuestState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits,
            egress: Default::default(),
        },
    );
    store.limiter(|s| &mut s.limits);
    match spec.timeout {
        Some(t) => {
            let ticks = (t.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
            store.set_epoch_deadline(ticks);
            store.epoch_deadline_trap();
        }
        None => {
            // No deadline: yield now and then so one guest cannot hog a thread.
            store.set_epoch_deadline(1);
            store.epoch_deadline_async_yield_and_update(1);
        }
    }
    store
}

/// Is this error the epoch deadline (timeout)?
pub(crate) fn is_timeout(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
}
