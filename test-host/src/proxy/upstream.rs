//! The upstream client: hyper-util's pooled `Client` (HTTP/1.1 keep-alive) over a connector
//! whose connections record whether response bytes arrived since the request was written, so
//! a reset before any byte (Envoy: 503) is told from a broken response (502).
//!
//! Pool: an idle connection is closed after [`POOL_IDLE_TIMEOUT`] (90 s, Go's `net/http`
//! default); at most [`POOL_MAX_IDLE`] (256) idle connections are kept (busy ones are not
//! capped, as Envoy's default circuit breakers allow far more). A request that a reused
//! connection drops before writing it is retried on another (hyper-util's
//! `retry_canceled_requests`).

use std::future::Future;
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::proxy::body::ProxyBody;

/// How long an idle upstream connection stays pooled.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How many idle upstream connections stay pooled.
pub(crate) const POOL_MAX_IDLE: usize = 256;

/// Why an upstream exchange failed.
pub(crate) enum UpstreamError {
    /// No connection (refused, unreachable).
    Connect(String),
    /// The exchange broke; `heard`: whether any response byte had arrived.
    Failed { heard: bool, error: String },
}

/// The pooled HTTP/1.1 client of one upstream.
pub(crate) struct Upstream {
    authority: String,
    client: Client<Connector, ProxyBody>,
}

impl Upstream {
    /// A client for `authority` (`HOST:PORT`).
    pub(crate) fn new(authority: &str) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            // The filter's `:authority` becomes `Host`; none is added when it removed it.
            .set_host(false)
            .build(Connector);
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
        let text = chain(&error);
        if error.is_connect() {
            return Err(UpstreamError::Connect(text));
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

/// Whether response bytes arrived since the request was last written (a connection's extra).
#[derive(Clone, Default)]
struct Heard(Arc<AtomicBool>);

/// Connects to the URI's authority over TCP (hostnames resolved by tokio).
#[derive(Clone)]
pub(crate) struct Connector;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Tracked>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| std::io::Error::other("the upstream URI has no authority"))?;
            let stream = TcpStream::connect(authority).await?;
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
