//! Buffers (`proxy_get_buffer_bytes` / `proxy_set_buffer_bytes`): plugin and VM configuration,
//! and the request/response body chunk of the current HTTP context.

use wasmtime::{Caller, Linker};

use crate::abi::{BufferType, Level, Status};
use crate::log::LogSource;
use crate::memory;
use crate::vm::HostState;

fn buffer(state: &mut HostState, kind: BufferType) -> Option<Vec<u8>> {
    match kind {
        BufferType::PluginConfiguration => Some(state.shared.plugin.configuration.clone()),
        BufferType::VmConfiguration => Some(state.shared.plugin.vm_configuration.clone()),
        BufferType::RequestBody => state.stream_mut().map(|s| s.request_body.clone()),
        BufferType::ResponseBody => state.stream_mut().map(|s| s.response_body.clone()),
        _ => None,
    }
}

/// Adds `proxy_get_buffer_bytes` and `proxy_set_buffer_bytes`.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: u32,
         start: u32,
         max_size: u32,
         ret_ptr: u32,
         ret_size: u32|
         -> wasmtime::Result<u32> {
            let Some(kind) = BufferType::from_abi(kind) else {
                return Ok(Status::BadArgument.code());
            };
            let Some(data) = buffer(caller.data_mut(), kind) else {
                return Ok(Status::NotFound.code());
            };
            let start = start as usize;
            if start > data.len() {
                return Ok(Status::NotFound.code());
            }
            let end = start.saturating_add(max_size as usize).min(data.len());
            memory::return_bytes(&mut caller, &data[start..end], ret_ptr, ret_size)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: u32,
         start: u32,
         size: u32,
         data_ptr: u32,
         data_size: u32|
         -> wasmtime::Result<u32> {
            let Some(kind) = BufferType::from_abi(kind) else {
                return Ok(Status::BadArgument.code());
            };
            let data = memory::read(&mut caller, data_ptr, data_size)?;
            let state = caller.data_mut();
            let target = match kind {
                BufferType::RequestBody => state.stream_mut().map(|s| &mut s.request_body),
                BufferType::ResponseBody => state.stream_mut().map(|s| &mut s.response_body),
                _ => None,
            };
            match target {
                Some(buf) => {
                    let start = (start as usize).min(buf.len());
                    let end = start.saturating_add(size as usize).min(buf.len());
                    buf.splice(start..end, data);
                }
                // The SDK accepts only `Ok` here; say what was ignored.
                None => state.shared.logs.log(
                    Level::Warn,
                    LogSource::Host,
                    format!(
                        "proxy_set_buffer_bytes: buffer {kind:?} is not writable here; ignored"
                    ),
                ),
            }
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
