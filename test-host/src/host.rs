//! [`Host`]: the guard of a running proxy, and what tests read back from it (logs, metrics,
//! shared data), which [`crate::Plugin`] offers too.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::abi::{Level, MetricType};
use crate::error::Error;
use crate::state::Shared;
use crate::state::log::LogRecord;
use crate::state::shared::MetricValue;
use crate::worker::WorkerHandle;

pub(crate) fn metric(shared: &Shared, name: &str) -> Option<u64> {
    match shared.metrics.by_name(name)? {
        MetricValue::Counter(v) | MetricValue::Gauge(v) => Some(v),
        MetricValue::Histogram(samples) => Some(samples.len() as u64),
    }
}

pub(crate) fn histogram(shared: &Shared, name: &str) -> Option<Vec<u64>> {
    match shared.metrics.by_name(name)? {
        MetricValue::Histogram(samples) => Some(samples),
        _ => None,
    }
}

/// A running proxy. Dropping it (or [`Host::shutdown`]) stops accepting and shuts down
/// gracefully: idle connections close at once, requests in flight may finish for up to 10 s.
/// Dropping returns at once; [`Host::shutdown`] waits for the drain.
#[derive(Debug)]
pub struct Host {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    workers: Vec<WorkerHandle>,
    /// The main thread's VM (Envoy's main-thread root context): no HTTP contexts.
    main: Option<WorkerHandle>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<()>>,
}

impl Host {
    pub(crate) fn new(
        local_addr: SocketAddr,
        shared: Arc<Shared>,
        workers: Vec<WorkerHandle>,
        stop: oneshot::Sender<()>,
        served: JoinHandle<()>,
    ) -> Self {
        Self {
            local_addr,
            shared,
            workers,
            main: None,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// With the main thread's worker.
    pub(crate) fn with_main(mut self, main: WorkerHandle) -> Self {
        self.main = Some(main);
        self
    }

    /// Stops accepting and waits until the requests in flight have finished (at most 10 s;
    /// then they are cut); then every root context gets `proxy_on_done` and
    /// `proxy_on_delete`, the workers' first, the main thread's last, as Envoy ends them.
    /// (Dropping the host ends them too, in no set order.)
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// [`Host::shutdown`], keeping the host readable afterwards (its logs, metrics and shared
    /// data): for tests of what a filter does when the proxy stops. A second call does nothing.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
        for worker in self.workers.iter().chain(&self.main) {
            let _ = worker.call(crate::worker::Worker::stop).await;
        }
    }

    /// Applies a new plugin configuration without a restart, as Envoy does through extension
    /// config discovery (SPEC section 2.6): a fresh base VM on the main thread starts with it
    /// first, then each VM (the main thread's and every worker's) starts a new root context
    /// with it; new requests use it, requests in flight finish on the old root, which then
    /// gets `proxy_on_done` and `proxy_on_delete` (at once when it has none). A configuration the
    /// filter refuses is logged and changes nothing (VMs later re-created after a trap keep
    /// starting with the last accepted one). Counted as Envoy counts it:
    /// `extension_config_discovery.http_filter.PLUGIN.update_success` / `update_rejected`.
    ///
    /// # Errors
    /// [`Error::ConfigureFailed`] (with the filter's complaint) when the filter refuses it;
    /// a trap or a stopped worker.
    pub async fn reconfigure(&self, configuration: impl Into<Vec<u8>>) -> Result<(), Error> {
        let configuration = Arc::new(configuration.into());
        let counter = |outcome: &str| {
            self.shared.metrics.define(
                MetricType::Counter,
                &format!(
                    "extension_config_discovery.http_filter.{}.{outcome}",
                    self.shared.plugin.name
                ),
            )
        };
        // The same filter with the same configuration answers alike on every VM: a refusal
        // comes from the first, the main thread's base VM, before any other changes.
        for (i, worker) in self.main.iter().chain(&self.workers).enumerate() {
            let c = configuration.clone();
            let main = i == 0 && self.main.is_some();
            let applied = worker
                .call(move |w| {
                    if main {
                        w.reconfigure_main(c)
                    } else {
                        w.reconfigure(c)
                    }
                })
                .await
                .and_then(|r| r);
            if let Err(e) = applied {
                self.shared.metrics.increment(counter("update_rejected"), 1);
                self.shared.log(
                    Level::Error,
                    format!("new configuration refused, the running one keeps serving: {e}"),
                );
                return Err(e);
            }
        }
        self.shared.set_configuration(configuration);
        self.shared.metrics.increment(counter("update_success"), 1);
        self.shared.log(Level::Info, "new configuration applied");
        Ok(())
    }

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

    /// Jobs the proxy has sent to its VMs' worker threads so far (each a hop from tokio to a
    /// VM's thread: a callback, a lookup, the end of a request, a stop). A POST through a
    /// filter that exports no body callback costs 3 (README "The request path").
    #[must_use]
    pub fn worker_round_trips(&self) -> u64 {
        self.shared
            .round_trips
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A shared-data value, by key.
    #[must_use]
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.data.get(key.as_bytes()).map(|(v, _)| v)
    }
}
