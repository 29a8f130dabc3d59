//! One VM: a wasmtime `Store` with its instance, the root context of the plugin, and the HTTP
//! contexts of the requests it is serving; plus the one `Linker` every host function module
//! adds itself to, and the context-lifecycle host functions (`proxy_set_effective_context`,
//! `proxy_done`).
//!
//! Lifecycle, as in Envoy: `_initialize`; `proxy_on_context_create(root, 0)`;
//! `proxy_on_vm_start(root, vm_config_size)`; `proxy_on_configure(root, plugin_config_size)`;
//! then per request `proxy_on_context_create(id, root)`, the header/body/trailer callbacks,
//! `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use wasmtime::{
    Caller, Engine, Instance, InstancePre, Linker, Module, Store, TypedFunc, WasmParams,
    WasmResults,
};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::Error;
use crate::abi::{Action, Level, MapType, Status};
use crate::clock::HostClock;
use crate::headers::HeaderList;
use crate::http::LocalReply;
use crate::log::{LogSink, LogSource};
use crate::memory::GuestExports;
use crate::shared::{Metrics, Queues, SharedData};
use crate::wasi::Random;

/// What the plugin was configured with.
#[derive(Debug, Clone)]
pub(crate) struct PluginInfo {
    pub(crate) name: String,
    pub(crate) root_id: String,
    pub(crate) vm_id: String,
    pub(crate) configuration: Vec<u8>,
    pub(crate) vm_configuration: Vec<u8>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) random: Random,
}

/// Host-wide state: one per host, shared by every VM (Envoy's shared data, stats, logs).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) plugin: PluginInfo,
    pub(crate) logs: LogSink,
    pub(crate) clock: HostClock,
    pub(crate) data: SharedData,
    pub(crate) metrics: Metrics,
    pub(crate) queues: Queues,
    /// VMs created so far (gives each a distinct seed).
    pub(crate) vms_created: AtomicU64,
}

impl Shared {
    pub(crate) fn new(plugin: PluginInfo, logs: LogSink, clock: HostClock) -> Self {
        Self {
            plugin,
            logs,
            clock,
            data: SharedData::default(),
            metrics: Metrics::default(),
            queues: Queues::default(),
            vms_created: AtomicU64::new(0),
        }
    }

    pub(crate) fn log(&self, level: Level, message: impl Into<String>) {
        self.logs.log(level, LogSource::Host, message);
    }
}

/// Connection facts behind the `request.*` / `*.address` properties.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamInfo {
    pub(crate) protocol: String,
    pub(crate) request_id: String,
    pub(crate) source: Option<SocketAddr>,
    pub(crate) destination: Option<SocketAddr>,
}

/// State of one HTTP context.
#[derive(Debug, Default)]
pub(crate) struct HttpStream {
    pub(crate) info: StreamInfo,
    pub(crate) request_headers: HeaderList,
    pub(crate) request_trailers: HeaderList,
    pub(crate) response_headers: HeaderList,
    pub(crate) response_trailers: HeaderList,
    pub(crate) request_body: Vec<u8>,
    pub(crate) response_body: Vec<u8>,
    pub(crate) local_reply: Option<LocalReply>,
    pub(crate) request_resumed: bool,
    pub(crate) response_resumed: bool,
    pub(crate) reset: bool,
    pub(crate) properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Woken when the filter resumes, resets or replies while the stream is paused.
    pub(crate) waiter: Option<oneshot::Sender<()>>,
}

impl HttpStream {
    /// Wakes whoever waits for this paused stream.
    pub(crate) fn wake(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.send(());
        }
    }
}

/// The `T` of `Store<T>`: what host functions see through their `Caller`.
pub struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) shared: Arc<Shared>,
    pub(crate) guest: Option<GuestExports>,
    pub(crate) root_id: u32,
    pub(crate) effective_context: u32,
    pub(crate) streams: HashMap<u32, HttpStream>,
    pub(crate) tick_period: Option<Duration>,
    root_properties: HashMap<Vec<u8>, Vec<u8>>,
}

impl HostState {
    fn new(wasi: WasiP1Ctx, shared: Arc<Shared>) -> Self {
        Self {
            wasi,
            shared,
            guest: None,
            root_id: ROOT_ID,
            effective_context: ROOT_ID,
            streams: HashMap::new(),
            tick_period: None,
            root_properties: HashMap::new(),
        }
    }

    /// The HTTP context host calls act on, if the effective context is one.
    pub(crate) fn stream_mut(&mut self) -> Option<&mut HttpStream> {
        self.streams.get_mut(&self.effective_context)
    }

    /// A header map of the effective HTTP context.
    pub(crate) fn map_mut(&mut self, map: MapType) -> Option<&mut HeaderList> {
        let stream = self.stream_mut()?;
        match map {
            MapType::RequestHeaders => Some(&mut stream.request_headers),
            MapType::RequestTrailers => Some(&mut stream.request_trailers),
            MapType::ResponseHeaders => Some(&mut stream.response_headers),
            MapType::ResponseTrailers => Some(&mut stream.response_trailers),
            _ => None,
        }
    }

    /// Logs that a write to a map that does not exist here was ignored.
    pub(crate) fn warn_unavailable_map(&self, map: MapType) {
        self.shared.log(
            Level::Warn,
            format!(
                "header map {map:?} is not available in context {}; write ignored",
                self.effective_context
            ),
        );
    }

    /// Properties set by the filter in the effective context.
    pub(crate) fn property_overrides(&mut self) -> Option<&mut HashMap<Vec<u8>, Vec<u8>>> {
        if self.effective_context == self.root_id {
            return Some(&mut self.root_properties);
        }
        self.streams
            .get_mut(&self.effective_context)
            .map(|s| &mut s.properties)
    }
}

const ROOT_ID: u32 = 1;

/// The `env.proxy_*` functions of ABI 0.2.1 that an SDK 0.2.5 module may import.
pub const ABI_FUNCTIONS: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

fn add_lifecycle_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, id: u32| -> wasmtime::Result<u32> {
            let state = caller.data_mut();
            if id == state.root_id || state.streams.contains_key(&id) {
                state.effective_context = id;
                Ok(Status::Ok.code())
            } else {
                Ok(Status::BadArgument.code())
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_done",
        |_: Caller<'_, HostState>| -> wasmtime::Result<u32> { Ok(Status::Ok.code()) },
    )?;
    Ok(())
}

/// The one linker: every host function module, then WASI preview 1.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    crate::log::add_to_linker(&mut linker)?;
    crate::clock::add_to_linker(&mut linker)?;
    crate::buffers::add_to_linker(&mut linker)?;
    crate::headers::add_to_linker(&mut linker)?;
    crate::http::add_to_linker(&mut linker)?;
    crate::shared::add_to_linker(&mut linker)?;
    crate::properties::add_to_linker(&mut linker)?;
    add_lifecycle_to_linker(&mut linker)?;
    crate::wasi::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// One line from a wasmtime error (traps carry multi-line backtraces).
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!("the guest called proc_exit({})", exit.0);
    }
    format!("{e:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The filter's warning-or-worse lines so far (for start failures), or a pointer to stderr.
fn filter_complaints(shared: &Shared) -> String {
    let lines: Vec<String> = shared
        .logs
        .records()
        .into_iter()
        .filter(|r| r.source != LogSource::Host && r.level >= Level::Warn)
        .map(|r| r.message)
        .collect();
    if lines.is_empty() {
        "(none captured; see the log output)".to_owned()
    } else {
        lines.join(" | ")
    }
}

/// A compiled module, linked and ready to instantiate any number of times.
pub(crate) struct Compiled {
    engine: Engine,
    pre: InstancePre<HostState>,
}

impl Compiled {
    /// Compiles and links `wasm`.
    ///
    /// # Errors
    /// [`Error::Compile`] for invalid wasm, [`Error::UnknownImport`] for an import outside
    /// ABI 0.2.1 and WASI preview 1, [`Error::Link`] for a signature mismatch.
    pub(crate) fn new(wasm: &[u8], shared: &Arc<Shared>) -> Result<Self, Error> {
        let engine = Engine::default();
        let module = Module::new(&engine, wasm).map_err(|e| Error::Compile(one_line(&e)))?;
        let linker = linker(&engine).map_err(|e| Error::Link(one_line(&e)))?;
        let mut probe = Store::new(
            &engine,
            HostState::new(crate::wasi::context(shared, 0), shared.clone()),
        );
        for import in module.imports() {
            if linker.get_by_import(&mut probe, &import).is_none() {
                return Err(Error::UnknownImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Link(one_line(&e)))?;
        Ok(Self { engine, pre })
    }
}

type Cb<P, R> = Option<TypedFunc<P, R>>;

struct Callbacks {
    context_create: TypedFunc<(u32, u32), ()>,
    vm_start: Cb<(u32, u32), u32>,
    configure: Cb<(u32, u32), u32>,
    tick: Cb<u32, ()>,
    request_headers: Cb<(u32, u32, u32), u32>,
    request_body: Cb<(u32, u32, u32), u32>,
    request_trailers: Cb<(u32, u32), u32>,
    response_headers: Cb<(u32, u32, u32), u32>,
    response_body: Cb<(u32, u32, u32), u32>,
    response_trailers: Cb<(u32, u32), u32>,
    log: Cb<u32, ()>,
    done: Cb<u32, u32>,
    delete: Cb<u32, ()>,
}

fn export<P: WasmParams, R: WasmResults>(
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

/// Which direction a body or trailers callback is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
}

/// One instance of the module with its root context started and configured.
pub(crate) struct Vm {
    store: Store<HostState>,
    cb: Callbacks,
    next_id: u32,
}

fn flag(b: bool) -> u32 {
    u32::from(b)
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Vm {
    /// Instantiates the module and starts the plugin's root context.
    ///
    /// # Errors
    /// Missing exports, a trap during start, or the filter refusing to start or configure.
    pub(crate) fn new(compiled: &Compiled, shared: &Arc<Shared>) -> Result<Self, Error> {
        let index = shared.vms_created.fetch_add(1, Ordering::Relaxed);
        let state = HostState::new(crate::wasi::context(shared, index), shared.clone());
        let mut store = Store::new(&compiled.engine, state);
        let instance = compiled
            .pre
            .instantiate(&mut store)
            .map_err(|e| Error::Link(one_line(&e)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or(Error::MissingExport("memory"))?;
        let allocate = match export::<u32, u32>(&instance, &mut store, "proxy_on_memory_allocate")?
        {
            Some(f) => f,
            None => export::<u32, u32>(&instance, &mut store, "malloc")?
                .ok_or(Error::MissingExport("proxy_on_memory_allocate"))?,
        };
        store.data_mut().guest = Some(GuestExports { memory, allocate });
        if instance
            .get_func(&mut store, "proxy_abi_version_0_2_1")
            .is_none()
            && instance
                .get_func(&mut store, "proxy_abi_version_0_2_0")
                .is_none()
        {
            return Err(Error::MissingExport("proxy_abi_version_0_2_1"));
        }
        for start in ["_initialize", "_start"] {
            if let Some(f) = export::<(), ()>(&instance, &mut store, start)? {
                f.call(&mut store, ()).map_err(|e| Error::Trap {
                    callback: start.to_owned(),
                    message: one_line(&e),
                })?;
                break;
            }
        }
        let cb = Callbacks {
            context_create: export(&instance, &mut store, "proxy_on_context_create")?
                .ok_or(Error::MissingExport("proxy_on_context_create"))?,
            vm_start: export(&instance, &mut store, "proxy_on_vm_start")?,
            configure: export(&instance, &mut store, "proxy_on_configure")?,
            tick: export(&instance, &mut store, "proxy_on_tick")?,
            request_headers: export(&instance, &mut store, "proxy_on_request_headers")?,
            request_body: export(&instance, &mut store, "proxy_on_request_body")?,
            request_trailers: export(&instance, &mut store, "proxy_on_request_trailers")?,
            response_headers: export(&instance, &mut store, "proxy_on_response_headers")?,
            response_body: export(&instance, &mut store, "proxy_on_response_body")?,
            response_trailers: export(&instance, &mut store, "proxy_on_response_trailers")?,
            log: export(&instance, &mut store, "proxy_on_log")?,
            done: export(&instance, &mut store, "proxy_on_done")?,
            delete: export(&instance, &mut store, "proxy_on_delete")?,
        };
        let mut vm = Self {
            store,
            cb,
            next_id: ROOT_ID + 1,
        };
        let create = vm.cb.context_create.clone();
        vm.call(
            ROOT_ID,
            "proxy_on_context_create",
            &Some(create),
            (ROOT_ID, 0),
        )?;
        let vm_config = len32(shared.plugin.vm_configuration.len());
        let start = vm.cb.vm_start.clone();
        if vm.call(ROOT_ID, "proxy_on_vm_start", &start, (ROOT_ID, vm_config))? == Some(0) {
            return Err(Error::VmStartFailed {
                log: filter_complaints(shared),
            });
        }
        let config = len32(shared.plugin.configuration.len());
        let configure = vm.cb.configure.clone();
        if vm.call(ROOT_ID, "proxy_on_configure", &configure, (ROOT_ID, config))? == Some(0) {
            return Err(Error::ConfigureFailed {
                log: filter_complaints(shared),
            });
        }
        Ok(vm)
    }

    /// Calls `f` with `context` effective; a missing export is `Ok(None)`.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        context: u32,
        name: &str,
        f: &Option<TypedFunc<P, R>>,
        params: P,
    ) -> Result<Option<R>, Error> {
        let Some(f) = f else { return Ok(None) };
        self.store.data_mut().effective_context = context;
        f.call(&mut self.store, params)
            .map(Some)
            .map_err(|e| Error::Trap {
                callback: name.to_owned(),
                message: one_line(&e),
            })
    }

    /// The tick period the root context asked for.
    pub(crate) fn tick_period(&self) -> Option<Duration> {
        self.store.data().tick_period
    }

    /// `proxy_on_tick` on the root context.
    pub(crate) fn tick(&mut self) -> Result<(), Error> {
        let f = self.cb.tick.clone();
        self.call(ROOT_ID, "proxy_on_tick", &f, ROOT_ID).map(drop)
    }

    /// Creates an HTTP context.
    pub(crate) fn create_http_context(&mut self, info: StreamInfo) -> Result<u32, Error> {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(ROOT_ID + 1);
        self.store.data_mut().streams.insert(
            id,
            HttpStream {
                info,
                ..HttpStream::default()
            },
        );
        let create = Some(self.cb.context_create.clone());
        self.call(id, "proxy_on_context_create", &create, (id, ROOT_ID))?;
        Ok(id)
    }

    pub(crate) fn stream(&self, id: u32) -> Option<&HttpStream> {
        self.store.data().streams.get(&id)
    }

    pub(crate) fn stream_mut(&mut self, id: u32) -> Result<&mut HttpStream, Error> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id)
            .ok_or(Error::UnknownContext(id))
    }

    /// `proxy_on_request_headers` / `proxy_on_response_headers` with `headers` as the map.
    pub(crate) fn headers(
        &mut self,
        id: u32,
        direction: Direction,
        headers: HeaderList,
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        let stream = self.stream_mut(id)?;
        let count = len32(headers.len());
        let (name, f) = match direction {
            Direction::Request => {
                stream.request_headers = headers;
                stream.request_resumed = false;
                ("proxy_on_request_headers", self.cb.request_headers.clone())
            }
            Direction::Response => {
                stream.response_headers = headers;
                stream.response_resumed = false;
                (
                    "proxy_on_response_headers",
                    self.cb.response_headers.clone(),
                )
            }
        };
        let r = self.call(id, name, &f, (id, count, flag(end_of_stream)))?;
        Ok(r.map_or(Action::Continue, Action::from_abi))
    }

    /// A body callback for `chunk`, appended to what the filter kept buffered. Returns the
    /// action and the bytes to forward now (all buffered bytes unless the filter paused before
    /// the end of the stream).
    pub(crate) fn body(
        &mut self,
        id: u32,
        direction: Direction,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<(Action, Option<Vec<u8>>), Error> {
        let (request_body, response_body) =
            (self.cb.request_body.clone(), self.cb.response_body.clone());
        let stream = self.stream_mut(id)?;
        let (name, f, size) = match direction {
            Direction::Request => {
                stream.request_body.extend_from_slice(chunk);
                (
                    "proxy_on_request_body",
                    request_body,
                    stream.request_body.len(),
                )
            }
            Direction::Response => {
                stream.response_body.extend_from_slice(chunk);
                (
                    "proxy_on_response_body",
                    response_body,
                    stream.response_body.len(),
                )
            }
        };
        let r = self.call(id, name, &f, (id, len32(size), flag(end_of_stream)))?;
        let action = r.map_or(Action::Continue, Action::from_abi);
        let stream = self.stream_mut(id)?;
        let buffer = match direction {
            Direction::Request => &mut stream.request_body,
            Direction::Response => &mut stream.response_body,
        };
        let forward = (action == Action::Continue || end_of_stream).then(|| std::mem::take(buffer));
        Ok((action, forward))
    }

    /// A trailers callback with `trailers` as the map.
    pub(crate) fn trailers(
        &mut self,
        id: u32,
        direction: Direction,
        trailers: HeaderList,
    ) -> Result<Action, Error> {
        let stream = self.stream_mut(id)?;
        let count = len32(trailers.len());
        let (name, f) = match direction {
            Direction::Request => {
                stream.request_trailers = trailers;
                (
                    "proxy_on_request_trailers",
                    self.cb.request_trailers.clone(),
                )
            }
            Direction::Response => {
                stream.response_trailers = trailers;
                (
                    "proxy_on_response_trailers",
                    self.cb.response_trailers.clone(),
                )
            }
        };
        let r = self.call(id, name, &f, (id, count))?;
        Ok(r.map_or(Action::Continue, Action::from_abi))
    }

    /// `proxy_on_log`.
    pub(crate) fn log(&mut self, id: u32) -> Result<(), Error> {
        self.stream_mut(id)?;
        let f = self.cb.log.clone();
        self.call(id, "proxy_on_log", &f, id).map(drop)
    }

    /// `proxy_on_done` then `proxy_on_delete`; forgets the context.
    pub(crate) fn done(&mut self, id: u32) -> Result<(), Error> {
        self.stream_mut(id)?;
        let done = self.cb.done.clone();
        let delete = self.cb.delete.clone();
        let r = self
            .call(id, "proxy_on_done", &done, id)
            .and_then(|_| self.call(id, "proxy_on_delete", &delete, id));
        if let Some(mut stream) = self.store.data_mut().streams.remove(&id) {
            stream.wake();
        }
        self.store.data_mut().effective_context = ROOT_ID;
        r.map(drop)
    }
}
