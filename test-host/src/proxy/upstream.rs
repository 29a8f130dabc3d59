//! The upstream client: hyper-util's pooled `Client` (HTTP/1.1 keep-alive) over a connector
//! whose connections record whether response bytes arrived since the request was written, so
//! a reset before any byte (Envoy: 503) is told from a broken response (502).
//!
//! Pool: an idle connection is closed after [`POOL_IDLE_TIMEOUT`] (90 s, Go's `net/http`
//! default); at most [`POOL_MAX_IDLE`] (256) idle connections are kept (busy ones are not
//! capped, as Envoy's default circuit breakers allow far more). A request that a reused
//! connection drops before writing it is retried on another (hyper-util's
//! `retry_canceled_requests`).
//!
//! Connect: like Envoy's `upstream` cluster and route (`envoy/envoy.yaml`), each attempt gets
//! [`CONNECT_TIMEOUT`] (1 s), and a connect that is refused, reset or times out (nothing was
//! sent: the request provably never reached the upstream) is tried again up to
//! [`CONNECT_RETRIES`] (3) more times after Envoy's fully jittered backoff (a random wait below
//! `(2^n - 1) x 0.25 s`, at most 2.5 s, before retry `n`). The retries happen inside the connector,
//! so the request, body included, is still whole when a connection exists: hyper only reads the
//! body to write it. Counted in Envoy's cluster stats, `cluster.upstream.upstream_cx_total`
//! (attempts), `upstream_cx_connect_fail`, `upstream_cx_connect_timeout` and `upstream_rq_retry`.

use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Extensions, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::RngExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::abi::MetricType;
use crate::proxy::body::ProxyBody;
use crate::proxy::pump::{Abort, Aborted};
use crate::state::Shared;

/// How long an idle upstream connection stays pooled.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How many idle upstream connections stay pooled.
pub(crate) const POOL_MAX_IDLE: usize = 256;
/// How long one connect attempt may take (Envoy's `connect_timeout` in `envoy.yaml`).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How many more times a failed connect is tried (the route's `num_retries`).
pub(crate) const CONNECT_RETRIES: u32 = 3;
/// The backoff's base and cap (the route's `retry_back_off`).
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_millis(2500);

/// Why an upstream exchange failed.
pub(crate) enum UpstreamError {
    /// No connection (refused, unreachable), after the retries; `timeout`: the last attempt
    /// timed out.
    Connect { timeout: bool, error: String },
    /// The exchange broke; `heard`: whether any response byte had arrived.
    Failed { heard: bool, error: String },
    /// The request body stopped the exchange (a local reply, a reset, a filter failure, a
    /// broken client body): its [`Aborted`] error, found among the client error's sources.
    Aborted(Abort),
}

/// The pooled HTTP/1.1 client of one upstream.
pub(crate) struct Upstream {
    authority: String,
    client: Client<Connector, ProxyBody>,
}

impl Upstream {
    /// A client for `authority` (`HOST:PORT`).
    pub(crate) fn new(authority: &str, shared: &Arc<Shared>) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            // The filter's `:authority` becomes `Host`; none is added when it removed it.
            .set_host(false)
            .build(Connector {
                stats: Arc::new(ConnectStats::new(shared)),
            });
        Self {
            authority: authority.to_owned(),
            client,
        }
    }

    /// The upstream's URI for `path_and_query` (sent in origin form).
    pub(crate) fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path_and_query)
            .build()
    }

    /// Sends `req` (its URI from [`Upstream::uri`]) and waits for the response head.
    pub(crate) async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let error = match self.client.request(req).await {
            Ok(response) => return Ok(response),
            Err(e) => e,
        };
        if let Some(abort) = Aborted::find(&error) {
            return Err(UpstreamError::Aborted(abort));
        }
        let text = chain(&error);
        if error.is_connect() {
            let timeout = io_kind(&error) == Some(ErrorKind::TimedOut);
            return Err(UpstreamError::Connect {
                timeout,
                error: text,
            });
        }
        let heard = error.connect_info().is_some_and(|c| {
            let mut extensions = Extensions::new();
            c.get_extras(&mut extensions);
            extensions
                .get::<Heard>()
                .is_some_and(|h| h.0.load(Ordering::Relaxed))
        });
        Err(UpstreamError::Failed { heard, error: text })
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The kind of the first I/O error in `e`'s sources.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// Envoy's cluster counters for the upstream's connects, host-wide metrics.
struct ConnectStats {
    shared: Arc<Shared>,
    total: u32,
    fail: u32,
    timeout: u32,
    retry: u32,
}

impl ConnectStats {
    fn new(shared: &Arc<Shared>) -> Self {
        let define = |name: &str| {
            shared
                .metrics
                .define(MetricType::Counter, &format!("cluster.upstream.{name}"))
        };
        Self {
            shared: shared.clone(),
            total: define("upstream_cx_total"),
            fail: define("upstream_cx_connect_fail"),
            timeout: define("upstream_cx_connect_timeout"),
            retry: define("upstream_rq_retry"),
        }
    }

    fn count(&self, id: u32) {
        let _ = self.shared.metrics.increment(id, 1);
    }
}

/// Whether a failed connect provably sent nothing and may be tried again.
fn retriable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::TimedOut
    )
}

/// Envoy's fully jittered exponential backoff before retry `n` (from 1): a random wait below
/// `(2^n - 1) x` [`BACKOFF_BASE`], at most [`BACKOFF_MAX`].
fn backoff(n: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul((1u32 << n.min(16)) - 1)
        .min(BACKOFF_MAX);
    let millis = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rand::rng().random_range(0..millis))
}

/// Connects to `authority`: each attempt within [`CONNECT_TIMEOUT`], a refused, reset or
/// timed-out one tried again up to [`CONNECT_RETRIES`] more times (see the module docs).
async fn connect(authority: &str, stats: &ConnectStats) -> std::io::Result<TcpStream> {
    let mut retries = 0;
    loop {
        stats.count(stats.total);
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await
        {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => e,
            Err(_) => {
                stats.count(stats.timeout);
                std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!("connect timed out after {CONNECT_TIMEOUT:?}"),
                )
            }
        };
        stats.count(stats.fail);
        if retries == CONNECT_RETRIES || !retriable(error.kind()) {
            return Err(error);
        }
        retries += 1;
        stats.count(stats.retry);
        tokio::time::sleep(backoff(retries)).await;
    }
}

/// Whether response bytes arrived since the request was last written (a connection's extra).
#[derive(Clone, Default)]
struct Heard(Arc<AtomicBool>);

/// Connects to the URI's authority over TCP (hostnames resolved by tokio), with Envoy's
/// connect timeout and retries ([`connect`]).
#[derive(Clone)]
pub(crate) struct Connector {
    stats: Arc<ConnectStats>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Tracked>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let stats = self.stats.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| std::io::Error::other("the upstream URI has no authority"))?;
            let stream = connect(&authority, &stats).await?;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(Tracked {
                inner: stream,
                heard: Heard::default(),
            }))
        })
    }
}

/// A TCP stream that notes whether response bytes arrived since the request was last written.
pub(crate) struct Tracked {
    inner: TcpStream,
    heard: Heard,
}

impl Connection for Tracked {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.heard.clone())
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.0.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.heard.0.store(false, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.heard.0.store(false, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::abi::Level;
    use crate::proxy::body::BoxError;
    use crate::state::PluginInfo;
    use crate::state::clock::{Clock, HostClock};
    use crate::state::clusters::Clusters;
    use crate::state::log::LogSink;
    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use http_body_util::channel::Channel;
    use tokio::io::AsyncReadExt as _;

    /// A request body that stops its exchange fails hyper-util's client, and the exchange's
    /// [`Abort`] comes back out of the client's error (legacy `Error` -> `hyper::Error` (user
    /// body) -> [`Aborted`]); any other body error is a broken exchange.
    #[tokio::test]
    async fn a_body_that_stops_the_exchange_is_found_in_the_client_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // An upstream that reads every request and never answers.
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        let plugin = PluginInfo::default();
        let logs = LogSink::new(Level::Info, 16, false);
        let clock = HostClock::new(Clock::System);
        let shared = Arc::new(Shared::new(plugin, logs, clock, Clusters::default()));
        let upstream = Upstream::new(&addr.to_string(), &shared);
        let errors: [(BoxError, bool); 2] = [
            (crate::proxy::pump::Aborted::error(Abort::Reset), true),
            ("a plain body error".into(), false),
        ];
        for (error, aborted) in errors {
            let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
            tx.send_data(Bytes::from_static(b"part")).await.unwrap();
            tx.abort(error);
            let request = Request::post(upstream.uri("/").unwrap())
                .header(http::header::CONTENT_LENGTH, "10")
                .body(body.boxed())
                .unwrap();
            let sent = tokio::time::timeout(Duration::from_secs(10), upstream.send(request));
            match sent.await.unwrap() {
                Err(UpstreamError::Aborted(Abort::Reset)) => assert!(aborted),
                Err(UpstreamError::Failed { heard, .. }) => assert!(!aborted && !heard),
                Err(_) => panic!("an unexpected error (aborted: {aborted})"),
                Ok(_) => panic!("a response from an upstream that never answers"),
            }
        }
        server.abort();
    }

    #[test]
    fn backoff_is_envoys_jittered_exponential_capped_at_2_5_seconds() {
        for (n, ceiling) in [(1, 250), (2, 750), (3, 1750), (4, 2500), (20, 2500)] {
            let waits: Vec<Duration> = (0..200).map(|_| backoff(n)).collect();
            assert!(
                waits.iter().all(|w| *w < Duration::from_millis(ceiling)),
                "retry {n}: {waits:?}"
            );
            // Jittered: not one fixed wait.
            assert!(waits.iter().any(|w| *w != waits[0]), "retry {n}: {waits:?}");
        }
    }

    #[test]
    fn only_a_connect_that_sent_nothing_is_retried() {
        for kind in [
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::TimedOut,
        ] {
            assert!(retriable(kind), "{kind:?}");
        }
        for kind in [ErrorKind::AddrNotAvailable, ErrorKind::PermissionDenied] {
            assert!(!retriable(kind), "{kind:?}");
        }
    }
}
