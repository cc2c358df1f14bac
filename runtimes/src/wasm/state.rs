//! The per-store state of a guest: WASI contexts and resource limits.

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::ContainerSpec;

use super::EPOCH_TICK;

pub(crate) struct GuestState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
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
            hooks: Default::default(),
        }
    }
}

/// A store for one run or request, with the spec's memory limit and timeout.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    spec: &ContainerSpec,
    wasi: WasiCtx,
) -> Store<GuestState> {
    let mut limits = StoreLimitsBuilder::new().trap_on_grow_failure(true);
    if let Some(m) = spec.memory_limit {
        limits = limits.memory_size(usize::try_from(m).unwrap_or(usize::MAX));
    }
    let mut store = Store::new(
        engine,
        GuestState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: limits.build(),
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

/// Is this error the memory limit?
pub(crate) fn is_oom(e: &wasmtime::Error) -> bool {
    let s = format!("{e:#}");
    s.contains("memory")
        && (s.contains("grow") || s.contains("limit") || s.contains("out of bounds memory"))
        || e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::AllocationTooLarge)
}

/// Is this error the epoch deadline (timeout)?
pub(crate) fn is_timeout(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
}
