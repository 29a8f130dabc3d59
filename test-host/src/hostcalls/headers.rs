//! Header map functions (`proxy_*_header_map_*`): decode the guest's arguments, act on the
//! effective context's maps. A map that does not exist (yet) reads as empty and ignores writes
//! (logged), because SDK 0.2.5 accepts only `Ok` from these calls.

use wasmtime::{Caller, Linker};

use crate::abi::{MapType, Status};
use crate::hostcalls::memory;
use crate::state::HostState;
use crate::state::headers::HeaderList;

fn map_type(raw: u32) -> Option<MapType> {
    MapType::from_abi(raw)
}

fn proxy_get_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    let Some(map) = map_type(map) else {
        return Ok(Status::BadArgument.code());
    };
    // A map that does not exist (yet) reads as empty: the SDK accepts only `Ok` here.
    let data = caller
        .data_mut()
        .map_mut(map)
        .map_or_else(|| HeaderList::new().serialize(), |m| m.serialize());
    memory::return_bytes(&mut caller, &data, ret_ptr, ret_size)?;
    Ok(Status::Ok.code())
}

fn proxy_set_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map: u32,
    ptr: u32,
    size: u32,
) -> wasmtime::Result<u32> {
    let Some(map) = map_type(map) else {
        return Ok(Status::BadArgument.code());
    };
    let bytes = memory::read(&mut caller, ptr, size)?;
    let Some(list) = HeaderList::deserialize(&bytes) else {
        return Ok(Status::BadArgument.code());
    };
    if let Some(m) = caller.data_mut().map_mut(map) {
        *m = list;
    } else {
        caller.data().warn_unavailable_map(map);
    }
    Ok(Status::Ok.code())
}

fn proxy_get_header_map_value(
    mut caller: Caller<'_, HostState>,
    map: u32,
    key_ptr: u32,
    key_size: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    let Some(map) = map_type(map) else {
        return Ok(Status::BadArgument.code());
    };
    let key = memory::read_string(&mut caller, key_ptr, key_size)?;
    let value = caller
        .data_mut()
        .map_mut(map)
        .and_then(|m| m.get(&key).map(<[u8]>::to_vec));
    match value {
        Some(v) => {
            memory::return_bytes(&mut caller, &v, ret_ptr, ret_size)?;
            Ok(Status::Ok.code())
        }
        None => Ok(Status::NotFound.code()),
    }
}

fn proxy_remove_header_map_value(
    mut caller: Caller<'_, HostState>,
    map: u32,
    key_ptr: u32,
    key_size: u32,
) -> wasmtime::Result<u32> {
    let Some(map) = map_type(map) else {
        return Ok(Status::BadArgument.code());
    };
    let key = memory::read_string(&mut caller, key_ptr, key_size)?;
    match caller.data_mut().map_mut(map) {
        Some(m) => m.remove(&key),
        None => caller.data().warn_unavailable_map(map),
    }
    Ok(Status::Ok.code())
}

/// Adds `proxy_{get,set}_header_map_pairs` and `proxy_{get,add,replace,remove}_header_map_value`.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        proxy_get_header_map_pairs,
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        proxy_set_header_map_pairs,
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        proxy_get_header_map_value,
    )?;
    for (name, op) in [
        ("proxy_add_header_map_value", Op::Add),
        ("proxy_replace_header_map_value", Op::Replace),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut caller: Caller<'_, HostState>,
                  map: u32,
                  key_ptr: u32,
                  key_size: u32,
                  value_ptr: u32,
                  value_size: u32|
                  -> wasmtime::Result<u32> {
                let Some(map) = map_type(map) else {
                    return Ok(Status::BadArgument.code());
                };
                let key = memory::read_string(&mut caller, key_ptr, key_size)?;
                let value = memory::read(&mut caller, value_ptr, value_size)?;
                match caller.data_mut().map_mut(map) {
                    Some(m) if op == Op::Add => m.add(&key, &value),
                    Some(m) => m.replace(&key, &value),
                    None => caller.data().warn_unavailable_map(map),
                }
                Ok(Status::Ok.code())
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        proxy_remove_header_map_value,
    )?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
}
