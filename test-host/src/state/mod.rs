//! The host's state, as the ABI concern modules (`hostcalls`) see it: the leaf every other part
//! of the host builds on. Nothing here reads guest memory or knows about wasmtime's linker; the
//! host functions decode their arguments and call the methods below (proxy-wasm-cpp-host's
//! split of `exports.cc` from `context.cc`; wasmtime-wasi's state types reached through a
//! closure).
//!
//! - [`Shared`]: one per host, shared by every VM (plugin settings, log, clock, shared data,
//!   metrics, queues).
//! - [`HostState`]: the `T` of one VM's `Store<T>`: its WASI context, the effective context,
//!   and the [`HttpStream`] of every HTTP context it serves.

pub(crate) mod callout;
pub(crate) mod clock;
pub(crate) mod clusters;
pub(crate) mod foreign;
pub(crate) mod grpc;
pub(crate) mod headers;
pub(crate) mod log;
pub(crate) mod properties;
pub(crate) mod shared;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use wasmtime::{Memory, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::abi::{BufferType, Level, MapType, Status, StreamType};
use callout::{Callouts, Poster};
use clock::HostClock;
use clusters::Clusters;
use grpc::GrpcCalls;
use headers::HeaderList;
use log::{LogSink, LogSource};
pub(crate) use properties::Phase;
use shared::{Metrics, Queues, SharedData};

/// The id of every VM's root context.
pub(crate) const ROOT_ID: u32 = 1;

/// The random source a host gives its filters (WASI `random_get`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Random {
    /// A cryptographically secure generator seeded from the operating system.
    #[default]
    Os,
    /// A deterministic generator: the VM created `n`-th (from 0) gets seed `seed + n`, so one
    /// worker replays the same bytes on every run.
    Seeded(u64),
}

/// What the plugin was configured with.
#[derive(Debug, Clone, Default)]
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
    /// The named clusters callouts reach, and the runtime their I/O runs on.
    pub(crate) clusters: Clusters,
    /// VMs created so far (gives each a distinct seed).
    pub(crate) vms_created: AtomicU64,
    /// Jobs sent to the VMs' worker threads (`Host::worker_round_trips`).
    pub(crate) round_trips: AtomicU64,
    /// The latest accepted plugin configuration (`Host::reconfigure`).
    configuration: Mutex<Arc<Vec<u8>>>,
}

impl Shared {
    pub(crate) fn new(
        plugin: PluginInfo,
        logs: LogSink,
        clock: HostClock,
        clusters: Clusters,
    ) -> Self {
        Self {
            configuration: Mutex::new(Arc::new(plugin.configuration.clone())),
            plugin,
            logs,
            clock,
            data: SharedData::default(),
            metrics: Metrics::default(),
            queues: Queues::default(),
            clusters,
            vms_created: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
        }
    }

    /// `proxy_register_shared_queue`: queue `name` in this plugin's VM id namespace.
    /// The plugin configuration new VMs start with: the latest accepted one.
    pub(crate) fn configuration(&self) -> Arc<Vec<u8>> {
        self.configuration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `configuration` the one new VMs start with.
    pub(crate) fn set_configuration(&self, configuration: Arc<Vec<u8>>) {
        *self
            .configuration
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = configuration;
    }

    pub(crate) fn register_queue(&self, name: &str, registrant: Option<(Poster, u32)>) -> u32 {
        self.queues.register(&self.plugin.vm_id, name, registrant)
    }

    /// A line in the log from the host itself.
    pub(crate) fn log(&self, level: Level, message: impl Into<String>) {
        self.logs.log(level, LogSource::Host, message);
    }
}

/// A response the filter produced itself (`proxy_send_local_response`); never forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status code.
    pub status: u16,
    /// Envoy's "response code details" (free text, often empty).
    pub details: String,
    /// Headers the filter asked for.
    pub headers: HeaderList,
    /// Body.
    pub body: Vec<u8>,
    /// The gRPC status the filter gave (`grpc_status` >= 0); a gRPC request's reply carries it.
    pub grpc_status: Option<u32>,
}

/// Which direction a headers, body or trailers callback is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
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
    /// The root context this HTTP context was created for.
    pub(crate) root: u32,
    /// The callback it is in or last ran (what properties it can see).
    pub(crate) phase: Phase,
    /// When it was created, by the filter's clock (`request.time`).
    pub(crate) started_nanos: u64,
    /// The filter answered it with a local reply.
    pub(crate) replied_locally: bool,
    pub(crate) info: StreamInfo,
    pub(crate) request_headers: HeaderList,
    pub(crate) request_trailers: HeaderList,
    pub(crate) response_headers: HeaderList,
    pub(crate) response_trailers: HeaderList,
    pub(crate) request_body: Vec<u8>,
    pub(crate) response_body: Vec<u8>,
    pub(crate) local_reply: Option<LocalReply>,
    /// Envoy's response code details (`response.code_details`): `via_upstream`, or a local
    /// reply's details.
    pub(crate) code_details: Option<String>,
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

    /// The body buffer of `direction`.
    pub(crate) fn body_mut(&mut self, direction: Direction) -> &mut Vec<u8> {
        match direction {
            Direction::Request => &mut self.request_body,
            Direction::Response => &mut self.response_body,
        }
    }
}

/// The guest exports host functions need: its memory and its allocator.
#[derive(Clone)]
pub(crate) struct GuestExports {
    pub(crate) memory: Memory,
    pub(crate) allocate: TypedFunc<u32, u32>,
}

/// The `T` of `Store<T>`: what host functions see through their `Caller`.
pub(crate) struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) shared: Arc<Shared>,
    pub(crate) guest: Option<GuestExports>,
    pub(crate) effective_context: u32,
    /// The root context new HTTP contexts belong to (the latest configuration's).
    pub(crate) root: u32,
    /// Every live root context: earlier ones stay for the requests they still have.
    pub(crate) roots: Vec<u32>,
    /// What `proxy_get_buffer_bytes` gives for the plugin configuration.
    pub(crate) configuration: Arc<Vec<u8>>,
    pub(crate) streams: HashMap<u32, HttpStream>,
    /// The tick period of each root context that asked for one (Envoy keeps one per root).
    pub(crate) tick_periods: HashMap<u32, Duration>,
    /// HTTP (and gRPC) calls in flight, and the response a callback is reading.
    pub(crate) callouts: Callouts,
    /// gRPC calls and streams in flight, and what a gRPC callback reads.
    pub(crate) grpc: GrpcCalls,
    root_properties: HashMap<Vec<u8>, Vec<u8>>,
}

impl HostState {
    pub(crate) fn new(wasi: WasiP1Ctx, shared: Arc<Shared>) -> Self {
        Self {
            wasi,
            configuration: shared.configuration(),
            shared,
            guest: None,
            effective_context: ROOT_ID,
            root: ROOT_ID,
            roots: vec![ROOT_ID],
            streams: HashMap::new(),
            tick_periods: HashMap::new(),
            callouts: Callouts::default(),
            grpc: GrpcCalls::default(),
            root_properties: HashMap::new(),
        }
    }

    /// A warning from the host (an ignored call, ...).
    pub(crate) fn warn(&self, message: impl Into<String>) {
        self.shared.log(Level::Warn, message);
    }

    /// `proxy_set_effective_context`: the root or a live HTTP context.
    pub(crate) fn set_effective_context(&mut self, id: u32) -> Status {
        if self.roots.contains(&id) || self.streams.contains_key(&id) {
            self.effective_context = id;
            Status::Ok
        } else {
            Status::BadArgument
        }
    }

    /// The root context of `context`: itself for a root, the one an HTTP context belongs to.
    pub(crate) fn root_of(&self, context: u32) -> u32 {
        self.streams.get(&context).map_or(context, |s| s.root)
    }

    /// `proxy_set_tick_period_milliseconds` for the effective context's root (0 stops its
    /// ticks), as Envoy sets it from a root or from one of its HTTP contexts.
    pub(crate) fn set_tick_period(&mut self, millis: u32) {
        let root = self.root_of(self.effective_context);
        if millis == 0 {
            self.tick_periods.remove(&root);
        } else {
            self.tick_periods
                .insert(root, Duration::from_millis(u64::from(millis)));
        }
    }

    /// The HTTP context host calls act on, if the effective context is one.
    pub(crate) fn stream_mut(&mut self) -> Option<&mut HttpStream> {
        self.streams.get_mut(&self.effective_context)
    }

    /// A header map of the effective HTTP context.
    pub(crate) fn map_mut(&mut self, map: MapType) -> Option<&mut HeaderList> {
        match map {
            MapType::GrpcReceiveInitialMetadata => return self.grpc.initial_metadata.as_mut(),
            MapType::GrpcReceiveTrailingMetadata => return self.grpc.trailing_metadata.as_mut(),
            MapType::HttpCallResponseHeaders => {
                return self.callouts.current.as_mut().map(|r| &mut r.headers);
            }
            MapType::HttpCallResponseTrailers => {
                return self.callouts.current.as_mut().map(|r| &mut r.trailers);
            }
            _ => {}
        }
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
        self.warn(format!(
            "header map {map:?} is not available in context {}; write ignored",
            self.effective_context
        ));
    }

    /// A readable buffer (`proxy_get_buffer_bytes`): the configurations, or a body of the
    /// effective HTTP context.
    pub(crate) fn buffer(&mut self, kind: BufferType) -> Option<Vec<u8>> {
        match kind {
            BufferType::PluginConfiguration => Some(self.configuration.to_vec()),
            BufferType::VmConfiguration => Some(self.shared.plugin.vm_configuration.clone()),
            BufferType::GrpcReceiveBuffer => self.grpc.receive_buffer.clone(),
            BufferType::HttpCallResponseBody => {
                self.callouts.current.as_ref().map(|r| r.body.clone())
            }
            BufferType::RequestBody => self.stream_mut().map(|s| s.request_body.clone()),
            BufferType::ResponseBody => self.stream_mut().map(|s| s.response_body.clone()),
            _ => None,
        }
    }

    /// `proxy_set_buffer_bytes`: replaces `size` bytes at `start` of a body with `data` (both
    /// clamped to the buffer); anything else is logged and ignored (the SDK accepts only `Ok`).
    pub(crate) fn set_buffer(&mut self, kind: BufferType, start: usize, size: usize, data: &[u8]) {
        let direction = match kind {
            BufferType::RequestBody => Some(Direction::Request),
            BufferType::ResponseBody => Some(Direction::Response),
            _ => None,
        };
        let target = direction.and_then(|d| self.stream_mut().map(|s| s.body_mut(d)));
        match target {
            Some(buf) => {
                let start = start.min(buf.len());
                let end = start.saturating_add(size).min(buf.len());
                buf.splice(start..end, data.iter().copied());
            }
            None => self.warn(format!(
                "proxy_set_buffer_bytes: buffer {kind:?} is not writable here; ignored"
            )),
        }
    }

    /// Properties set by the filter in the effective context.
    fn property_overrides(&mut self) -> Option<&mut HashMap<Vec<u8>, Vec<u8>>> {
        if self.roots.contains(&self.effective_context) {
            return Some(&mut self.root_properties);
        }
        self.streams
            .get_mut(&self.effective_context)
            .map(|s| &mut s.properties)
    }

    /// `proxy_get_property` with Envoy's names and encodings (strings as bytes, integers as
    /// 8-byte little-endian); `path` is NUL-separated segments. Values the filter set come
    /// first.
    pub(crate) fn property(&mut self, path: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.property_overrides().and_then(|p| p.get(path)) {
            return Some(v.clone());
        }
        let name = String::from_utf8_lossy(path).into_owned();
        let segments: Vec<&str> = name.split('\0').collect();
        let plugin = &self.shared.plugin;
        match segments.as_slice() {
            ["plugin_name"] => Some(plugin.name.clone().into_bytes()),
            ["plugin_root_id"] => Some(plugin.root_id.clone().into_bytes()),
            ["plugin_vm_id"] => Some(plugin.vm_id.clone().into_bytes()),
            _ => {
                let facts = properties::Facts {
                    now_nanos: self.shared.clock.unix_nanos(),
                    upstream: self
                        .shared
                        .clusters
                        .get(clusters::UPSTREAM)
                        .and_then(|c| c.authority.parse().ok()),
                };
                self.streams
                    .get(&self.effective_context)?
                    .property(&segments, &facts)
            }
        }
    }

    /// `proxy_set_property`: kept for the effective context and read back first.
    pub(crate) fn set_property(&mut self, path: Vec<u8>, value: Vec<u8>) {
        if let Some(overrides) = self.property_overrides() {
            overrides.insert(path, value);
        }
    }

    /// `proxy_send_local_response`: the first reply of a stream wins; it wakes a paused stream.
    pub(crate) fn send_local_response(&mut self, reply: LocalReply) {
        let Some(stream) = self.stream_mut() else {
            self.warn("proxy_send_local_response outside an HTTP context; ignored");
            return;
        };
        if stream.local_reply.is_none() {
            // Envoy records the reply's details as the response code details at once.
            stream.code_details = Some(reply.details.clone());
            stream.local_reply = Some(reply);
            stream.replied_locally = true;
        }
        stream.wake();
    }

    /// `proxy_continue_stream`: resumes the request or the response.
    pub(crate) fn continue_stream(&mut self, kind: StreamType) {
        if let Some(stream) = self.stream_mut() {
            match kind {
                StreamType::HttpRequest => stream.request_resumed = true,
                StreamType::HttpResponse => stream.response_resumed = true,
                StreamType::Downstream | StreamType::Upstream => {}
            }
            stream.wake();
        }
    }

    /// `proxy_close_stream`: the stream is reset.
    pub(crate) fn close_stream(&mut self) {
        if let Some(stream) = self.stream_mut() {
            stream.reset = true;
            stream.wake();
        }
    }
}
