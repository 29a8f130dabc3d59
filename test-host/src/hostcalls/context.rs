//! Context lifecycle: `proxy_set_effective_context` and `proxy_done`.

use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::state::HostState;

fn proxy_set_effective_context(
    mut caller: Caller<'_, HostState>,
    id: u32,
) -> wasmtime::Result<u32> {
    Ok(caller.data_mut().set_effective_context(id).code())
}

/// Deferred deletion is not offered: a root context's `proxy_done` is simply acknowledged.
fn proxy_done(_: Caller<'_, HostState>) -> wasmtime::Result<u32> {
    Ok(Status::Ok.code())
}

/// Adds `proxy_set_effective_context` and `proxy_done`.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        proxy_set_effective_context,
    )?;
    linker.func_wrap("env", "proxy_done", proxy_done)?;
    Ok(())
}
