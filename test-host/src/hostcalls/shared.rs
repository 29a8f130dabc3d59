//! Shared data (`proxy_{get,set}_shared_data`), metrics (`proxy_*_metric`) and shared queues
//! (`proxy_*_shared_queue`): decode the arguments, call the host-wide stores of
//! [`crate::state::shared`].

use wasmtime::{Caller, Linker};

use crate::abi::{MetricType, Status};
use crate::hostcalls::memory;
use crate::state::HostState;

fn proxy_get_shared_data(
    mut caller: Caller<'_, HostState>,
    key_ptr: u32,
    key_size: u32,
    ret_ptr: u32,
    ret_size: u32,
    ret_cas: u32,
) -> wasmtime::Result<u32> {
    let key = memory::read(&mut caller, key_ptr, key_size)?;
    let Some((value, cas)) = caller.data().shared.data.get(&key) else {
        return Ok(Status::NotFound.code());
    };
    memory::return_bytes(&mut caller, &value, ret_ptr, ret_size)?;
    memory::write_u32(&mut caller, ret_cas, cas)?;
    Ok(Status::Ok.code())
}

fn proxy_set_shared_data(
    mut caller: Caller<'_, HostState>,
    key_ptr: u32,
    key_size: u32,
    value_ptr: u32,
    value_size: u32,
    cas: u32,
) -> wasmtime::Result<u32> {
    let key = memory::read(&mut caller, key_ptr, key_size)?;
    let value = memory::read(&mut caller, value_ptr, value_size)?;
    Ok(caller.data().shared.data.set(&key, &value, cas).code())
}

fn proxy_define_metric(
    mut caller: Caller<'_, HostState>,
    kind: u32,
    name_ptr: u32,
    name_size: u32,
    ret_id: u32,
) -> wasmtime::Result<u32> {
    let Some(kind) = MetricType::from_abi(kind) else {
        return Ok(Status::BadArgument.code());
    };
    let name = memory::read_string(&mut caller, name_ptr, name_size)?;
    let id = caller.data().shared.metrics.define(kind, &name);
    memory::write_u32(&mut caller, ret_id, id)?;
    Ok(Status::Ok.code())
}

fn proxy_increment_metric(
    caller: Caller<'_, HostState>,
    id: u32,
    offset: i64,
) -> wasmtime::Result<u32> {
    Ok(caller.data().shared.metrics.increment(id, offset).code())
}

fn proxy_record_metric(
    caller: Caller<'_, HostState>,
    id: u32,
    value: u64,
) -> wasmtime::Result<u32> {
    Ok(caller.data().shared.metrics.record(id, value).code())
}

fn proxy_get_metric(
    mut caller: Caller<'_, HostState>,
    id: u32,
    ret_value: u32,
) -> wasmtime::Result<u32> {
    match caller.data().shared.metrics.get(id) {
        Ok(v) => {
            memory::write_u64(&mut caller, ret_value, v)?;
            Ok(Status::Ok.code())
        }
        Err(status) => Ok(status.code()),
    }
}

fn proxy_register_shared_queue(
    mut caller: Caller<'_, HostState>,
    name_ptr: u32,
    name_size: u32,
    ret_id: u32,
) -> wasmtime::Result<u32> {
    let name = memory::read_string(&mut caller, name_ptr, name_size)?;
    let data = caller.data();
    let root = data.root_of(data.effective_context);
    let registrant = data.callouts.poster().cloned().map(|p| (p, root));
    let id = data.shared.register_queue(&name, registrant);
    memory::write_u32(&mut caller, ret_id, id)?;
    Ok(Status::Ok.code())
}

fn proxy_resolve_shared_queue(
    mut caller: Caller<'_, HostState>,
    vm_ptr: u32,
    vm_size: u32,
    name_ptr: u32,
    name_size: u32,
    ret_id: u32,
) -> wasmtime::Result<u32> {
    let vm_id = memory::read_string(&mut caller, vm_ptr, vm_size)?;
    let name = memory::read_string(&mut caller, name_ptr, name_size)?;
    match caller.data().shared.queues.resolve(&vm_id, &name) {
        Some(id) => {
            memory::write_u32(&mut caller, ret_id, id)?;
            Ok(Status::Ok.code())
        }
        None => Ok(Status::NotFound.code()),
    }
}

fn proxy_enqueue_shared_queue(
    mut caller: Caller<'_, HostState>,
    id: u32,
    ptr: u32,
    size: u32,
) -> wasmtime::Result<u32> {
    let value = memory::read(&mut caller, ptr, size)?;
    Ok(caller.data().shared.queues.enqueue(id, value).code())
}

fn proxy_dequeue_shared_queue(
    mut caller: Caller<'_, HostState>,
    id: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    match caller.data().shared.queues.dequeue(id) {
        Ok(value) => {
            memory::return_bytes(&mut caller, &value, ret_ptr, ret_size)?;
            Ok(Status::Ok.code())
        }
        Err(status) => Ok(status.code()),
    }
}

/// Adds shared data, metrics and shared-queue functions.
///
/// # Errors
/// When a function is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_shared_data", proxy_get_shared_data)?;
    linker.func_wrap("env", "proxy_set_shared_data", proxy_set_shared_data)?;
    linker.func_wrap("env", "proxy_define_metric", proxy_define_metric)?;
    linker.func_wrap("env", "proxy_increment_metric", proxy_increment_metric)?;
    linker.func_wrap("env", "proxy_record_metric", proxy_record_metric)?;
    linker.func_wrap("env", "proxy_get_metric", proxy_get_metric)?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        proxy_register_shared_queue,
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        proxy_resolve_shared_queue,
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        proxy_enqueue_shared_queue,
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        proxy_dequeue_shared_queue,
    )?;
    Ok(())
}
