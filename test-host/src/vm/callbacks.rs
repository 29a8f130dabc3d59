//! The proxy-wasm callbacks a module exports, looked up once per VM.

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use super::one_line;
use crate::error::Error;
use crate::state::HostState;

type Cb<P, R> = Option<TypedFunc<P, R>>;

pub(super) struct Callbacks {
    pub(super) context_create: TypedFunc<(u32, u32), ()>,
    pub(super) vm_start: Cb<(u32, u32), u32>,
    pub(super) configure: Cb<(u32, u32), u32>,
    pub(super) tick: Cb<u32, ()>,
    pub(super) queue_ready: Cb<(u32, u32), ()>,
    pub(super) request_headers: Cb<(u32, u32, u32), u32>,
    pub(super) request_body: Cb<(u32, u32, u32), u32>,
    pub(super) request_trailers: Cb<(u32, u32), u32>,
    pub(super) response_headers: Cb<(u32, u32, u32), u32>,
    pub(super) response_body: Cb<(u32, u32, u32), u32>,
    pub(super) response_trailers: Cb<(u32, u32), u32>,
    pub(super) log: Cb<u32, ()>,
    pub(super) done: Cb<u32, u32>,
    pub(super) delete: Cb<u32, ()>,
    pub(super) http_call_response: Cb<(u32, u32, u32, u32, u32), ()>,
    pub(super) grpc_initial_metadata: Cb<(u32, u32, u32), ()>,
    pub(super) grpc_receive: Cb<(u32, u32, u32), ()>,
    pub(super) grpc_trailing_metadata: Cb<(u32, u32, u32), ()>,
    pub(super) grpc_close: Cb<(u32, u32, u32), ()>,
}

impl Callbacks {
    /// The callbacks `instance` exports (only `proxy_on_context_create` is required).
    pub(super) fn new(instance: &Instance, store: &mut Store<HostState>) -> Result<Self, Error> {
        Ok(Self {
            context_create: export(instance, store, "proxy_on_context_create")?
                .ok_or(Error::MissingExport("proxy_on_context_create"))?,
            vm_start: export(instance, store, "proxy_on_vm_start")?,
            configure: export(instance, store, "proxy_on_configure")?,
            tick: export(instance, store, "proxy_on_tick")?,
            queue_ready: export(instance, store, "proxy_on_queue_ready")?,
            request_headers: export(instance, store, "proxy_on_request_headers")?,
            request_body: export(instance, store, "proxy_on_request_body")?,
            request_trailers: export(instance, store, "proxy_on_request_trailers")?,
            response_headers: export(instance, store, "proxy_on_response_headers")?,
            response_body: export(instance, store, "proxy_on_response_body")?,
            response_trailers: export(instance, store, "proxy_on_response_trailers")?,
            log: export(instance, store, "proxy_on_log")?,
            done: export(instance, store, "proxy_on_done")?,
            delete: export(instance, store, "proxy_on_delete")?,
            http_call_response: export(instance, store, "proxy_on_http_call_response")?,
            grpc_initial_metadata: export(
                instance,
                store,
                "proxy_on_grpc_receive_initial_metadata",
            )?,
            grpc_receive: export(instance, store, "proxy_on_grpc_receive")?,
            grpc_trailing_metadata: export(
                instance,
                store,
                "proxy_on_grpc_receive_trailing_metadata",
            )?,
            grpc_close: export(instance, store, "proxy_on_grpc_close")?,
        })
    }
}

pub(super) fn export<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &'static str,
) -> Result<Option<TypedFunc<P, R>>, Error> {
    if instance.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    instance
        .get_typed_func::<P, R>(&mut *store, name)
        .map(Some)
        .map_err(|e| Error::Export {
            name,
            reason: one_line(&e),
        })
}
