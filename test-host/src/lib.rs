//! A wasmtime host that runs proxy-wasm (ABI 0.2.1) HTTP filters with Envoy's semantics, for
//! tests and local runs.
//!
//! Two ways in, both configured with a [`HostBuilder`]:
//! - [`HostBuilder::start`] runs a real HTTP/1.1 proxy (hyper 1 + tokio) on `127.0.0.1:0` (or
//!   [`HostBuilder::listen`]) in front of [`HostBuilder::upstream`]; the returned [`Host`] is a
//!   guard that stops the proxy when dropped, and exposes logs, metrics and shared data.
//! - [`HostBuilder::instantiate`] loads the plugin into one VM without HTTP; [`Plugin`] drives
//!   the callbacks directly and reads back headers, actions and local replies.
//!
//! Concurrency model (Envoy's): N worker threads, each with its own `Store` and instance of one
//! compiled `Module`; a root context per VM; an HTTP context per request, on the worker that
//! owns the connection. Shared data and metrics are host-wide. Wasm never runs on an async task:
//! each VM lives on its own OS thread and receives jobs over a channel.
#![forbid(unsafe_code)]

pub mod abi;
mod buffers;
pub mod clock;
mod edge;
pub mod headers;
pub mod http;
pub mod log;
mod memory;
mod properties;
mod proxy;
mod shared;
mod vm;
mod wasi;
mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use abi::{Action, Level};
pub use clock::{Clock, ManualClock};
pub use headers::HeaderList;
pub use http::LocalReply;
pub use log::{LogRecord, LogSource};
pub use vm::{ABI_FUNCTIONS, HostState};
pub use wasi::Random;

use crate::clock::HostClock;
use crate::log::LogSink;
use crate::shared::MetricValue;
use crate::vm::{Compiled, Direction, PluginInfo, Shared, StreamInfo};
use crate::worker::{Ctx, Outcome, WorkerHandle};

/// Everything that can go wrong loading a plugin or running the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `.wasm` file could not be read.
    #[error("cannot read wasm file \"{path}\": {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid wasm module.
    #[error("cannot compile the wasm module: {0}")]
    Compile(String),
    /// The module imports something outside ABI 0.2.1 and WASI preview 1.
    #[error("the module imports \"{module}.{name}\", which this host does not provide")]
    UnknownImport {
        /// Import module (e.g. `env`).
        module: String,
        /// Import name (e.g. `proxy_foo`).
        name: String,
    },
    /// Linking or instantiation failed (e.g. an import with the wrong signature).
    #[error("cannot link the wasm module: {0}")]
    Link(String),
    /// A required export is missing.
    #[error("the module does not export \"{0}\"")]
    MissingExport(&'static str),
    /// An export has the wrong type.
    #[error("the module's export \"{name}\" has the wrong type: {reason}")]
    Export {
        /// Export name.
        name: &'static str,
        /// What wasmtime said.
        reason: String,
    },
    /// `proxy_on_vm_start` returned false.
    #[error("the filter refused to start: proxy_on_vm_start returned false; filter log: {log}")]
    VmStartFailed {
        /// The filter's warning and error lines logged during start, joined with ` | `.
        log: String,
    },
    /// `proxy_on_configure` returned false.
    #[error(
        "the filter rejected its configuration: proxy_on_configure returned false; filter log: {log}"
    )]
    ConfigureFailed {
        /// The filter's warning and error lines logged during start, joined with ` | `.
        log: String,
    },
    /// The guest trapped (or panicked) in a callback.
    #[error("the filter trapped in {callback}: {message}")]
    Trap {
        /// The callback (export) that trapped.
        callback: String,
        /// The trap, on one line.
        message: String,
    },
    /// The context belonged to a VM that was reloaded after a trap.
    #[error("context {0} was lost when its VM was reloaded")]
    ContextLost(u32),
    /// No such HTTP context.
    #[error("no HTTP context {0}")]
    UnknownContext(u32),
    /// The worker has no VM (reloading failed).
    #[error("the worker has no VM")]
    VmUnavailable,
    /// The worker thread stopped.
    #[error("the worker thread has stopped")]
    WorkerGone,
    /// A thread could not be spawned.
    #[error("cannot spawn a worker thread: {0}")]
    Thread(String),
    /// An invalid builder setting.
    #[error("invalid {what} \"{value}\": {reason}")]
    Invalid {
        /// The setting.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where the module comes from.
#[derive(Clone, Debug)]
enum Wasm {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

/// The module source of [`HostBuilder::new`]: bytes or a path.
#[derive(Clone, Debug)]
pub struct WasmSource(Wasm);

impl From<Vec<u8>> for WasmSource {
    fn from(b: Vec<u8>) -> Self {
        Self(Wasm::Bytes(b))
    }
}
impl From<&[u8]> for WasmSource {
    fn from(b: &[u8]) -> Self {
        Self(Wasm::Bytes(b.to_vec()))
    }
}
impl From<PathBuf> for WasmSource {
    fn from(p: PathBuf) -> Self {
        Self(Wasm::Path(p))
    }
}
impl From<&Path> for WasmSource {
    fn from(p: &Path) -> Self {
        Self(Wasm::Path(p.to_path_buf()))
    }
}
impl From<&PathBuf> for WasmSource {
    fn from(p: &PathBuf) -> Self {
        Self(Wasm::Path(p.clone()))
    }
}

/// Configures a host: the plugin, its environment, and (for [`HostBuilder::start`]) the proxy.
#[derive(Clone, Debug)]
#[must_use]
pub struct HostBuilder {
    wasm: WasmSource,
    plugin: PluginInfo,
    workers: usize,
    clock: Clock,
    listen: SocketAddr,
    upstream: Option<String>,
    upstream_timeout: Duration,
    resume_timeout: Duration,
    limits: edge::Limits,
    log_level: Level,
    echo_logs: bool,
    log_capacity: usize,
}

impl HostBuilder {
    /// A host for the module `wasm` (bytes or a path): no configuration, one worker, the system
    /// clock, OS randomness, log level info, listening on `127.0.0.1:0`.
    pub fn new(wasm: impl Into<WasmSource>) -> Self {
        Self {
            wasm: wasm.into(),
            plugin: PluginInfo {
                name: "test-host".to_owned(),
                root_id: String::new(),
                vm_id: String::new(),
                configuration: Vec::new(),
                vm_configuration: Vec::new(),
                env: Vec::new(),
                random: Random::Os,
            },
            workers: 1,
            clock: Clock::System,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: None,
            upstream_timeout: Duration::from_secs(15),
            resume_timeout: Duration::from_secs(10),
            limits: edge::Limits::default(),
            log_level: Level::Info,
            echo_logs: false,
            log_capacity: 100_000,
        }
    }

    /// The plugin configuration (`proxy_on_configure`, `PluginConfiguration` buffer).
    pub fn plugin_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.plugin.configuration = bytes.into();
        self
    }

    /// The VM configuration (`proxy_on_vm_start`, `VmConfiguration` buffer).
    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.plugin.vm_configuration = bytes.into();
        self
    }

    /// An environment variable inside the VM (Envoy's `vm_config.environment_variables`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.plugin.env.push((key.into(), value.into()));
        self
    }

    /// The `plugin_name` property.
    pub fn plugin_name(mut self, name: impl Into<String>) -> Self {
        self.plugin.name = name.into();
        self
    }

    /// The `plugin_root_id` property.
    pub fn root_id(mut self, id: impl Into<String>) -> Self {
        self.plugin.root_id = id.into();
        self
    }

    /// The `plugin_vm_id` property (also the namespace of shared queues).
    pub fn vm_id(mut self, id: impl Into<String>) -> Self {
        self.plugin.vm_id = id.into();
        self
    }

    /// Number of worker threads, each with its own VM (at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The clock filters see.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The random source filters see.
    pub fn random(mut self, random: Random) -> Self {
        self.plugin.random = random;
        self
    }

    /// The address to listen on (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The upstream, `HOST:PORT` (a hostname or an address).
    pub fn upstream(mut self, authority: impl std::fmt::Display) -> Self {
        self.upstream = Some(authority.to_string());
        self
    }

    /// How long to wait for the upstream's response headers once the request is sent (default
    /// 15 s); then `504`.
    pub fn upstream_timeout(mut self, timeout: Duration) -> Self {
        self.upstream_timeout = timeout;
        self
    }

    /// A request head must be complete this long after its first byte, else `408` and the
    /// connection is closed (Envoy's `request_headers_timeout`; default 10 s).
    pub fn request_headers_timeout(mut self, timeout: Duration) -> Self {
        self.limits.request_headers_timeout = timeout;
        self
    }

    /// A client connection with no request in flight is closed after this long (Envoy's
    /// `idle_timeout`; default 60 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.limits.idle_timeout = timeout;
        self
    }

    /// Client connections open at once (Envoy's `global_downstream_max_connections`; default
    /// 10,000); past it a new connection is closed at once.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n;
        self
    }

    /// How long a request or response paused by the filter may wait for it to resume (default
    /// 10 s); then `500`.
    pub fn resume_timeout(mut self, timeout: Duration) -> Self {
        self.resume_timeout = timeout;
        self
    }

    /// The host log level (`proxy_get_log_level`; lower records are dropped). Default info.
    pub fn log_level(mut self, level: Level) -> Self {
        self.log_level = level;
        self
    }

    /// Also print every log record to stderr, one line each.
    pub fn echo_logs(mut self, echo: bool) -> Self {
        self.echo_logs = echo;
        self
    }

    /// How many log records to keep in memory (0: none). Default 100 000.
    pub fn log_capacity(mut self, n: usize) -> Self {
        self.log_capacity = n;
        self
    }

    fn prepare(&self) -> Result<(Arc<Compiled>, Arc<Shared>), Error> {
        let bytes = match &self.wasm.0 {
            Wasm::Bytes(b) => b.clone(),
            Wasm::Path(p) => std::fs::read(p).map_err(|source| Error::Read {
                path: p.clone(),
                source,
            })?,
        };
        let logs = LogSink::new(self.log_level, self.log_capacity, self.echo_logs);
        let shared = Arc::new(Shared::new(
            self.plugin.clone(),
            logs,
            HostClock::new(self.clock.clone()),
        ));
        let compiled = Arc::new(Compiled::new(&bytes, &shared)?);
        Ok((compiled, shared))
    }

    /// Loads the plugin into one VM (on its own thread), started and configured, for driving
    /// callbacks directly.
    ///
    /// # Errors
    /// Unreadable or invalid wasm, an unknown import, a trap during start, or the filter
    /// refusing to start or configure ([`Error::VmStartFailed`], [`Error::ConfigureFailed`], whose message carries the
    /// filter's own warning and error lines).
    pub fn instantiate(self) -> Result<Plugin, Error> {
        let (compiled, shared) = self.prepare()?;
        let worker = WorkerHandle::spawn(0, compiled, shared.clone())?;
        Ok(Plugin { worker, shared })
    }

    /// Starts the proxy: compiles the module, starts every worker's VM, binds the listener.
    ///
    /// # Errors
    /// As [`HostBuilder::instantiate`], plus [`Error::Invalid`] for a missing or malformed
    /// upstream and [`Error::Bind`].
    pub async fn start(self) -> Result<Host, Error> {
        let upstream = self.upstream.clone().ok_or_else(|| Error::Invalid {
            what: "upstream",
            value: String::new(),
            reason: "an upstream HOST:PORT is required".to_owned(),
        })?;
        let authority: ::http::uri::Authority =
            upstream
                .parse()
                .map_err(|e: ::http::uri::InvalidUri| Error::Invalid {
                    what: "upstream",
                    value: upstream.clone(),
                    reason: e.to_string(),
                })?;
        if authority.port_u16().is_none() {
            return Err(Error::Invalid {
                what: "upstream",
                value: upstream,
                reason: "expected HOST:PORT".to_owned(),
            });
        }
        let builder = self.clone();
        let (shared, workers) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let (compiled, shared) = builder.prepare()?;
            let workers = (0..builder.workers)
                .map(|i| WorkerHandle::spawn(i, compiled.clone(), shared.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((shared, workers))
        })
        .await
        .map_err(|e| Error::Thread(e.to_string()))??;
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: self.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.listen,
            source,
        })?;
        let config = proxy::ProxyConfig {
            upstream: authority.to_string(),
            upstream_timeout: self.upstream_timeout,
            resume_timeout: self.resume_timeout,
            limits: self.limits,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let proxy = proxy::Proxy::new(config, workers, shared.clone());
        tokio::spawn(proxy::serve(listener, proxy, stopped));
        Ok(Host {
            local_addr,
            shared,
            _stop: stop,
        })
    }
}

fn metric(shared: &Shared, name: &str) -> Option<u64> {
    match shared.metrics.by_name(name)? {
        MetricValue::Counter(v) | MetricValue::Gauge(v) => Some(v),
        MetricValue::Histogram(samples) => Some(samples.len() as u64),
    }
}

fn histogram(shared: &Shared, name: &str) -> Option<Vec<u64>> {
    match shared.metrics.by_name(name)? {
        MetricValue::Histogram(samples) => Some(samples),
        _ => None,
    }
}

/// A running proxy; dropping it stops accepting and closes its connections.
#[derive(Debug)]
pub struct Host {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Host {
    /// The address the proxy listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR{path}`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.local_addr)
    }

    /// Log records so far (filter, WASI stdout/stderr, host), oldest first.
    #[must_use]
    pub fn logs(&self) -> Vec<LogRecord> {
        self.shared.logs.records()
    }

    /// A counter's or gauge's value (a histogram's sample count), by name.
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<u64> {
        metric(&self.shared, name)
    }

    /// A histogram's samples, by name.
    #[must_use]
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        histogram(&self.shared, name)
    }

    /// A shared-data value, by key.
    #[must_use]
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.data.get(key.as_bytes()).map(|(v, _)| v)
    }
}

/// An HTTP context created with [`Plugin::create_http_context`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpContextId(Ctx);

impl HttpContextId {
    /// The context id the filter sees.
    #[must_use]
    pub fn id(self) -> u32 {
        self.0.id
    }
}

/// What a callback decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Continue or Pause (as returned, or Continue if the filter resumed the stream itself).
    pub action: Action,
    /// The local reply the filter sent during the callback, if any.
    pub local_reply: Option<LocalReply>,
    /// Whether the filter closed (reset) the stream.
    pub reset: bool,
    /// The header (or trailer) map after the callback; empty for body callbacks.
    pub headers: HeaderList,
    /// For body callbacks: the bytes the host would forward now (`None` while buffering).
    pub body: Option<Vec<u8>>,
}

impl From<Outcome> for Verdict {
    fn from(o: Outcome) -> Self {
        Self {
            action: o.action,
            local_reply: o.local_reply,
            reset: o.reset,
            headers: o.headers,
            body: o.body,
        }
    }
}

/// A plugin loaded into one VM, driven without HTTP. Each method runs on the VM's thread and
/// blocks until the callback returns (so it is usable from sync and async tests alike). A trap
/// returns [`Error::Trap`] and reloads the VM, as the proxy does.
pub struct Plugin {
    worker: WorkerHandle,
    shared: Arc<Shared>,
}

fn pairs(headers: &[(&str, &str)]) -> HeaderList {
    HeaderList::from_pairs(headers.iter().copied())
}

impl Plugin {
    /// Creates an HTTP context (`proxy_on_context_create(id, root)`), as for a new HTTP/1.1
    /// request from `127.0.0.1`.
    ///
    /// # Errors
    /// A trap in `proxy_on_context_create`, or the worker being gone.
    pub fn create_http_context(&self) -> Result<HttpContextId, Error> {
        let info = StreamInfo {
            protocol: "HTTP/1.1".to_owned(),
            request_id: "00000000-0000-4000-8000-000000000000".to_owned(),
            source: Some(SocketAddr::from(([127, 0, 0, 1], 40000))),
            destination: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        };
        self.worker
            .call_blocking(move |w| w.create(info))?
            .map(HttpContextId)
    }

    /// `proxy_on_request_headers` with `headers` (include `:method`, `:path`, `:authority`,
    /// `:scheme` as Envoy does).
    ///
    /// # Errors
    /// A trap (the VM is reloaded and the context lost), or an unknown context.
    pub fn on_request_headers(
        &self,
        ctx: HttpContextId,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Verdict, Error> {
        let h = pairs(headers);
        self.worker
            .call_blocking(move |w| w.headers(ctx.0, Direction::Request, h, end_of_stream))?
            .map(Verdict::from)
    }

    /// `proxy_on_request_body` with `chunk` appended to the buffered body.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_request_body(
        &self,
        ctx: HttpContextId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Verdict, Error> {
        let c = chunk.to_vec();
        self.worker
            .call_blocking(move |w| w.body(ctx.0, Direction::Request, &c, end_of_stream))?
            .map(Verdict::from)
    }

    /// `proxy_on_request_trailers`.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_request_trailers(
        &self,
        ctx: HttpContextId,
        trailers: &[(&str, &str)],
    ) -> Result<Verdict, Error> {
        let t = pairs(trailers);
        self.worker
            .call_blocking(move |w| w.trailers(ctx.0, Direction::Request, t))?
            .map(Verdict::from)
    }

    /// `proxy_on_response_headers` with `headers` (include `:status`).
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_response_headers(
        &self,
        ctx: HttpContextId,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Verdict, Error> {
        let h = pairs(headers);
        self.worker
            .call_blocking(move |w| w.headers(ctx.0, Direction::Response, h, end_of_stream))?
            .map(Verdict::from)
    }

    /// `proxy_on_response_body` with `chunk` appended to the buffered body.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_response_body(
        &self,
        ctx: HttpContextId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Verdict, Error> {
        let c = chunk.to_vec();
        self.worker
            .call_blocking(move |w| w.body(ctx.0, Direction::Response, &c, end_of_stream))?
            .map(Verdict::from)
    }

    /// `proxy_on_log`.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_log(&self, ctx: HttpContextId) -> Result<(), Error> {
        self.worker.call_blocking(move |w| w.log(ctx.0))?
    }

    /// `proxy_on_done` then `proxy_on_delete`; the context is gone afterwards.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_done(&self, ctx: HttpContextId) -> Result<(), Error> {
        self.worker.call_blocking(move |w| w.done(ctx.0))?
    }

    /// The request header map as it is now.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn request_headers(&self, ctx: HttpContextId) -> Result<HeaderList, Error> {
        self.worker
            .call_blocking(move |w| w.map(ctx.0, Direction::Request))?
    }

    /// The response header map as it is now.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn response_headers(&self, ctx: HttpContextId) -> Result<HeaderList, Error> {
        self.worker
            .call_blocking(move |w| w.map(ctx.0, Direction::Response))?
    }

    /// `proxy_on_tick` now.
    ///
    /// # Errors
    /// A trap, or the worker being gone.
    pub fn tick(&self) -> Result<(), Error> {
        self.worker.call_blocking(worker::Worker::tick)?
    }

    /// Log records so far, oldest first.
    #[must_use]
    pub fn logs(&self) -> Vec<LogRecord> {
        self.shared.logs.records()
    }

    /// A counter's or gauge's value (a histogram's sample count), by name.
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<u64> {
        metric(&self.shared, name)
    }

    /// A histogram's samples, by name.
    #[must_use]
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        histogram(&self.shared, name)
    }

    /// A shared-data value, by key.
    #[must_use]
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.data.get(key.as_bytes()).map(|(v, _)| v)
    }
}
