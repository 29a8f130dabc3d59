//! Bounds-checked access to guest memory, and buffers handed back to the guest.
//!
//! Every read and write goes through [`wasmtime::Memory::read`] / [`wasmtime::Memory::write`];
//! an out-of-bounds pointer becomes an `Err`, which traps the guest (never a host panic).
//! Buffers returned to the guest are allocated with its `proxy_on_memory_allocate` at exactly
//! the reported size, because the SDK rebuilds them with `Vec::from_raw_parts(ptr, len, len)`.

use wasmtime::{Caller, format_err};

use crate::state::{GuestExports, HostState};

fn exports(caller: &Caller<'_, HostState>) -> wasmtime::Result<GuestExports> {
    caller
        .data()
        .guest
        .clone()
        .ok_or_else(|| format_err!("host function called before the guest memory was bound"))
}

/// Reads `len` bytes at `ptr`; an out-of-bounds range traps the guest.
pub(crate) fn read(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<Vec<u8>> {
    let memory = exports(caller)?.memory;
    let end = u64::from(ptr) + u64::from(len);
    if end > memory.data_size(&*caller) as u64 {
        return Err(format_err!(
            "guest pointer {ptr:#x} with length {len} is outside guest memory"
        ));
    }
    let mut buf = vec![0; len as usize];
    memory.read(&*caller, ptr as usize, &mut buf).map_err(|_| {
        format_err!("guest pointer {ptr:#x} with length {len} is outside guest memory")
    })?;
    Ok(buf)
}

/// Reads `len` bytes at `ptr` as (lossy) UTF-8.
pub(crate) fn read_string(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<String> {
    let bytes = read(caller, ptr, len)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Writes `data` at `ptr`; an out-of-bounds range traps the guest.
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    data: &[u8],
) -> wasmtime::Result<()> {
    let memory = exports(caller)?.memory;
    memory.write(&mut *caller, ptr as usize, data).map_err(|_| {
        format_err!(
            "guest pointer {ptr:#x} with length {} is outside guest memory",
            data.len()
        )
    })
}

/// Writes a little-endian `u32` at `ptr`.
pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u32,
) -> wasmtime::Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub(crate) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u64,
) -> wasmtime::Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `data` to the guest: allocates exactly `data.len()` bytes with the guest's allocator,
/// copies the data, and stores pointer and size at `return_ptr` / `return_size`. Empty data is
/// returned as a null pointer and size 0 (the SDK maps that to "no value" / empty).
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    return_ptr: u32,
    return_size: u32,
) -> wasmtime::Result<()> {
    if data.is_empty() {
        write_u32(caller, return_ptr, 0)?;
        return write_u32(caller, return_size, 0);
    }
    let len = u32::try_from(data.len())
        .map_err(|_| format_err!("value of {} bytes does not fit guest memory", data.len()))?;
    let allocate = exports(caller)?.allocate;
    let ptr = allocate.call(&mut *caller, len)?;
    if ptr == 0 {
        return Err(format_err!("guest allocator returned null for {len} bytes"));
    }
    write(caller, ptr, data)?;
    write_u32(caller, return_ptr, ptr)?;
    write_u32(caller, return_size, len)
}
