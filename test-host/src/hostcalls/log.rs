//! `proxy_log` and `proxy_get_log_level`, into the host's log.

use wasmtime::{Caller, Linker};

use crate::abi::{Level, Status};
use crate::hostcalls::memory;
use crate::state::HostState;
use crate::state::log::LogSource;

fn proxy_log(
    mut caller: Caller<'_, HostState>,
    level: u32,
    ptr: u32,
    size: u32,
) -> wasmtime::Result<u32> {
    let Some(level) = Level::from_abi(level) else {
        return Ok(Status::BadArgument.code());
    };
    let message = memory::read_string(&mut caller, ptr, size)?;
    caller
        .data()
        .shared
        .logs
        .log(level, LogSource::Filter, message);
    Ok(Status::Ok.code())
}

fn proxy_get_log_level(mut caller: Caller<'_, HostState>, ret_level: u32) -> wasmtime::Result<u32> {
    let level = caller.data().shared.logs.level() as u32;
    memory::write_u32(&mut caller, ret_level, level)?;
    Ok(Status::Ok.code())
}

/// Adds `proxy_log` and `proxy_get_log_level`.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", proxy_log)?;
    linker.func_wrap("env", "proxy_get_log_level", proxy_get_log_level)?;
    Ok(())
}
