//! gRPC calls and streams (`proxy_grpc_*`, `proxy_get_status`): each function decodes its
//! arguments and hands them on. Starting a call ([`crate::callout::grpc::start`]) reads the
//! `grpc_service` argument and checks the call as Envoy 1.40 does; the calls belong to the
//! root context of the caller; here, a token that is no gRPC token is `BadArgument`, one not
//! in flight `NotFound`.
// The ABI fixes these functions' parameters.
#![allow(clippy::too_many_arguments)]

use std::time::Duration;

use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::callout::grpc::{self, GrpcStart};
use crate::hostcalls::memory;
use crate::state::HostState;
use crate::state::grpc::Kind;

fn path(service_name: &str, method: &str) -> String {
    format!("/{service_name}/{method}")
}

fn proxy_grpc_call(
    mut caller: Caller<'_, HostState>,
    service_ptr: u32,
    service_size: u32,
    service_name_ptr: u32,
    service_name_size: u32,
    method_ptr: u32,
    method_size: u32,
    metadata_ptr: u32,
    metadata_size: u32,
    message_ptr: u32,
    message_size: u32,
    timeout_ms: u32,
    token_ptr: u32,
) -> wasmtime::Result<u32> {
    let service = memory::read(&mut caller, service_ptr, service_size)?;
    let service_name = memory::read_string(&mut caller, service_name_ptr, service_name_size)?;
    let method = memory::read_string(&mut caller, method_ptr, method_size)?;
    let metadata = memory::read(&mut caller, metadata_ptr, metadata_size)?;
    let message = memory::read(&mut caller, message_ptr, message_size)?;
    let timeout = Some(Duration::from_millis(u64::from(timeout_ms)));
    let path = path(&service_name, &method);
    let call = GrpcStart {
        service,
        path,
        metadata,
        kind: Kind::Call,
        first: Some(message),
        timeout,
    };
    match grpc::start(caller.data_mut(), call) {
        Ok(token) => {
            memory::write_u32(&mut caller, token_ptr, token)?;
            Ok(Status::Ok.code())
        }
        Err(status) => Ok(status.code()),
    }
}

fn proxy_grpc_stream(
    mut caller: Caller<'_, HostState>,
    service_ptr: u32,
    service_size: u32,
    service_name_ptr: u32,
    service_name_size: u32,
    method_ptr: u32,
    method_size: u32,
    metadata_ptr: u32,
    metadata_size: u32,
    token_ptr: u32,
) -> wasmtime::Result<u32> {
    let service = memory::read(&mut caller, service_ptr, service_size)?;
    let service_name = memory::read_string(&mut caller, service_name_ptr, service_name_size)?;
    let method = memory::read_string(&mut caller, method_ptr, method_size)?;
    let metadata = memory::read(&mut caller, metadata_ptr, metadata_size)?;
    let path = path(&service_name, &method);
    let stream = GrpcStart {
        service,
        path,
        metadata,
        kind: Kind::Stream,
        first: None,
        timeout: None,
    };
    match grpc::start(caller.data_mut(), stream) {
        Ok(token) => {
            memory::write_u32(&mut caller, token_ptr, token)?;
            Ok(Status::Ok.code())
        }
        Err(status) => Ok(status.code()),
    }
}

fn proxy_grpc_send(
    mut caller: Caller<'_, HostState>,
    token: u32,
    message_ptr: u32,
    message_size: u32,
    end_stream: u32,
) -> wasmtime::Result<u32> {
    let message = memory::read(&mut caller, message_ptr, message_size)?;
    if Kind::of(token) != Some(Kind::Stream) {
        return Ok(Status::BadArgument.code());
    }
    let sent = caller.data_mut().grpc.send(token, message, end_stream != 0);
    Ok(if sent { Status::Ok } else { Status::NotFound }.code())
}

fn proxy_grpc_cancel(mut caller: Caller<'_, HostState>, token: u32) -> wasmtime::Result<u32> {
    if Kind::of(token).is_none() {
        return Ok(Status::BadArgument.code());
    }
    let found = caller.data_mut().grpc.cancel(token);
    Ok(if found { Status::Ok } else { Status::NotFound }.code())
}

fn proxy_grpc_close(mut caller: Caller<'_, HostState>, token: u32) -> wasmtime::Result<u32> {
    let grpc = &mut caller.data_mut().grpc;
    let found = match Kind::of(token) {
        // Closing a unary call cancels it, as in Envoy.
        Some(Kind::Call) => grpc.cancel(token),
        Some(Kind::Stream) => grpc.close_local(token),
        None => return Ok(Status::BadArgument.code()),
    };
    Ok(if found { Status::Ok } else { Status::NotFound }.code())
}

fn proxy_get_status(
    mut caller: Caller<'_, HostState>,
    ret_code: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    let data = caller.data();
    let (code, message) = data.grpc.status(data.grpc_root());
    memory::write_u32(&mut caller, ret_code, code)?;
    memory::return_bytes(&mut caller, message.as_bytes(), ret_ptr, ret_size)?;
    Ok(Status::Ok.code())
}

/// Adds `proxy_grpc_{call,stream,send,cancel,close}` and `proxy_get_status`.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_grpc_call", proxy_grpc_call)?;
    linker.func_wrap("env", "proxy_grpc_stream", proxy_grpc_stream)?;
    linker.func_wrap("env", "proxy_grpc_send", proxy_grpc_send)?;
    linker.func_wrap("env", "proxy_grpc_cancel", proxy_grpc_cancel)?;
    linker.func_wrap("env", "proxy_grpc_close", proxy_grpc_close)?;
    linker.func_wrap("env", "proxy_get_status", proxy_get_status)?;
    Ok(())
}
