//! `wasi:cli/command` components: run `wasi:cli/run` with args and env, stdout and
//! stderr to files, and report how it ended.

use std::fs::File;

use wasmtime::component::{Component, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::{ContainerSpec, Exit};

use super::state::{GuestState, is_timeout, new_store, wasi_ctx};
use super::{WasmError, WasmRuntime};

/// The instance name of an import the linker lacks, from wasmtime's message.
pub(crate) fn missing_import(e: &wasmtime::Error) -> Option<String> {
    let msg = format!("{e:#}");
    let start = msg.find("import")?;
    let rest = &msg[start..];
    let a = rest.find('`')?;
    let b = rest[a + 1..].find('`')?;
    Some(rest[a + 1..a + 1 + b].to_string())
}

/// A linker with WASI p2 (and wasi:http when `http`).
pub(crate) fn new_linker(
    engine: &wasmtime::Engine,
    http: bool,
) -> Result<Linker<GuestState>, WasmError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(WasmError::engine)?;
    if http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(WasmError::engine)?;
    }
    Ok(linker)
}

/// The runtime's shared linker (built once).
pub(crate) fn linker(rt: &WasmRuntime, http: bool) -> Result<&Linker<GuestState>, WasmError> {
    Ok(if http {
        &rt.linkers.http
    } else {
        &rt.linkers.cli
    })
}

pub(crate) fn pre_error(e: wasmtime::Error) -> WasmError {
    match missing_import(&e) {
        Some(import) if format!("{e:#}").contains("matching implementation was not found") => {
            WasmError::UnsupportedImport { import }
        }
        _ => WasmError::UnsupportedWorld {
            reason: format!("{e:#}"),
        },
    }
}

/// Run a command component to completion. stdout/stderr go to the given files.
pub async fn run_command(
    rt: &WasmRuntime,
    component: &Component,
    spec: &ContainerSpec,
    stdout: File,
    stderr: File,
) -> Result<Exit, WasmError> {
    let linker = linker(rt, false)?;
    let pre = linker.instantiate_pre(component).map_err(pre_error)?;
    let pre = CommandPre::new(pre).map_err(pre_error)?;
    let wasi = wasi_ctx(spec, stdout, stderr).map_err(|e| WasmError::Mount {
        reason: format!("{e:#}"),
    })?;
    let mut store = new_store(rt.engine(), spec, wasi);
    let oom = store.data().limits.hit.clone();
    let outcome = async {
        let cmd = pre.instantiate_async(&mut store).await?;
        cmd.wasi_cli_run().call_run(&mut store).await
    }
    .await;
    Ok(match outcome {
        Ok(Ok(())) => Exit::Code(0),
        Ok(Err(())) => Exit::Code(1),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Exit::Code(exit.0)
            } else if is_timeout(&e) {
                Exit::TimedOut
            } else if oom.load(std::sync::atomic::Ordering::Relaxed) {
                Exit::OutOfMemory
            } else {
                Exit::Trapped(format!("{e:#}"))
            }
        }
    })
}
