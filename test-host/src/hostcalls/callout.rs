//! HTTP callouts: `proxy_http_call` decodes the call and hands it to
//! [`crate::callout::http::start`], which checks it as Envoy does and starts its I/O on
//! tokio; the response is delivered later by `proxy_on_http_call_response`
//! and read, only during that callback, through map types 6 / 7 and buffer type 4 (the
//! `headers` and `buffers` host functions).
// The ABI fixes this function's parameters.
#![allow(clippy::too_many_arguments)]

use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::callout::http;
use crate::hostcalls::memory;
use crate::state::HostState;
use crate::state::headers::HeaderList;

fn proxy_http_call(
    mut caller: Caller<'_, HostState>,
    cluster_ptr: u32,
    cluster_size: u32,
    headers_ptr: u32,
    headers_size: u32,
    body_ptr: u32,
    body_size: u32,
    trailers_ptr: u32,
    trailers_size: u32,
    timeout_ms: u32,
    token_ptr: u32,
) -> wasmtime::Result<u32> {
    let cluster = memory::read_string(&mut caller, cluster_ptr, cluster_size)?;
    let headers = memory::read(&mut caller, headers_ptr, headers_size)?;
    let body = memory::read(&mut caller, body_ptr, body_size)?;
    let trailers = memory::read(&mut caller, trailers_ptr, trailers_size)?;
    let (Some(headers), Some(trailers)) = (
        HeaderList::deserialize(&headers),
        HeaderList::deserialize(&trailers),
    ) else {
        return Ok(Status::BadArgument.code());
    };
    match http::start(
        caller.data_mut(),
        &cluster,
        headers,
        body,
        trailers,
        timeout_ms,
    ) {
        Ok(token) => {
            memory::write_u32(&mut caller, token_ptr, token)?;
            Ok(Status::Ok.code())
        }
        Err(status) => Ok(status.code()),
    }
}

/// Adds `proxy_http_call`.
///
/// # Errors
/// When it is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_http_call", proxy_http_call)?;
    Ok(())
}
