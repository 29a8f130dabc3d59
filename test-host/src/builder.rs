//! [`HostBuilder`]: the plugin, its environment and the proxy's settings; it starts a
//! [`Host`] or instantiates a [`Plugin`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::abi::Level;
use crate::edge::Limits;
use crate::error::Error;
use crate::host::Host;
use crate::plugin::Plugin;
use crate::proxy;
use crate::state::clock::{Clock, HostClock};
use crate::state::clusters::Clusters;
use crate::state::log::LogSink;
use crate::state::{PluginInfo, Random, Shared};
use crate::vm::Compiled;
use crate::worker::WorkerHandle;

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
    clusters: Vec<(String, String)>,
    upstream_timeout: Duration,
    resume_timeout: Duration,
    limits: Limits,
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
                ..PluginInfo::default()
            },
            workers: 1,
            clock: Clock::System,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: None,
            clusters: Vec::new(),
            upstream_timeout: Duration::from_secs(15),
            resume_timeout: Duration::from_secs(10),
            limits: Limits::default(),
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

    /// A named cluster for HTTP callouts and gRPC calls (Envoy's `static_resources.clusters`;
    /// repeatable): `spec` is `HOST:PORT` (HTTP/1.1) or `h2c://HOST:PORT` (HTTP/2 with prior
    /// knowledge, what gRPC needs). The upstream is also the cluster `upstream`, as
    /// `envoy/envoy.yaml` names it. Checked by [`HostBuilder::start`]: a bad name or spec is
    /// [`Error::Invalid`] with `what: "cluster"`. Only the proxy has clusters:
    /// [`HostBuilder::instantiate`] refuses them.
    pub fn cluster(mut self, name: impl Into<String>, spec: impl Into<String>) -> Self {
        self.clusters.push((name.into(), spec.into()));
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

    fn prepare(&self, clusters: Clusters) -> Result<(Arc<Compiled>, Arc<Shared>), Error> {
        let bytes = match &self.wasm.0 {
            Wasm::Bytes(b) => b.clone(),
            Wasm::Path(p) => std::fs::read(p).map_err(|source| Error::Read {
                path: p.clone(),
                source,
            })?,
        };
        let shared = self.shared(clusters);
        let compiled = Arc::new(Compiled::new(&bytes, &shared)?);
        Ok((compiled, shared))
    }

    fn shared(&self, clusters: Clusters) -> Arc<Shared> {
        let logs = LogSink::new(self.log_level, self.log_capacity, self.echo_logs);
        Arc::new(Shared::new(
            self.plugin.clone(),
            logs,
            HostClock::new(self.clock.clone()),
            clusters,
        ))
    }

    /// Every function the host links into a module (the ABI's, Emscripten's two, WASI
    /// preview 1's), with its signature, read from the linker: what a module may import.
    /// The wasm is not read.
    ///
    /// # Errors
    /// [`Error::Link`] if the linker cannot be built (a host bug).
    pub fn host_functions(&self) -> Result<Vec<crate::vm::HostFunction>, Error> {
        crate::vm::host_functions(&self.shared(Clusters::default()))
    }

    /// Loads the plugin into one VM (on its own thread), started and configured, for driving
    /// callbacks directly.
    ///
    /// # Errors
    /// Unreadable or invalid wasm, an unknown import, a trap during start, or the filter
    /// refusing to start or configure ([`Error::VmStartFailed`], [`Error::ConfigureFailed`], whose message carries the
    /// filter's own warning and error lines).
    /// [`Error::Invalid`] when clusters were given: the direct API has no network, so a
    /// callout there answers as Envoy answers for an unknown cluster (`BadArgument`) and the
    /// host logs a warning.
    pub fn instantiate(self) -> Result<Plugin, Error> {
        if let Some((name, spec)) = self.clusters.first() {
            return Err(Error::Invalid {
                what: "cluster",
                value: format!("{name}={spec}"),
                reason: "the direct Plugin API has no network; clusters need HostBuilder::start"
                    .to_owned(),
            });
        }
        let (compiled, shared) = self.prepare(Clusters::default())?;
        let worker = WorkerHandle::spawn(0, compiled, shared.clone())?;
        Ok(Plugin { worker, shared })
    }

    /// Starts the proxy: compiles the module, starts every worker's VM, binds the listener.
    ///
    /// # Errors
    /// As [`HostBuilder::instantiate`], plus [`Error::Invalid`] for a missing or malformed
    /// upstream or cluster and [`Error::Bind`].
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
        let clusters = Clusters::new(
            &self.clusters,
            Some(authority.as_str()),
            Some(tokio::runtime::Handle::current()),
        )?;
        let builder = self.clone();
        // Envoy's order: the main thread's VMs, then one per worker.
        let (shared, main, workers) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let (compiled, shared) = builder.prepare(clusters)?;
            let main = WorkerHandle::spawn_main(builder.workers, compiled.clone(), shared.clone())?;
            let workers = (0..builder.workers)
                .map(|i| WorkerHandle::spawn(i, compiled.clone(), shared.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((shared, main, workers))
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
        let proxy = proxy::Proxy::new(config, workers.clone(), shared.clone());
        let served = tokio::spawn(proxy::server::serve(listener, proxy, stopped));
        Ok(Host::new(local_addr, shared, workers, stop, served).with_main(main))
    }
}
