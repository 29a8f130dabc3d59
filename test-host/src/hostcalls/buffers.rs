//! Buffers (`proxy_get_buffer_bytes` / `proxy_set_buffer_bytes`): plugin and VM configuration,
//! and the request/response body of the effective HTTP context.

use wasmtime::{Caller, Linker};

use crate::abi::{BufferType, Status};
use crate::hostcalls::memory;
use crate::state::HostState;

fn proxy_get_buffer_bytes(
    mut caller: Caller<'_, HostState>,
    kind: u32,
    start: u32,
    max_size: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    let Some(kind) = BufferType::from_abi(kind) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(data) = caller.data_mut().buffer(kind) else {
        return Ok(Status::NotFound.code());
    };
    let start = start as usize;
    if start > data.len() {
        return Ok(Status::NotFound.code());
    }
    let end = start.saturating_add(max_size as usize).min(data.len());
    memory::return_bytes(&mut caller, &data[start..end], ret_ptr, ret_size)?;
    Ok(Status::Ok.code())
}

fn proxy_set_buffer_bytes(
    mut caller: Caller<'_, HostState>,
    kind: u32,
    start: u32,
    size: u32,
    data_ptr: u32,
    data_size: u32,
) -> wasmtime::Result<u32> {
    let Some(kind) = BufferType::from_abi(kind) else {
        return Ok(Status::BadArgument.code());
    };
    let data = memory::read(&mut caller, data_ptr, data_size)?;
    caller
        .data_mut()
        .set_buffer(kind, start as usize, size as usize, &data);
    Ok(Status::Ok.code())
}

/// Adds `proxy_get_buffer_bytes` and `proxy_set_buffer_bytes`.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", proxy_set_buffer_bytes)?;
    Ok(())
}
