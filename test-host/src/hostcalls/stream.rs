//! HTTP stream control (local responses, continue/close), and foreign functions (Envoy's
//! `compress` / `uncompress`, [`crate::state::foreign`]; any other name is `NotFound`). HTTP
//! callouts are in
//! [`super::callout`], gRPC in [`super::grpc`].
// The ABI fixes these functions' parameters.
#![allow(clippy::too_many_arguments)]

use wasmtime::{Caller, Linker};

use crate::abi::{Status, StreamType};
use crate::hostcalls::memory;
use crate::state::foreign;
use crate::state::headers::HeaderList;
use crate::state::{HostState, LocalReply};

fn warn(caller: &Caller<'_, HostState>, message: &str) {
    caller.data().warn(message);
}

fn proxy_send_local_response(
    mut caller: Caller<'_, HostState>,
    status: u32,
    details_ptr: u32,
    details_size: u32,
    body_ptr: u32,
    body_size: u32,
    headers_ptr: u32,
    headers_size: u32,
    grpc_status: i32,
) -> wasmtime::Result<u32> {
    let details = memory::read_string(&mut caller, details_ptr, details_size)?;
    let body = memory::read(&mut caller, body_ptr, body_size)?;
    let headers = memory::read(&mut caller, headers_ptr, headers_size)?;
    let Some(headers) = HeaderList::deserialize(&headers) else {
        return Ok(Status::BadArgument.code());
    };
    let Ok(status) = u16::try_from(status) else {
        return Ok(Status::BadArgument.code());
    };
    caller.data_mut().send_local_response(LocalReply {
        status,
        details,
        headers,
        body,
        grpc_status: u32::try_from(grpc_status).ok(),
    });
    Ok(Status::Ok.code())
}

fn proxy_continue_stream(mut caller: Caller<'_, HostState>, kind: u32) -> wasmtime::Result<u32> {
    let Some(kind) = StreamType::from_abi(kind) else {
        return Ok(Status::BadArgument.code());
    };
    caller.data_mut().continue_stream(kind);
    Ok(Status::Ok.code())
}

fn proxy_close_stream(mut caller: Caller<'_, HostState>, kind: u32) -> wasmtime::Result<u32> {
    if StreamType::from_abi(kind).is_none() {
        return Ok(Status::BadArgument.code());
    }
    caller.data_mut().close_stream();
    Ok(Status::Ok.code())
}

fn proxy_call_foreign_function(
    mut caller: Caller<'_, HostState>,
    name_ptr: u32,
    name_size: u32,
    arguments_ptr: u32,
    arguments_size: u32,
    results_ptr: u32,
    results_size: u32,
) -> wasmtime::Result<u32> {
    let name = memory::read_string(&mut caller, name_ptr, name_size)?;
    let arguments = memory::read(&mut caller, arguments_ptr, arguments_size)?;
    match foreign::call(&name, &arguments) {
        Ok(result) => {
            memory::return_bytes(&mut caller, &result, results_ptr, results_size)?;
            Ok(Status::Ok.code())
        }
        Err(Status::NotFound) => {
            warn(
                &caller,
                &format!("foreign function \"{name}\" is not available; answering NotFound"),
            );
            Ok(Status::NotFound.code())
        }
        Err(status) => Ok(status.code()),
    }
}

/// Adds local response, continue/close stream, HTTP call and foreign function functions.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        proxy_send_local_response,
    )?;
    linker.func_wrap("env", "proxy_continue_stream", proxy_continue_stream)?;
    linker.func_wrap("env", "proxy_close_stream", proxy_close_stream)?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        proxy_call_foreign_function,
    )?;
    Ok(())
}
