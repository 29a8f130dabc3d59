//! Properties (`proxy_get_property` / `proxy_set_property`), with Envoy's names and encodings:
//! strings as bytes, integers as 8-byte little-endian. Paths arrive as NUL-separated segments.
//!
//! Known: `request.path`, `request.url_path`, `request.query`, `request.host`, `request.method`,
//! `request.scheme`, `request.protocol`, `request.id`, `response.code`, `source.address`,
//! `destination.address`, `plugin_name`, `plugin_root_id`, `plugin_vm_id`. Values set by the
//! filter are read back first.

use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::memory;
use crate::vm::HostState;

fn lookup(state: &mut HostState, path: &[u8]) -> Option<Vec<u8>> {
    if let Some(v) = state.property_overrides().and_then(|p| p.get(path)) {
        return Some(v.clone());
    }
    let name = String::from_utf8_lossy(path).replace('\0', ".");
    let plugin = &state.shared.plugin;
    match name.as_str() {
        "plugin_name" => return Some(plugin.name.clone().into_bytes()),
        "plugin_root_id" => return Some(plugin.root_id.clone().into_bytes()),
        "plugin_vm_id" => return Some(plugin.vm_id.clone().into_bytes()),
        _ => {}
    }
    let stream = state.stream_mut()?;
    let header = |name: &str| stream.request_headers.get(name).map(<[u8]>::to_vec);
    match name.as_str() {
        "request.path" => header(":path"),
        "request.url_path" => header(":path").map(|p| match p.iter().position(|&b| b == b'?') {
            Some(q) => p[..q].to_vec(),
            None => p,
        }),
        "request.query" => header(":path").map(|p| match p.iter().position(|&b| b == b'?') {
            Some(q) => p[q + 1..].to_vec(),
            None => Vec::new(),
        }),
        "request.host" => header(":authority"),
        "request.method" => header(":method"),
        "request.scheme" => header(":scheme"),
        "request.protocol" => Some(stream.info.protocol.clone().into_bytes()),
        "request.id" => Some(stream.info.request_id.clone().into_bytes()),
        "source.address" => stream.info.source.map(|a| a.to_string().into_bytes()),
        "destination.address" => stream.info.destination.map(|a| a.to_string().into_bytes()),
        "response.code" => stream
            .response_headers
            .get_str(":status")
            .and_then(|s| s.parse::<i64>().ok())
            .map(|code| code.to_le_bytes().to_vec()),
        _ => None,
    }
}

/// Adds `proxy_get_property` and `proxy_set_property`.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: u32,
         path_size: u32,
         ret_ptr: u32,
         ret_size: u32|
         -> wasmtime::Result<u32> {
            let path = memory::read(&mut caller, path_ptr, path_size)?;
            match lookup(caller.data_mut(), &path) {
                Some(value) => {
                    memory::return_bytes(&mut caller, &value, ret_ptr, ret_size)?;
                    Ok(Status::Ok.code())
                }
                None => Ok(Status::NotFound.code()),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: u32,
         path_size: u32,
         value_ptr: u32,
         value_size: u32|
         -> wasmtime::Result<u32> {
            let path = memory::read(&mut caller, path_ptr, path_size)?;
            let value = memory::read(&mut caller, value_ptr, value_size)?;
            if let Some(overrides) = caller.data_mut().property_overrides() {
                overrides.insert(path, value);
            }
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
