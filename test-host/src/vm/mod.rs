//! One VM: a wasmtime `Store` with its instance, the root context of the plugin, and the HTTP
//! contexts of the requests it is serving; plus the one `Linker` every host function module of
//! [`crate::hostcalls`] adds itself to.
//!
//! Lifecycle, as in Envoy: `_initialize`; `proxy_on_context_create(root, 0)`;
//! `proxy_on_vm_start(root, vm_config_size)`; `proxy_on_configure(root, plugin_config_size)`;
//! then per request `proxy_on_context_create(id, root)`, the header/body/trailer callbacks,
//! `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use wasmtime::{Engine, InstancePre, Linker, Module, Store, TypedFunc, WasmParams, WasmResults};

use crate::abi::{Action, Level};
use crate::error::Error;
use crate::hostcalls;
use crate::state::callout::Poster;
use crate::state::headers::HeaderList;
use crate::state::log::LogSource;
use crate::state::{
    Direction, GuestExports, HostState, HttpStream, Phase, ROOT_ID, Shared, StreamInfo,
};

mod callbacks;
mod callout;
mod compiled;
mod grpc;
mod roots;
use callbacks::{Callbacks, export};
pub use compiled::HostFunction;
use compiled::filter_complaints;
pub(crate) use compiled::{Compiled, host_functions, one_line};

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
    pub(crate) fn new(
        compiled: &Compiled,
        shared: &Arc<Shared>,
        poster: Poster,
    ) -> Result<Self, Error> {
        Self::with_configuration(compiled, shared, poster, shared.configuration())
    }

    /// [`Vm::new`] with `configuration` as the plugin configuration instead of the host's
    /// current one (the base VM Envoy starts first with a new configuration).
    ///
    /// # Errors
    /// As [`Vm::new`].
    pub(crate) fn with_configuration(
        compiled: &Compiled,
        shared: &Arc<Shared>,
        poster: Poster,
        configuration: Arc<Vec<u8>>,
    ) -> Result<Self, Error> {
        let index = shared.vms_created.fetch_add(1, Ordering::Relaxed);
        let mut state = HostState::new(hostcalls::wasi::context(shared, index), shared.clone());
        state.configuration = configuration;
        state.callouts.set_poster(poster);
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
        let cb = Callbacks::new(&instance, &mut store)?;
        let mut vm = Self {
            store,
            cb,
            next_id: ROOT_ID + 1,
        };
        vm.start_root(ROOT_ID)?;
        Ok(vm)
    }

    /// Creates, starts and configures root context `root` with the state's configuration,
    /// as Envoy starts each plugin on a VM.
    fn start_root(&mut self, root: u32) -> Result<(), Error> {
        let shared = self.store.data().shared.clone();
        let create = self.cb.context_create.clone();
        self.call(root, "proxy_on_context_create", &Some(create), (root, 0))?;
        let vm_config = len32(shared.plugin.vm_configuration.len());
        let start = self.cb.vm_start.clone();
        if self.call(root, "proxy_on_vm_start", &start, (root, vm_config))? == Some(0) {
            return Err(Error::VmStartFailed {
                log: filter_complaints(&shared),
            });
        }
        let config = len32(self.store.data().configuration.len());
        let configure = self.cb.configure.clone();
        if self.call(root, "proxy_on_configure", &configure, (root, config))? == Some(0) {
            return Err(Error::ConfigureFailed {
                log: filter_complaints(&shared),
            });
        }
        Ok(())
    }

    /// A new plugin configuration, as Envoy applies one to a running VM (extension config
    /// discovery): a new root context starts and configures with it, and new HTTP contexts
    /// belong to it; contexts already running keep theirs. A configuration the filter
    /// refuses leaves everything as it was.
    ///
    /// # Errors
    /// The filter refusing it ([`Error::ConfigureFailed`]), or a trap.
    pub(crate) fn reconfigure(&mut self, configuration: Arc<Vec<u8>>) -> Result<(), Error> {
        let root = self.fresh_id();
        let data = self.store.data_mut();
        let previous = std::mem::replace(&mut data.configuration, configuration);
        data.roots.push(root);
        let started = self.start_root(root);
        let data = self.store.data_mut();
        if started.is_ok() {
            let old = std::mem::replace(&mut data.root, root);
            let _ = self.retire_if_idle(old);
        } else {
            data.configuration = previous;
            let _ = self.retire(root);
        }
        let data = self.store.data_mut();
        data.effective_context = data.root;
        started
    }

    /// A context id not in use.
    fn fresh_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(ROOT_ID + 1);
        id
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
        let result = f.call(&mut self.store, params);
        // The gRPC calls this callback started do their I/O from now on.
        self.store.data_mut().grpc.release_starts();
        result.map(Some).map_err(|e| Error::Trap {
            callback: name.to_owned(),
            message: one_line(&e),
        })
    }

    /// The tick period of each root context that asked for one.
    pub(crate) fn tick_periods(&self) -> Vec<(u32, Duration)> {
        let mut periods: Vec<_> = self
            .store
            .data()
            .tick_periods
            .iter()
            .map(|(&root, &period)| (root, period))
            .collect();
        periods.sort_unstable();
        periods
    }

    /// `proxy_on_tick` on the current root context.
    pub(crate) fn tick(&mut self) -> Result<(), Error> {
        let root = self.store.data().root;
        self.tick_root(root)
    }

    /// Creates an HTTP context.
    pub(crate) fn create_http_context(&mut self, info: StreamInfo) -> Result<u32, Error> {
        let id = self.fresh_id();
        let root = self.store.data().root;
        let started_nanos = self.store.data().shared.clock.unix_nanos();
        self.store.data_mut().streams.insert(
            id,
            HttpStream {
                root,
                started_nanos,
                info,
                ..HttpStream::default()
            },
        );
        let create = Some(self.cb.context_create.clone());
        self.call(id, "proxy_on_context_create", &create, (id, root))?;
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
                stream.phase = Phase::RequestHeaders;
                ("proxy_on_request_headers", self.cb.request_headers.clone())
            }
            Direction::Response => {
                stream.response_headers = headers;
                stream.response_resumed = false;
                stream.phase = Phase::ResponseHeaders;
                (
                    "proxy_on_response_headers",
                    self.cb.response_headers.clone(),
                )
            }
        };
        let r = self.call(id, name, &f, (id, count, flag(end_of_stream)))?;
        Ok(r.map_or(Action::Continue, Action::from_abi))
    }

    /// Whether the module exports `direction`'s body callback.
    pub(crate) fn has_body_callback(&self, direction: Direction) -> bool {
        match direction {
            Direction::Request => self.cb.request_body.is_some(),
            Direction::Response => self.cb.response_body.is_some(),
        }
    }

    /// Whether the module exports `direction`'s trailers callback.
    pub(crate) fn has_trailers_callback(&self, direction: Direction) -> bool {
        match direction {
            Direction::Request => self.cb.request_trailers.is_some(),
            Direction::Response => self.cb.response_trailers.is_some(),
        }
    }

    /// A body callback for `chunk`, appended to what the filter kept buffered. Returns the
    /// action and the bytes to forward now: all buffered bytes when the filter continued; none
    /// when it paused, at the end of the stream too (Envoy holds the body then until the filter
    /// resumes the stream or answers it).
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
                stream.request_resumed = false;
                stream.phase = Phase::RequestRest;
                (
                    "proxy_on_request_body",
                    request_body,
                    stream.request_body.len(),
                )
            }
            Direction::Response => {
                stream.response_body.extend_from_slice(chunk);
                stream.response_resumed = false;
                stream.phase = Phase::ResponseRest;
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
        let forward = (action == Action::Continue).then(|| std::mem::take(buffer));
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
                stream.phase = Phase::RequestRest;
                (
                    "proxy_on_request_trailers",
                    self.cb.request_trailers.clone(),
                )
            }
            Direction::Response => {
                stream.response_trailers = trailers;
                stream.phase = Phase::ResponseRest;
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
        self.stream_mut(id)?.phase = Phase::Log;
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
            self.store.data_mut().callouts.cancel_context(id);
            let retired = self.retire_if_idle(stream.root);
            let data = self.store.data_mut();
            data.effective_context = data.root;
            return r.map(drop).and(retired);
        }
        self.store.data_mut().callouts.cancel_context(id);
        let data = self.store.data_mut();
        data.effective_context = data.root;
        r.map(drop)
    }
}
