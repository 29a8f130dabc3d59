//! The HTTP side: a hyper 1 server (HTTP/1.1, accepts HTTP/1.0, HTTP/2 with prior knowledge)
//! whose one `handle()` routes each request to an [`exchange::Exchange`], the value that owns
//! its lifecycle: it creates the HTTP context, runs the filter's request callbacks, forwards to
//! the upstream through hyper-util's pooled client, runs the response callbacks and answers the
//! client. A body a callback can see streams chunk by chunk through the body callbacks in a
//! body that owns its pump ([`pump::Filtered`]), driven by whoever reads it (hyper's client or
//! server: no task, no channel, constant memory); a body no callback can see (its direction's
//! body callback is not exported and the filter did not pause) is passed on as hyper's frames,
//! never visiting the worker ([`body::Passed`]): a POST through a headers-only filter costs 3
//! worker round trips. Hop-by-hop headers (RFC 7230 section 6.1) are removed in both
//! directions; on responses the filter still sees `connection`, as in Envoy.
//!
//! Errors: upstream refused or its connect timed out, after the connector's retries, `503`
//! ("retried and the latest reset reason: remote connection failure" / "connection timeout"),
//! or accepted then closed/reset before
//! any byte of response `503` ("connection termination"), no response headers within the
//! timeout `504`, a broken or non-HTTP response `502`, a malformed request body `400` (these go
//! through the filter's response callbacks like Envoy's local replies); request heads over
//! 60 KiB `431` (before any callback); a filter trap `503` without further callbacks (its VM is
//! being reloaded). Other requests in flight on that VM fail closed at their next callback, as
//! in Envoy: `503` if their response has not started, else a reset.
//!
//! Modules: [`server`] (accept loop, connection cap, graceful shutdown), [`exchange`] (one
//! request's lifecycle), [`pump`] (body pumps and the body that drives one), [`upstream`] (the
//! client), [`hop`] (the connection manager's header rules), [`body`] (response and body
//! helpers).

mod body;
mod exchange;
mod hop;
mod pump;
mod reply;
pub(crate) mod server;
mod upstream;

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::abi::{Level, MetricType};
use crate::edge::Limits;
use crate::state::{Random, Shared};
use crate::worker::WorkerHandle;

/// Proxy settings.
#[derive(Debug, Clone)]
pub(crate) struct ProxyConfig {
    pub(crate) upstream: String,
    pub(crate) upstream_timeout: Duration,
    pub(crate) resume_timeout: Duration,
    pub(crate) limits: Limits,
}

/// Shared by every connection task.
pub(crate) struct Proxy {
    config: ProxyConfig,
    workers: Vec<WorkerHandle>,
    next_worker: AtomicUsize,
    client: upstream::Upstream,
    shared: Arc<Shared>,
    ids: Mutex<StdRng>,
    /// Client connections open now.
    connections: Arc<AtomicUsize>,
    /// Envoy's `http1.` / `http2.dropped_headers_with_underscores` counters.
    dropped_underscores: [u32; 2],
}

impl Proxy {
    pub(crate) fn new(
        config: ProxyConfig,
        workers: Vec<WorkerHandle>,
        shared: Arc<Shared>,
    ) -> Arc<Self> {
        let client = upstream::Upstream::new(&config.upstream, &shared);
        let ids = match shared.plugin.random {
            Random::Seeded(seed) => StdRng::seed_from_u64(seed ^ 0x05ee_d1d5),
            Random::Os => StdRng::from_rng(&mut rand::rng()),
        };
        let dropped_underscores = ["http1", "http2"].map(|codec| {
            shared.metrics.define(
                MetricType::Counter,
                &format!("{codec}.dropped_headers_with_underscores"),
            )
        });
        Arc::new(Self {
            config,
            workers,
            next_worker: AtomicUsize::new(0),
            client,
            shared,
            ids: Mutex::new(ids),
            connections: Arc::new(AtomicUsize::new(0)),
            dropped_underscores,
        })
    }

    /// A random (version 4) UUID for `x-request-id` / the `request.id` property.
    fn request_id(&self) -> String {
        let mut b = [0u8; 16];
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fill_bytes(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn log(&self, level: Level, message: impl Into<String>) {
        self.shared.log(level, message);
    }
}
