//! `proxy_get_current_time_nanoseconds` (the host clock, as WASI's `clock_time_get` reads it)
//! and `proxy_set_tick_period_milliseconds`.

use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::hostcalls::memory;
use crate::state::HostState;

fn proxy_get_current_time_nanoseconds(
    mut caller: Caller<'_, HostState>,
    ret_time: u32,
) -> wasmtime::Result<u32> {
    let now = caller.data().shared.clock.unix_nanos();
    memory::write_u64(&mut caller, ret_time, now)?;
    Ok(Status::Ok.code())
}

fn proxy_set_tick_period_milliseconds(
    mut caller: Caller<'_, HostState>,
    period: u32,
) -> wasmtime::Result<u32> {
    caller.data_mut().set_tick_period(period);
    Ok(Status::Ok.code())
}

/// Adds `proxy_get_current_time_nanoseconds` and `proxy_set_tick_period_milliseconds`.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        proxy_get_current_time_nanoseconds,
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        proxy_set_tick_period_milliseconds,
    )?;
    Ok(())
}
