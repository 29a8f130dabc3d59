//! HTTP callouts: `proxy_http_call` decodes the call, checks it as Envoy does
//! ([`crate::state::HostState::plan_http_call`]) and starts its I/O on tokio
//! ([`crate::callout::http`]); the response is delivered later by `proxy_on_http_call_response`
//! and read, only during that callback, through map types 6 / 7 and buffer type 4 (the
//! `headers` and `buffers` host functions).
// The ABI fixes this function's parameters.
#![allow(clippy::too_many_arguments)]

use std::time::Duration;

use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::callout::http::{self, HttpCall};
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
    // Envoy takes the timeout as a signed int and refuses a negative one (more than
    // `i32::MAX` here, e.g. SDK 0.2.5's `Duration::new(u64::MAX, 0)`); 0 is no timeout.
    let Ok(timeout_ms) = i32::try_from(timeout_ms) else {
        return Ok(Status::BadArgument.code());
    };
    let plan = match caller.data_mut().plan_http_call(&cluster, &headers) {
        Ok(plan) => plan,
        Err(status) => return Ok(status.code()),
    };
    let timeout =
        (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms.unsigned_abs())));
    let call = HttpCall {
        cluster: plan.cluster,
        headers,
        body,
        trailers,
        timeout,
    };
    memory::write_u32(&mut caller, token_ptr, plan.token)?;
    let abort = http::spawn(&plan.runtime, call, plan.token, plan.poster);
    let state = caller.data_mut();
    let context = state.effective_context;
    state.callouts.insert(plan.token, context, abort);
    Ok(Status::Ok.code())
}

/// Adds `proxy_http_call`.
///
/// # Errors
/// When it is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_http_call", proxy_http_call)?;
    Ok(())
}
