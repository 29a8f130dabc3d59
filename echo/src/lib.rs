//! The echo upstream: an HTTP/1.1 server that answers every request with
//! status 200, the exact body it received (streamed back chunk by chunk, never
//! buffered whole) and its `content-type`, and shows every request header it
//! received as a response header named `x-echo-<name>`. So `curl -i` through
//! the proxy shows the `x-my-jwt` that arrived upstream.
//!
//! Tests run it in-process with [`EchoServer::start`]; the `echo-upstream`
//! binary runs it on its own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Called with the client's address and the head of every request the server
/// receives (tests record what arrived upstream, and on which connection).
pub type OnRequest = Arc<dyn Fn(SocketAddr, &Parts) + Send + Sync>;

/// Prefix of the response headers that show the request headers.
pub const ECHO_PREFIX: &str = "x-echo-";

/// Builds the echo response for one request: the body streams back as it
/// arrives.
pub fn echo(
    peer: SocketAddr,
    req: Request<Incoming>,
    on_request: Option<&OnRequest>,
) -> Response<BoxBody<Bytes, hyper::Error>> {
    let (parts, body) = req.into_parts();
    if let Some(f) = on_request {
        f(peer, &parts);
    }
    let mut resp = Response::new(body.boxed());
    let headers = resp.headers_mut();
    if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, ct.clone());
    }
    for (name, value) in &parts.headers {
        if let Ok(echo_name) = HeaderName::from_bytes(format!("{ECHO_PREFIX}{name}").as_bytes()) {
            headers.append(echo_name, value.clone());
        }
    }
    let line = format!("{} {}", parts.method, parts.uri);
    if let Ok(v) = HeaderValue::from_str(&line) {
        headers.insert(HeaderName::from_static("x-echo-request-line"), v);
    }
    resp
}

/// Serves connections from `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    on_request: Option<OnRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("echo-upstream: accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        // An answer is written in pieces (head, then body frames): without
        // NODELAY the last piece waits for the peer's delayed ACK (40 ms on
        // Linux), which once made a 1 MiB echo take 46 ms instead of 4.
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("echo-upstream: TCP_NODELAY: {e}");
        }
        let on_request = on_request.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = echo(peer, req, on_request.as_ref());
                async move { Ok::<_, Infallible>(resp) }
            });
            let served = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served
                && !e.is_incomplete_message()
            {
                eprintln!("echo-upstream: connection error: {e}");
            }
        });
    }
}

/// An echo server running in this process; stops when dropped.
pub struct EchoServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Starts an echo server on `127.0.0.1:0` in the current tokio runtime.
    ///
    /// # Errors
    /// When the listening socket cannot be bound.
    pub async fn start(on_request: Option<OnRequest>) -> std::io::Result<EchoServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, on_request, stopped));
        Ok(EchoServer { addr, stop, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}
