//! Properties (`proxy_get_property` / `proxy_set_property`), with Envoy's names and encodings:
//! strings as bytes, integers as 8-byte little-endian (looked up by
//! [`HostState::property`]). Paths arrive as NUL-separated segments.
//!
//! Known: what Envoy 1.40 gives with `envoy/envoy.yaml` (see [`crate::state::properties`] for
//! the list and when each is visible) and `plugin_name`, `plugin_root_id`, `plugin_vm_id`.
//! Values set by the filter are read back first.

use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::hostcalls::memory;
use crate::state::HostState;

fn proxy_get_property(
    mut caller: Caller<'_, HostState>,
    path_ptr: u32,
    path_size: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    let path = memory::read(&mut caller, path_ptr, path_size)?;
    match caller.data_mut().property(&path) {
        Some(value) => {
            memory::return_bytes(&mut caller, &value, ret_ptr, ret_size)?;
            Ok(Status::Ok.code())
        }
        None => Ok(Status::NotFound.code()),
    }
}

fn proxy_set_property(
    mut caller: Caller<'_, HostState>,
    path_ptr: u32,
    path_size: u32,
    value_ptr: u32,
    value_size: u32,
) -> wasmtime::Result<u32> {
    let path = memory::read(&mut caller, path_ptr, path_size)?;
    let value = memory::read(&mut caller, value_ptr, value_size)?;
    caller.data_mut().set_property(path, value);
    Ok(Status::Ok.code())
}

/// Adds `proxy_get_property` and `proxy_set_property`.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_property", proxy_get_property)?;
    linker.func_wrap("env", "proxy_set_property", proxy_set_property)?;
    Ok(())
}
