//! A gRPC test server over cleartext HTTP/2 (h2c, what Envoy's gRPC client
//! speaks to a cluster with HTTP/2 prior knowledge), for the gRPC
//! conformance tests; kept apart from the scripted upstream, which speaks
//! HTTP/1.1 only. Messages are raw bytes in gRPC's framing (a 5-byte
//! prefix: flag 0, big-endian length); no protobuf. Methods, all under
//! `/test.Echo/`:
//!
//! - `Unary`: answers the request message itself, with initial metadata
//!   `x-server: grpc-test` and trailing metadata `x-trailer: unary`;
//! - `Fail`: the request message is `CODE:MESSAGE`; answers no message and
//!   trailers `grpc-status: CODE`, `grpc-message: MESSAGE` (percent-encoded
//!   as the gRPC spec says);
//! - `Slow`: answers the request message after 3 s (for timeouts);
//! - `Many`: server streaming: the request message is a count `N`; answers
//!   `reply-1` ... `reply-N`;
//! - `Chat`: bidirectional: answers `echo:MSG` as soon as each message
//!   `MSG` arrives; when the client ends its side, trailers
//!   `grpc-status: 0`, `x-trailer: chat`.
//!
//! Every call is recorded ([`Received`]): its path, metadata, the messages
//! that arrived and how the client's side ended. In-process on a runtime of
//! its own, on `127.0.0.1:0`, stopped on drop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use http_body_util::channel::{Channel, Sender};
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::wait_until;

/// How the client's side of a call ended, as the server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Not ended (yet).
    Open,
    /// The client sent END_STREAM.
    Eos,
    /// The client reset the stream (RST_STREAM) or dropped the connection.
    Reset,
}

/// One call as the server received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// `:path`, e.g. `/test.Echo/Unary`.
    pub path: String,
    /// `:authority` (or `host`).
    pub authority: String,
    /// The request headers (the call's metadata), as received.
    pub metadata: http::HeaderMap,
    /// The messages, in order.
    pub messages: Vec<Vec<u8>>,
    /// How the client's side ended.
    pub end: End,
}

impl Received {
    /// The one value of metadata `name`, if any.
    pub fn one(&self, name: &str) -> Option<String> {
        let all: Vec<_> = self.metadata.get_all(name).iter().collect();
        assert!(all.len() <= 1, "{name} arrived {} times", all.len());
        all.first()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The messages as (lossy) text.
    pub fn texts(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    }
}

type Calls = Arc<Mutex<Vec<Received>>>;

/// The running server.
pub struct GrpcServer {
    addr: SocketAddr,
    calls: Calls,
    runtime: Option<tokio::runtime::Runtime>,
}

impl GrpcServer {
    /// Starts one on `127.0.0.1:0`.
    pub fn start() -> GrpcServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let calls: Calls = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::clone(&calls);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let record = Arc::clone(&record);
                        async move { Ok::<_, Infallible>(handle(req, record)) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GrpcServer {
            addr,
            calls,
            runtime: Some(runtime),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Received> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits (at most 10 s) until `n` calls arrived and the `n`-th one's
    /// client side ended, and returns them all.
    pub fn wait_for_ended(&self, n: usize) -> Vec<Received> {
        wait_until(
            Duration::from_secs(10),
            format!("{n} ended gRPC calls; have {:?}", self.calls()),
            || {
                let calls = self.calls();
                (calls.len() >= n && calls[n - 1].end != End::Open).then_some(calls)
            },
        )
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `msg` in gRPC's length-prefixed framing.
pub fn frame(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    out.extend_from_slice(msg);
    out.freeze()
}

type Body = BoxBody<Bytes, Infallible>;
type Tx = Sender<Bytes, Infallible>;

fn trailers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn handle(req: http::Request<Incoming>, calls: Calls) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let authority = parts
        .uri
        .authority()
        .map(ToString::to_string)
        .or_else(|| {
            parts
                .headers
                .get("host")
                .map(|h| h.to_str().unwrap_or("").to_owned())
        })
        .unwrap_or_default();
    let index = {
        let mut calls = calls.lock().unwrap();
        calls.push(Received {
            path: path.clone(),
            authority,
            metadata: parts.headers.clone(),
            messages: Vec::new(),
            end: End::Open,
        });
        calls.len() - 1
    };
    let (tx, answer) = Channel::<Bytes, Infallible>::new(16);
    let method = path.rsplit('/').next().unwrap_or("").to_owned();
    tokio::spawn(serve(method, body, tx, calls, index));
    let body = answer.boxed();
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("x-server", "grpc-test")
        .body(body)
        .unwrap()
}

/// Reads the request body message by message, records them, and answers
/// as `method` does.
async fn serve(method: String, mut body: Incoming, mut tx: Tx, calls: Calls, index: usize) {
    let mut buf = BytesMut::new();
    let mut end = End::Eos;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(_)) => {
                end = End::Reset;
                break;
            }
            Some(Ok(f)) => {
                let Ok(data) = f.into_data() else { continue };
                buf.extend_from_slice(&data);
                while let Some(msg) = next_message(&mut buf) {
                    calls.lock().unwrap()[index].messages.push(msg.clone());
                    if method == "Chat" {
                        let mut reply = b"echo:".to_vec();
                        reply.extend_from_slice(&msg);
                        let _ = tx.send(Frame::data(frame(&reply))).await;
                    }
                }
            }
        }
    }
    calls.lock().unwrap()[index].end = end;
    if end == End::Reset {
        return;
    }
    let request = calls.lock().unwrap()[index]
        .messages
        .first()
        .cloned()
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&request).into_owned();
    let ok = |name: &str| trailers(&[("grpc-status", "0"), ("x-trailer", name)]);
    let end_trailers = match method.as_str() {
        "Unary" => {
            let _ = tx.send(Frame::data(frame(&request))).await;
            ok("unary")
        }
        "Slow" => {
            // Answers late on purpose (the behaviour scripted: a timeout or
            // a cancel comes first), not a wait for an event.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = tx.send(Frame::data(frame(&request))).await;
            ok("slow")
        }
        "Many" => {
            let n: usize = text.parse().unwrap_or(0).min(100);
            for i in 1..=n {
                let reply = format!("reply-{i}");
                let _ = tx.send(Frame::data(frame(reply.as_bytes()))).await;
            }
            ok("many")
        }
        "Chat" => ok("chat"),
        "Fail" => {
            let (code, message) = text.split_once(':').unwrap_or(("2", "bad request"));
            trailers(&[
                ("grpc-status", code),
                ("grpc-message", &percent_encode(message)),
            ])
        }
        _ => trailers(&[("grpc-status", "12"), ("grpc-message", "unknown%20method")]),
    };
    let _ = tx.send(Frame::trailers(end_trailers)).await;
}

/// The next whole message of `buf`, taken out of it.
fn next_message(buf: &mut BytesMut) -> Option<Vec<u8>> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    buf.advance(5);
    Some(buf.split_to(len).to_vec())
}

/// gRPC's percent-encoding of `grpc-message`: bytes outside printable
/// ASCII, and `%` and space, as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
