//! The HTTP side: a hyper 1 server (HTTP/1.1, accepts HTTP/1.0) whose one `handle()` runs the
//! filter's request callbacks, forwards to the upstream with a keep-alive client, runs the
//! response callbacks and answers the client. Bodies stream chunk by chunk through the body
//! callbacks over bounded channels (constant memory). Hop-by-hop headers (RFC 7230 section 6.1)
//! are removed in both directions; on responses the filter still sees `connection`, as in Envoy.
//!
//! Errors: upstream refused, or closed/reset before any byte of response `503`, no response
//! headers within the timeout `504`, a broken or non-HTTP response `502`, a malformed request
//! body `400` (these go through the filter's response callbacks like Envoy's local replies);
//! request heads over 60 KiB `431` (hyper's, before any callback); a filter trap `503` without
//! further callbacks (its VM is being reloaded). Other requests in flight on that VM fail closed
//! at their next callback, as in Envoy: `503` if their response has not started, else a reset.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::Error;
use crate::abi::{Level, MetricType};
use crate::edge::{Activity, Guarded, InFlight, Limits, MAX_HEAD};
use crate::headers::HeaderList;
use crate::http::LocalReply;
use crate::vm::{Direction, Shared, StreamInfo};
use crate::wasi::Random;
use crate::worker::{Ctx, Outcome, WorkerHandle};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// Headers that never cross a hop (RFC 7230 section 6.1 and the usual extras).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What `envoy/envoy.yaml` appends to `Via` (RFC 9110 section 7.6.3).
const VIA: &str = "jwt-proxy";

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
    client: Upstream,
    shared: Arc<Shared>,
    ids: Mutex<StdRng>,
    /// Client connections open now.
    connections: Arc<AtomicUsize>,
    /// Envoy's `http1.` / `http2.dropped_headers_with_underscores` counters.
    dropped_underscores: [u32; 2],
}

/// The filter reset the stream: hyper closes the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("the filter reset the stream")]
struct StreamReset;

impl Proxy {
    pub(crate) fn new(
        config: ProxyConfig,
        workers: Vec<WorkerHandle>,
        shared: Arc<Shared>,
    ) -> Arc<Self> {
        let client = Upstream {
            addr: config.upstream.clone(),
            idle: Mutex::new(Vec::new()),
        };
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

/// Accepts connections until `stop` fires (or its sender is dropped); then every connection
/// task is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Past the cap a new connection is closed at once (Envoy's
                    // global_downstream_max_connections).
                    let Some(open) = Open::claim(&proxy.connections, proxy.config.limits.max_connections) else {
                        proxy.log(Level::Debug, format!("connection from {peer} over the limit: closed"));
                        drop(stream);
                        continue;
                    };
                    let worker = proxy.next_worker.fetch_add(1, Ordering::Relaxed) % proxy.workers.len();
                    connections.spawn(serve_connection(proxy.clone(), stream, peer, worker, open));
                }
                Err(e) => {
                    proxy.log(Level::Warn, format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One open client connection, counted until it drops.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn claim(count: &Arc<AtomicUsize>, max: usize) -> Option<Open> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Open(count.clone()))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One task per connection; all its requests go to the same worker (as Envoy pins a
/// connection to a worker thread). HTTP/1.x behind the [`Guarded`] checks, or HTTP/2 with
/// prior knowledge.
async fn serve_connection(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    worker: usize,
    _open: Open,
) {
    let local = stream.local_addr().ok();
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let io = Guarded::new(stream, proxy.config.limits, activity.clone());
    let p = proxy.clone();
    let service = service_fn(move |req| {
        let proxy = p.clone();
        let in_flight = activity.begin();
        // An HTTP/1.0 client's connection closes unless it asked to keep it (Envoy then
        // answers `connection: close`, as RFC 2616 section 19.6.2 expects).
        let http10 = req.version() == Version::HTTP_10
            && !connection_tokens(
                req.headers()
                    .get_all(CONNECTION)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
            .iter()
            .any(|t| t == "keep-alive");
        async move {
            let response = handle(proxy, worker, peer, local, req).await?;
            let response = closing(response, http10);
            Ok::<_, StreamReset>(response.map(|body| Counted { body, in_flight }.boxed()))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    builder.http2().max_header_list_size(MAX_HEAD as u32);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        proxy.log(Level::Debug, format!("connection from {peer}: {e}"));
    }
}

/// A response body that holds its request in flight until it is done (for the idle timeout).
struct Counted {
    body: ProxyBody,
    #[allow(dead_code)]
    in_flight: InFlight,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `value` appended to header `name`, after any values it has, comma-separated (Envoy's
/// `APPEND_IF_EXISTS_OR_ADD`).
fn append(map: &mut HeaderMap, name: &'static str, value: &str) {
    let mut joined: Vec<u8> = Vec::new();
    for v in map.get_all(name) {
        joined.extend_from_slice(v.as_bytes());
        joined.push(b',');
    }
    joined.extend_from_slice(value.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        map.insert(name, v);
    }
}

/// How a request the connection manager refuses before the filter sees it is answered:
/// status and whether the connection closes. Envoy runs no request callback for these.
fn refused_early(parts: &http::request::Parts, named: &[String]) -> Option<(u16, bool)> {
    // An `Upgrade` (WebSocket, ...) with none configured: 403. `h2c` is ignored.
    let upgrade = named.iter().any(|n| n == "upgrade")
        && parts
            .headers
            .get_all(http::header::UPGRADE)
            .iter()
            .any(|v| {
                v.to_str()
                    .unwrap_or("")
                    .split(',')
                    .any(|t| !t.trim().eq_ignore_ascii_case("h2c"))
            });
    if upgrade {
        return Some((403, true));
    }
    // `OPTIONS *` (or any `*`): no route matches.
    (parts.uri.path() == "*").then_some((404, false))
}

/// Names listed in `Connection` headers, lowercase.
fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &str, named: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name)
}

fn text(s: &str) -> ProxyBody {
    Full::new(Bytes::from(s.to_owned()))
        .map_err(|e| match e {})
        .boxed()
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A plain response the host makes itself (not through the filter).
fn plain(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut r = Response::new(text(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Converts a filter header list to an `http::HeaderMap`, skipping pseudo-headers and
/// hop-by-hop headers; invalid names or values are logged and dropped.
fn to_header_map(proxy: &Proxy, list: &HeaderList, named: &[String]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in list.iter() {
        if name.starts_with(':') || is_hop_by_hop(name, named) {
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => proxy.log(
                Level::Warn,
                format!("dropping invalid header \"{name}\" set by the filter"),
            ),
        }
    }
    map
}

/// A body fed by a bounded channel (backpressure keeps memory constant).
struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Runs `proxy_on_log` / `proxy_on_done` / `proxy_on_delete` when the request is over, however
/// it ends.
struct Finish {
    worker: WorkerHandle,
    ctx: Ctx,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let ctx = self.ctx;
        self.worker.post(move |w| w.finish(ctx));
    }
}

/// Why the request body pump stopped the exchange.
enum Abort {
    Local(LocalReply),
    Reset,
    Failed(Error),
}

async fn handle(
    proxy: Arc<Proxy>,
    worker: usize,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, StreamReset> {
    let w = proxy.workers[worker].clone();
    let (parts, body) = req.into_parts();
    let named = connection_tokens(
        parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        // Only HTTP/1.0 gets this far without one: envoy.yaml's default_host_for_http_10.
        .unwrap_or_else(|| "jwt-proxy".to_owned());
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    // What Envoy's connection manager does before any filter: `:path` (none for CONNECT),
    // header names with `_` dropped and counted, a client's `x-envoy-*` removed (the
    // header_mutation filter), `x-forwarded-proto` set.
    let connect = parts.method == Method::CONNECT;
    let mut headers = HeaderList::new();
    headers.add(":authority", authority.as_bytes());
    if !connect {
        headers.add(":path", path.as_bytes());
    }
    headers.add(":method", parts.method.as_str().as_bytes());
    headers.add(":scheme", b"http");
    let mut underscores = 0;
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if name == HOST
            || is_hop_by_hop(n, &named)
            || n.starts_with("x-envoy-")
            || n == "x-forwarded-proto"
        {
            continue;
        }
        if n.contains('_') {
            underscores += 1;
            continue;
        }
        headers.add(n, value.as_bytes());
    }
    headers.add("x-forwarded-proto", b"http");
    if underscores > 0 {
        let codec = usize::from(parts.version == Version::HTTP_2);
        proxy
            .shared
            .metrics
            .increment(proxy.dropped_underscores[codec], underscores);
    }
    let protocol = match parts.version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    };
    let info = StreamInfo {
        protocol: protocol.to_owned(),
        request_id: proxy.request_id(),
        source: Some(peer),
        destination: local,
    };
    let end_of_stream = body.is_end_stream();

    if let Some((status, close)) = refused_early(&parts, &named) {
        let ctx = match w.call(move |wk| wk.create(info)).await.and_then(|r| r) {
            Ok(ctx) => ctx,
            Err(e) => return Ok(filter_failed(&proxy, &e)),
        };
        let finish = Finish {
            worker: w.clone(),
            ctx,
        };
        let response = local_response(&proxy, &w, ctx, host_reply(status, ""), finish).await;
        return Ok(closing(response, close));
    }

    let started = w
        .call(move |wk| {
            let ctx = wk.create(info)?;
            let outcome = wk.headers(ctx, Direction::Request, headers, end_of_stream)?;
            Ok::<_, Error>((ctx, outcome))
        })
        .await
        .and_then(|r| r);
    let (ctx, outcome) = match started {
        Ok(v) => v,
        Err(e) => return Ok(filter_failed(&proxy, &e)),
    };
    let finish = Finish {
        worker: w.clone(),
        ctx,
    };
    let outcome = match wait_resumed(&proxy, &w, ctx, Direction::Request, outcome).await {
        Ok(o) => o,
        Err(resp) => return Ok(resp),
    };
    if outcome.reset {
        return Err(StreamReset);
    }
    if let Some(reply) = outcome.local_reply {
        return Ok(local_response(&proxy, &w, ctx, reply, finish).await);
    }
    if connect {
        // The router has no route for CONNECT: 404, and the connection closes.
        let response = local_response(&proxy, &w, ctx, host_reply(404, ""), finish).await;
        return Ok(closing(response, true));
    }

    // The upstream request, from the headers as the filter left them.
    let headers = outcome.headers;
    let method = headers
        .get(":method")
        .and_then(|m| Method::from_bytes(m).ok())
        .unwrap_or(parts.method);
    let path = headers.get_str(":path").unwrap_or("/").to_owned();
    // Origin-form: the request goes straight to the upstream's connection.
    let uri = path;
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .version(Version::HTTP_11);
    if let Some(h) = builder.headers_mut() {
        *h = to_header_map(&proxy, &headers, &named);
        if let Some(a) = headers
            .get(":authority")
            .and_then(|a| HeaderValue::from_bytes(a).ok())
        {
            h.insert(HOST, a);
        }
        // The route's request_headers_to_add, after every filter.
        append(h, "via", &format!("{protocol} {VIA}"));
        append(h, "x-forwarded-for", &peer.ip().to_string());
    }
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let (abort_tx, abort_rx) = oneshot::channel::<Abort>();
    let upstream_body = if end_of_stream {
        drop(done_tx);
        empty()
    } else {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(pump_request(w.clone(), ctx, body, tx, done_tx, abort_tx));
        ChannelBody { rx }.boxed()
    };
    let upstream_req = match builder.body(upstream_body) {
        Ok(r) => r,
        Err(e) => {
            proxy.log(
                Level::Error,
                format!("the filter produced an invalid request: {e}"),
            );
            return Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid request after filter\n",
            ));
        }
    };

    let pool = proxy.clone();
    let response = pool.client.send(upstream_req);
    tokio::pin!(response);
    let timeout = proxy.config.upstream_timeout;
    let upstream = async {
        // Like Envoy's route timeout: counted from the end of the request.
        tokio::select! {
            biased;
            r = &mut response => return Some(r),
            _ = done_rx => {}
        }
        tokio::time::timeout(timeout, &mut response).await.ok()
    };
    let aborted = async {
        match abort_rx.await {
            Ok(a) => a,
            Err(_) => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        // The pump reports why it stopped before it fails the upstream request's body.
        biased;
        a = aborted => {
            return match a {
                Abort::Local(reply) => Ok(local_response(&proxy, &w, ctx, reply, finish).await),
                Abort::Reset => Err(StreamReset),
                Abort::Failed(e) => Ok(filter_failed(&proxy, &e)),
            };
        }
        r = upstream => r,
    };
    let upstream_response = match result {
        None => {
            proxy.log(
                Level::Warn,
                format!(
                    "upstream {} timed out after {timeout:?}",
                    proxy.config.upstream
                ),
            );
            return Ok(local_response(
                &proxy,
                &w,
                ctx,
                host_reply(504, "upstream request timeout\n"),
                finish,
            )
            .await);
        }
        Some(Err(UpstreamError::Connect(e))) => {
            proxy.log(
                Level::Warn,
                format!("upstream {} connect error: {e:#}", proxy.config.upstream),
            );
            let reply = host_reply(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure\n",
            );
            return Ok(local_response(&proxy, &w, ctx, reply, finish).await);
        }
        Some(Err(UpstreamError::Failed {
            heard: false,
            error,
        })) => {
            // Accepted, then closed or reset before a byte of response: Envoy's 503.
            proxy.log(
                Level::Warn,
                format!("upstream {} disconnected: {error:#}", proxy.config.upstream),
            );
            let reply = host_reply(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination\n",
            );
            return Ok(local_response(&proxy, &w, ctx, reply, finish).await);
        }
        Some(Err(UpstreamError::Failed { error: e, .. })) => {
            proxy.log(
                Level::Warn,
                format!("upstream {} reset: {e:#}", proxy.config.upstream),
            );
            let reply = host_reply(
                502,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination\n",
            );
            return Ok(local_response(&proxy, &w, ctx, reply, finish).await);
        }
        Some(Ok(r)) => r,
    };
    respond(proxy, w, ctx, upstream_response, finish).await
}

/// `response`, with `connection: close` when `close` (hyper then closes after it).
fn closing(mut response: Response<ProxyBody>, close: bool) -> Response<ProxyBody> {
    if close {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn host_reply(status: u16, body: &str) -> LocalReply {
    LocalReply {
        status,
        details: String::new(),
        headers: HeaderList::new(),
        body: body.as_bytes().to_vec(),
    }
}

fn filter_failed(proxy: &Proxy, e: &Error) -> Response<ProxyBody> {
    proxy.log(Level::Error, format!("request failed: {e}"));
    plain(StatusCode::SERVICE_UNAVAILABLE, "filter failed\n")
}

/// Waits while the filter keeps the stream paused; `Err` is the response to send instead.
async fn wait_resumed(
    proxy: &Proxy,
    w: &WorkerHandle,
    ctx: Ctx,
    direction: Direction,
    mut outcome: Outcome,
) -> Result<Outcome, Response<ProxyBody>> {
    let deadline = tokio::time::Instant::now() + proxy.config.resume_timeout;
    while let Some(waiter) = outcome.waiter.take() {
        if tokio::time::timeout_at(deadline, waiter).await.is_err() {
            proxy.log(
                Level::Error,
                format!(
                    "the filter paused context {} and did not resume it within {:?}",
                    ctx.id, proxy.config.resume_timeout
                ),
            );
            return Err(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "filter did not resume the stream\n",
            ));
        }
        outcome = match w
            .call(move |wk| wk.resumed(ctx, direction))
            .await
            .and_then(|r| r)
        {
            Ok(o) => o,
            Err(e) => return Err(filter_failed(proxy, &e)),
        };
    }
    Ok(outcome)
}

/// Sends a local reply (the filter's, or the host's for upstream failures) through the filter's
/// response-headers callback, as Envoy does, and never to the upstream.
async fn local_response(
    proxy: &Proxy,
    w: &WorkerHandle,
    ctx: Ctx,
    reply: LocalReply,
    finish: Finish,
) -> Response<ProxyBody> {
    let mut headers = HeaderList::new();
    headers.add(":status", reply.status.to_string().as_bytes());
    for (n, v) in reply.headers.iter() {
        headers.add(n, v);
    }
    if !reply.body.is_empty() && headers.get("content-type").is_none() {
        headers.add("content-type", b"text/plain");
    }
    headers.replace("content-length", reply.body.len().to_string().as_bytes());
    let eos = reply.body.is_empty();
    let seen = w
        .call(move |wk| {
            wk.headers(ctx, Direction::Response, headers.clone(), eos)
                .map(|o| o.headers)
                .unwrap_or(headers)
        })
        .await;
    let headers = seen.unwrap_or_default();
    let status = headers
        .get_str(":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(
        Full::new(Bytes::from(reply.body))
            .map_err(|e| match e {})
            .boxed(),
    );
    *response.status_mut() = status;
    *response.headers_mut() = to_header_map(proxy, &headers, &[]);
    drop(finish);
    response
}

/// Runs the response callbacks on the upstream's response and streams it to the client.
async fn respond(
    proxy: Arc<Proxy>,
    w: WorkerHandle,
    ctx: Ctx,
    upstream: Response<Incoming>,
    finish: Finish,
) -> Result<Response<ProxyBody>, StreamReset> {
    let (parts, body) = upstream.into_parts();
    let named_before = connection_tokens(
        parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let mut headers = HeaderList::new();
    headers.add(":status", parts.status.as_str().as_bytes());
    let mut upstream_headers = parts.headers.clone();
    // envoy.yaml's upstream filter: `Via` names the protocol the response arrived in.
    let received = if parts.version == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    append(&mut upstream_headers, "via", &format!("{received} {VIA}"));
    for (name, value) in &upstream_headers {
        // Envoy's codec drops these; `connection` and the headers it names stay visible.
        if name.as_str() != "connection" && HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        headers.add(name.as_str(), value.as_bytes());
    }
    let end_of_stream = body.is_end_stream();
    let outcome = match w
        .call(move |wk| wk.headers(ctx, Direction::Response, headers, end_of_stream))
        .await
        .and_then(|r| r)
    {
        Ok(o) => o,
        Err(e) => return Ok(filter_failed(&proxy, &e)),
    };
    let outcome = match wait_resumed(&proxy, &w, ctx, Direction::Response, outcome).await {
        Ok(o) => o,
        Err(resp) => return Ok(resp),
    };
    if outcome.reset {
        return Err(StreamReset);
    }
    if let Some(reply) = outcome.local_reply {
        // Replaces the upstream response; not run through the callbacks a second time.
        let mut response = Response::new(
            Full::new(Bytes::from(reply.body))
                .map_err(|e| match e {})
                .boxed(),
        );
        *response.status_mut() =
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *response.headers_mut() = to_header_map(&proxy, &reply.headers, &[]);
        return Ok(response);
    }
    let headers = outcome.headers;
    let mut named = named_before;
    named.extend(connection_tokens(headers.get_all("connection").into_iter()));
    let status = headers
        .get_str(":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(parts.status);
    let client_body = if end_of_stream {
        drop(finish);
        empty()
    } else {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(pump_response(proxy.clone(), w, ctx, body, tx, finish));
        ChannelBody { rx }.boxed()
    };
    let mut response = Response::new(client_body);
    *response.status_mut() = status;
    *response.headers_mut() = to_header_map(&proxy, &headers, &named);
    Ok(response)
}

/// Streams the client's body to the upstream through the request body callbacks.
async fn pump_request(
    w: WorkerHandle,
    ctx: Ctx,
    mut body: Incoming,
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    done: oneshot::Sender<()>,
    abort: oneshot::Sender<Abort>,
) {
    let mut ended = false;
    loop {
        let frame = match body.frame().await {
            None if ended => break,
            None => Frame::data(Bytes::new()),
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                // The client's body is malformed (bad chunk, ...): Envoy answers 400 itself
                // and resets the upstream request.
                let _ = abort.send(Abort::Local(host_reply(400, "Bad Request\n")));
                let _ = tx.send(Err(Box::new(e))).await;
                return;
            }
        };
        let outcome = match frame.into_data() {
            Ok(chunk) => {
                let eos = chunk.is_empty() || body.is_end_stream();
                ended = eos;
                w.call(move |wk| wk.body(ctx, Direction::Request, &chunk, eos))
                    .await
            }
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    ended = true;
                    let list = HeaderList::from_pairs(
                        trailers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
                    );
                    w.call(move |wk| wk.trailers(ctx, Direction::Request, list))
                        .await
                }
                Err(_) => continue,
            },
        };
        let outcome = match outcome.and_then(|r| r) {
            Ok(o) => o,
            Err(e) => {
                let _ = abort.send(Abort::Failed(e));
                let _ = tx.send(Err("filter failed".into())).await;
                return;
            }
        };
        if outcome.reset || outcome.local_reply.is_some() {
            let _ = abort.send(match outcome.local_reply {
                Some(r) => Abort::Local(r),
                None => Abort::Reset,
            });
            let _ = tx.send(Err("request stopped by the filter".into())).await;
            return;
        }
        let frame = match outcome.body {
            Some(data) if !data.is_empty() => Frame::data(Bytes::from(data)),
            Some(_) | None if outcome.headers.is_empty() => {
                if ended {
                    break;
                }
                continue;
            }
            _ => {
                let mut map = HeaderMap::new();
                for (n, v) in outcome.headers.iter() {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(n.as_bytes()),
                        HeaderValue::from_bytes(v),
                    ) {
                        map.append(n, v);
                    }
                }
                Frame::trailers(map)
            }
        };
        if tx.send(Ok(frame)).await.is_err() {
            return;
        }
        if ended {
            break;
        }
    }
    let _ = done.send(());
}

/// Streams the upstream's body to the client through the response body callbacks; the request
/// finishes (`proxy_on_log` ...) when this ends.
async fn pump_response(
    proxy: Arc<Proxy>,
    w: WorkerHandle,
    ctx: Ctx,
    mut body: Incoming,
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    finish: Finish,
) {
    let mut ended = false;
    while !ended {
        let frame = match body.frame().await {
            None => Frame::data(Bytes::new()),
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                proxy.log(Level::Warn, format!("upstream body error: {e}"));
                let _ = tx.send(Err(Box::new(e))).await;
                break;
            }
        };
        let outcome = match frame.into_data() {
            Ok(chunk) => {
                let eos = chunk.is_empty() || body.is_end_stream();
                ended = eos;
                w.call(move |wk| wk.body(ctx, Direction::Response, &chunk, eos))
                    .await
            }
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    ended = true;
                    let list = HeaderList::from_pairs(
                        trailers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
                    );
                    w.call(move |wk| wk.trailers(ctx, Direction::Response, list))
                        .await
                }
                Err(_) => continue,
            },
        };
        let outcome = match outcome.and_then(|r| r) {
            Ok(o) => o,
            Err(e) => {
                proxy.log(Level::Error, format!("response failed: {e}"));
                let _ = tx.send(Err("filter failed".into())).await;
                break;
            }
        };
        if outcome.reset || outcome.local_reply.is_some() {
            let _ = tx.send(Err("response stopped by the filter".into())).await;
            break;
        }
        let frame = match outcome.body {
            Some(data) if !data.is_empty() => Frame::data(Bytes::from(data)),
            Some(_) | None if outcome.headers.is_empty() => continue,
            _ => Frame::trailers(to_header_map(&proxy, &outcome.headers, &[])),
        };
        if tx.send(Ok(frame)).await.is_err() {
            break;
        }
    }
    drop(finish);
}

/// A TCP stream that notes whether response bytes arrived since the request was last written,
/// so a reset before any byte (Envoy: 503) is told from a broken response (502).
struct Tracked {
    inner: TcpStream,
    heard: Arc<AtomicBool>,
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
            self.heard.store(true, Ordering::Relaxed);
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
            self.heard.store(false, Ordering::Relaxed);
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
            self.heard.store(false, Ordering::Relaxed);
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

/// Why an upstream exchange failed.
enum UpstreamError {
    /// No connection (refused, unreachable).
    Connect(std::io::Error),
    /// The exchange broke; `heard`: whether any response byte had arrived.
    Failed { heard: bool, error: hyper::Error },
}

/// HTTP/1.1 keep-alive connections to the upstream.
struct Upstream {
    addr: String,
    idle: Mutex<Vec<(SendRequest<ProxyBody>, Arc<AtomicBool>)>>,
}

impl Upstream {
    /// An idle connection ready for a request; busy ones stay pooled, closed ones are dropped.
    fn checkout(&self) -> Option<(SendRequest<ProxyBody>, Arc<AtomicBool>)> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        idle.retain(|(s, _)| !s.is_closed());
        if let Some(i) = idle.iter().position(|(s, _)| s.is_ready()) {
            found = Some(idle.swap_remove(i));
        }
        found
    }

    async fn connect(&self) -> Result<(SendRequest<ProxyBody>, Arc<AtomicBool>), UpstreamError> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let heard = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Tracked {
            inner: stream,
            heard: heard.clone(),
        });
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| UpstreamError::Failed {
                heard: false,
                error,
            })?;
        tokio::spawn(conn);
        Ok((sender, heard))
    }

    /// Sends on an idle connection (again on a new one if it turns out closed before the
    /// request was written) or a new one.
    async fn send(&self, mut req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamError> {
        loop {
            let (mut sender, heard, reused) = match self.checkout() {
                Some((s, h)) => (s, h, true),
                None => {
                    let (s, h) = self.connect().await?;
                    (s, h, false)
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((sender, heard));
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => {
                        return Err(UpstreamError::Failed {
                            heard: heard.load(Ordering::Relaxed),
                            error: e.into_error(),
                        });
                    }
                },
            }
        }
    }
}
