//! The server: the accept loop with its connection cap, one task per connection (pinned to a
//! worker, as Envoy pins a connection to a worker thread), the one `handle()` that routes a
//! request, and graceful shutdown with hyper-util: when asked to stop, the listener closes,
//! idle connections close, requests in flight may finish for up to [`DRAIN_TIMEOUT`], then the
//! rest are cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::abi::Level;
use crate::edge::{Activity, Guarded, MAX_HEAD};
use crate::proxy::Proxy;
use crate::proxy::body::{Counted, closing, host_reply};
use crate::proxy::exchange::{Answer, Exchange, Inbound, StreamReset};
use crate::proxy::hop;
use crate::state::StreamInfo;

/// How long requests in flight may take to finish once the host is asked to stop.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `stop` fires (or its sender is dropped); then drains them (see
/// the module docs).
pub(crate) async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut stop: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
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
                    let link = Link { peer, worker, _open: open };
                    connections.spawn(serve_connection(proxy.clone(), stream, link, graceful.watcher()));
                }
                Err(e) => {
                    proxy.log(Level::Warn, format!("accept failed: {e}"));
                    // Backs off after a failed accept (e.g. out of file
                    // descriptors) so the loop does not spin: not a poll.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        proxy.log(
            Level::Warn,
            format!("requests still in flight after {DRAIN_TIMEOUT:?}: cut"),
        );
    }
    connections.shutdown().await;
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

/// What a connection task knows of its connection.
struct Link {
    peer: SocketAddr,
    worker: usize,
    _open: Open,
}

/// One task per connection: HTTP/1.x behind the [`Guarded`] checks, or HTTP/2 with prior
/// knowledge; its errors are logged.
async fn serve_connection(proxy: Arc<Proxy>, stream: TcpStream, link: Link, watcher: Watcher) {
    let local = stream.local_addr().ok();
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let io = Guarded::new(stream, proxy.config.limits, activity.clone());
    let p = proxy.clone();
    let (peer, worker) = (link.peer, link.worker);
    let service = service_fn(move |req: Request<Incoming>| {
        let proxy = p.clone();
        let in_flight = activity.begin();
        let http10_close = hop::closes_http10(req.version(), req.headers());
        async move {
            let response = handle(proxy, worker, peer, local, req).await?;
            let response = closing(response, http10_close);
            Ok::<_, StreamReset>(response.map(|body| Counted::new(body, in_flight).boxed()))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    builder.http2().max_header_list_size(MAX_HEAD as u32);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        proxy.log(Level::Debug, format!("connection from {peer}: {e}"));
    }
    drop(link);
}

/// Routes one request: what the connection manager refuses before any filter, else the
/// exchange through the filter and the upstream.
async fn handle(
    proxy: Arc<Proxy>,
    worker: usize,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Answer {
    let w = proxy.workers[worker].clone();
    let (parts, body) = req.into_parts();
    let named = hop::named(&parts.headers);
    let (headers, underscores) = hop::request_map(&parts, &named);
    if underscores > 0 {
        let codec = usize::from(parts.version == http::Version::HTTP_2);
        proxy
            .shared
            .metrics
            .increment(proxy.dropped_underscores[codec], underscores);
    }
    let info = StreamInfo {
        protocol: hop::protocol(parts.version).to_owned(),
        request_id: proxy.request_id(),
        source: Some(peer),
        destination: local,
    };
    if let Some((status, close)) = hop::refused_early(&parts, &named) {
        return Ok(match Exchange::create(&proxy, &w, info).await {
            // An upgrade is refused after routing (403); `*` matches no route (404).
            Ok(exchange) => {
                let exchange = if status == 404 {
                    exchange.unrouted()
                } else {
                    exchange
                };
                closing(exchange.local_response(host_reply(status, "")).await, close)
            }
            Err(response) => response,
        });
    }
    let end_of_stream = body.is_end_stream();
    let inbound = Inbound {
        parts,
        body,
        named,
        peer,
    };
    match Exchange::start(&proxy, &w, info, headers, end_of_stream).await {
        Ok((exchange, outcome)) => exchange.run(inbound, outcome).await,
        Err(response) => Ok(response),
    }
}
