//! gRPC calls and streams (`proxy_grpc_*`, `proxy_get_status`) with Envoy 1.40's
//! conventions: the `grpc_service` argument is a serialized `GrpcService` proto when it
//! parses as one (its `envoy_grpc.cluster_name`), else a cluster name; an unknown cluster is
//! `ParseFailure`; a proto without a cluster is `BadArgument` (Envoy aborts on it); metadata
//! HTTP/2 cannot carry (a name with a space, a value with a newline) is `InternalFailure`; the calls
//! belong to the root context of the caller (an HTTP context ending does not cancel them);
//! a token that is no gRPC token is `BadArgument`, one not in flight `NotFound`.
// The ABI fixes these functions' parameters.
#![allow(clippy::too_many_arguments)]

use std::time::Duration;

use tokio::sync::mpsc;
use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::callout::grpc::{GrpcRequest, run};
use crate::hostcalls::memory;
use crate::state::HostState;
use crate::state::callout::Completion;
use crate::state::grpc::{Kind, Outbound};
use crate::state::headers::HeaderList;

/// A protobuf varint at the front of `b`, and the bytes after it.
fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

/// The fields of a protobuf message as `(number, length-delimited bytes)`; `None` when `b`
/// is not well-formed wire format (what makes `ParseFromString` fail).
fn fields(mut b: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (key, rest) = varint(b)?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return None;
        }
        b = match wire {
            0 => varint(rest)?.1,
            1 => rest.get(8..)?,
            2 => {
                let (len, rest) = varint(rest)?;
                let len = usize::try_from(len).ok()?;
                out.push((number, rest.get(..len)?));
                rest.get(len..)?
            }
            5 => rest.get(4..)?,
            _ => return None,
        };
    }
    Some(out)
}

/// The cluster a `grpc_service` argument names: `Ok(name)`, or the status to return.
fn cluster_of(service: &[u8]) -> Result<String, Status> {
    let Some(proto) = fields(service) else {
        return Ok(String::from_utf8_lossy(service).into_owned());
    };
    // GrpcService.envoy_grpc (1) . cluster_name (1)
    proto
        .iter()
        .filter(|(n, _)| *n == 1)
        .filter_map(|(_, envoy_grpc)| fields(envoy_grpc))
        .flat_map(|f| f.into_iter().filter(|(n, _)| *n == 1))
        .map(|(_, name)| String::from_utf8_lossy(name).into_owned())
        .next_back()
        .ok_or(Status::BadArgument)
}

/// The root context that owns the calls of the effective context: itself for a root, the
/// current root for an HTTP context (as Envoy's `root_context()`).
fn caller_root(data: &HostState) -> u32 {
    if data.roots.contains(&data.effective_context) {
        data.effective_context
    } else {
        data.root
    }
}

/// Starts a call or stream; the token, or the status to return.
fn start(
    caller: &mut Caller<'_, HostState>,
    service: &[u8],
    path: String,
    metadata: &[u8],
    kind: Kind,
    first: Option<Vec<u8>>,
    timeout: Option<Duration>,
) -> Result<u32, Status> {
    let name = cluster_of(service)?;
    let data = caller.data_mut();
    let shared = data.shared.clone();
    let cluster = shared.clusters.get(&name).ok_or(Status::ParseFailure)?;
    let runtime = shared.clusters.runtime().ok_or(Status::InternalFailure)?;
    let poster = data
        .callouts
        .poster()
        .cloned()
        .ok_or(Status::InternalFailure)?;
    // Malformed pairs read as none, as proxy-wasm-cpp-host's `toPairs` gives none.
    let mut md = HeaderList::new();
    for (k, v) in HeaderList::deserialize(metadata).unwrap_or_default().iter() {
        md.add(&k.to_ascii_lowercase(), v);
    }
    let carried = md.iter().all(|(k, v)| {
        http::HeaderName::from_bytes(k.as_bytes()).is_ok()
            && http::HeaderValue::from_bytes(v).is_ok()
    });
    let request = GrpcRequest {
        endpoint: cluster.authority.clone(),
        cluster: name,
        path,
        metadata: md,
        timeout,
        kind,
    };
    let token = data.grpc.next_token(kind);
    if !carried {
        // Envoy refuses to start the call (its token is spent all the same).
        return Err(Status::InternalFailure);
    }
    let root = caller_root(data);
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(message) = first {
        let _ = tx.send(Outbound::Message(message, true));
    }
    let task = runtime.spawn(run(request, rx, move |event| {
        poster.post(Completion::Grpc { token, event });
    }));
    data.grpc.insert(token, root, task.abort_handle(), tx);
    Ok(token)
}

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
    match start(
        &mut caller,
        &service,
        path,
        &metadata,
        Kind::Call,
        Some(message),
        timeout,
    ) {
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
    match start(
        &mut caller,
        &service,
        path,
        &metadata,
        Kind::Stream,
        None,
        None,
    ) {
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
    let (code, message) = data.grpc.status(caller_root(data));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_a_cluster_and_a_proto_names_one() {
        assert_eq!(cluster_of(b"grpc_cluster"), Ok("grpc_cluster".to_owned()));
        assert_eq!(cluster_of(b"bogus"), Ok("bogus".to_owned()));
        // GrpcService { envoy_grpc { cluster_name: "c1" } }
        assert_eq!(
            cluster_of(&[0x0a, 4, 0x0a, 2, b'c', b'1']),
            Ok("c1".to_owned())
        );
        // An empty proto (Envoy: "unset oneof") and one with only a timeout.
        assert_eq!(cluster_of(b""), Err(Status::BadArgument));
        assert_eq!(cluster_of(&[0x1a, 0]), Err(Status::BadArgument));
    }
}
