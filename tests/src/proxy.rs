//! The same filter behind either proxy: the real Envoy binary or the test
//! host. The differential tests run each scenario once per [`Proxy`] and
//! compare what the filter did.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use test_host::{Host, HostBuilder, LogSource};

use crate::{Envoy, EnvoyBuilder, SECRET, default_config, wait_until, wasm};

/// The test host on a runtime of its own, so tests can use blocking clients.
pub struct HostProxy {
    host: Option<Host>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl HostProxy {
    /// Starts the test host in front of `upstream`.
    ///
    /// # Errors
    /// What [`HostBuilder::start`] refuses (e.g. the filter rejecting its
    /// configuration).
    pub fn start(builder: HostBuilder) -> Result<HostProxy, test_host::Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let host = runtime.block_on(builder.start())?;
        Ok(HostProxy {
            host: Some(host),
            runtime: Some(runtime),
        })
    }

    /// The running host.
    pub fn host(&self) -> &Host {
        self.host.as_ref().unwrap()
    }
}

impl Drop for HostProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let _guard = rt.enter();
            drop(self.host.take());
            rt.shutdown_background();
        }
    }
}

/// One proxy with the filter in it.
pub enum Proxy {
    /// The real Envoy binary.
    Envoy(Envoy),
    /// The wasmtime test host.
    Host(HostProxy),
}

/// How to start both proxies the same way.
#[derive(Clone)]
pub struct Setup {
    /// The upstream.
    pub upstream: SocketAddr,
    /// Plugin configuration (JSON).
    pub config: String,
    /// Worker threads (Envoy `--concurrency`, test-host workers).
    pub workers: usize,
    /// The module (default: the product filter).
    pub wasm: PathBuf,
    /// The gateway limits (SPEC section 7), the same on both.
    pub limits: Limits,
    /// How long the upstream may take to answer (then 504).
    pub upstream_timeout: Duration,
    /// Environment variables: of Envoy's process (it passes `JWT_SECRET` into
    /// the VM, `host_env_keys`), of the test host's VM.
    pub env: Vec<(String, String)>,
    /// Named clusters for callouts and gRPC, `(name, spec)` with spec
    /// `HOST:PORT` (HTTP/1.1) or `h2c://HOST:PORT`: `envoy/render.sh`'s
    /// `CLUSTERS`, the test host's `HostBuilder::cluster`. The upstream is
    /// the cluster `upstream` on both.
    pub clusters: Vec<(String, String)>,
    /// Envoy takes the filter from a watched file (extension config discovery), so
    /// [`Proxy::reconfigure`] works on both.
    pub discovery: bool,
}

/// What each proxy said when it refused to start ([`Setup::refused`]).
pub struct Refusal {
    /// Envoy's exit status.
    pub envoy_status: ExitStatus,
    /// Envoy's log.
    pub envoy_log: String,
    /// The test host's error.
    pub host: test_host::Error,
}

/// The client-facing limits of SPEC section 7: `envoy/render.sh`'s
/// `REQUEST_HEADERS_TIMEOUT`, `IDLE_TIMEOUT` and `MAX_CONNECTIONS`, and the
/// test host's settings of the same names.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A request head must be complete this long after its first byte.
    pub request_headers_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Client connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    /// The defaults of `envoy/envoy.yaml` and the test host.
    fn default() -> Self {
        Limits {
            request_headers_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

impl Setup {
    /// The product filter with the default configuration and one worker.
    pub fn new(upstream: SocketAddr) -> Setup {
        Setup {
            upstream,
            config: default_config(),
            workers: 1,
            wasm: wasm("jwt_filter"),
            limits: Limits::default(),
            upstream_timeout: Duration::from_secs(15),
            env: Vec::new(),
            clusters: Vec::new(),
            discovery: false,
        }
    }

    /// Envoy, then the test host, both set up alike.
    pub fn both(&self) -> [Proxy; 2] {
        [self.envoy(), self.host()]
    }

    /// Envoy set up like this.
    pub fn envoy(&self) -> Proxy {
        Proxy::Envoy(self.envoy_builder().start())
    }

    /// The test host set up like this.
    pub fn host(&self) -> Proxy {
        Proxy::Host(HostProxy::start(self.host_builder()).unwrap())
    }

    /// Both proxies with a configuration they must refuse: Envoy exits, the
    /// test host fails to instantiate the filter.
    pub fn refused(&self) -> Refusal {
        let (envoy_status, envoy_log) = self.envoy_builder().start_expecting_failure();
        let host = self
            .host_builder()
            .instantiate()
            .err()
            .unwrap_or_else(|| panic!("the test host started with {}", self.config));
        Refusal {
            envoy_status,
            envoy_log,
            host,
        }
    }

    fn envoy_builder(&self) -> EnvoyBuilder {
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        let l = self.limits;
        let mut builder = EnvoyBuilder::new(self.upstream)
            .wasm(self.wasm.clone())
            .config(self.config.clone())
            .concurrency(self.workers)
            .upstream_timeout(&secs(self.upstream_timeout))
            .render_env("REQUEST_HEADERS_TIMEOUT", &secs(l.request_headers_timeout))
            .render_env("IDLE_TIMEOUT", &secs(l.idle_timeout))
            .render_env("MAX_CONNECTIONS", &l.max_connections.to_string());
        if self.discovery {
            builder = builder.discovery();
        }
        for (k, v) in &self.env {
            builder = builder.env(k, v);
        }
        if !self.clusters.is_empty() {
            let clusters: Vec<String> = self
                .clusters
                .iter()
                .map(|(name, spec)| format!("{name}={spec}"))
                .collect();
            builder = builder.render_env("CLUSTERS", &clusters.join(" "));
        }
        builder
    }

    fn host_builder(&self) -> HostBuilder {
        let mut builder = HostBuilder::new(self.wasm.clone())
            .plugin_config(self.config.clone().into_bytes())
            .upstream(self.upstream)
            .workers(self.workers)
            .upstream_timeout(self.upstream_timeout)
            .request_headers_timeout(self.limits.request_headers_timeout)
            .idle_timeout(self.limits.idle_timeout)
            .max_connections(self.limits.max_connections)
            // envoy/jwt-filter.yaml's name, root_id and vm_id.
            .plugin_name("jwt_proxy")
            .root_id("jwt_proxy")
            .vm_id("jwt_proxy")
            .echo_logs(false);
        for (k, v) in &self.env {
            builder = builder.env(k, v);
        }
        for (name, spec) in &self.clusters {
            builder = builder.cluster(name, spec);
        }
        builder
    }
}

impl Proxy {
    /// `"envoy"` or `"test-host"`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Proxy::Envoy(_) => "envoy",
            Proxy::Host(_) => "test-host",
        }
    }

    /// A new plugin configuration without a restart: Envoy's extension config discovery
    /// (needs [`Setup::discovery`]), the test host's [`Host::reconfigure`]. `true` when the
    /// filter took it.
    pub fn reconfigure(&self, config: &str) -> bool {
        match self {
            Proxy::Envoy(e) => e.reconfigure(config),
            Proxy::Host(h) => {
                let rt = h.runtime.as_ref().unwrap();
                rt.block_on(h.host().reconfigure(config.as_bytes().to_vec()))
                    .is_ok()
            }
        }
    }

    /// Stops the proxy gracefully (Envoy's `/quitquitquit`, [`Host::stop`]); its log stays
    /// readable.
    pub fn quit(&mut self) {
        match self {
            Proxy::Envoy(e) => e.quit(),
            Proxy::Host(h) => {
                let rt = h.runtime.as_ref().unwrap();
                rt.block_on(h.host.as_mut().unwrap().stop());
            }
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Proxy::Envoy(e) => e.addr(),
            Proxy::Host(h) => h.host().local_addr(),
        }
    }

    /// A host counter by its Envoy name (e.g.
    /// `http1.dropped_headers_with_underscores`; the filter's metrics as
    /// `wasmcustom.NAME`); 0 when it was never counted.
    pub fn stat(&self, name: &str) -> u64 {
        match self {
            Proxy::Envoy(e) => e.stat(name).unwrap_or(0),
            Proxy::Host(h) => h
                .host()
                .metric(name.strip_prefix("wasmcustom.").unwrap_or(name))
                .unwrap_or(0),
        }
    }

    /// The filter's own log lines, in order.
    pub fn filter_log(&self) -> Vec<String> {
        match self {
            Proxy::Envoy(e) => e
                .filter_log()
                .into_iter()
                // Envoy prefixes the plugin name, root id and (per request) vm id.
                .map(|l| {
                    l.rsplit_once("jwt_proxy: ")
                        .map_or(l.clone(), |(_, m)| m.to_owned())
                })
                .collect(),
            Proxy::Host(h) => h
                .host()
                .logs()
                .into_iter()
                .filter(|r| r.source == LogSource::Filter)
                .map(|r| r.message)
                .collect(),
        }
    }

    /// Waits (at most 10 s) until `n` filter log lines contain `needle`.
    pub fn wait_for_lines(&self, needle: &str, n: usize) -> Vec<String> {
        let what = LogDump(self, format!("{n} log lines with {needle:?}"));
        wait_until(Duration::from_secs(10), what, || {
            let lines: Vec<String> = self
                .filter_log()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            (lines.len() >= n).then_some(lines)
        })
    }

    /// Everything either proxy wrote, for secret scanning.
    pub fn all_output(&self) -> String {
        match self {
            Proxy::Envoy(e) => e.log(),
            Proxy::Host(h) => h
                .host()
                .logs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// A wait's description that shows the filter log as it is when the wait
/// fails.
struct LogDump<'a>(&'a Proxy, String);

impl std::fmt::Display for LogDump<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}; log: {:?}",
            self.0.name(),
            self.1,
            self.0.filter_log()
        )
    }
}

/// Whether `text` carries the test key in any form.
pub fn leaks_key(text: &str) -> bool {
    text.contains(SECRET) || text.contains(&SECRET[..32])
}
