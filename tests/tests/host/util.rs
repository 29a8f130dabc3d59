//! The host tests' side of `jwt_proxy_tests`: the fixture, its upstreams
//! (the echo and the scripted one), one way to wait from an async test, and
//! small HTTP clients (hyper, async).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use jwt_proxy_tests::scripted::{Reply, Scripted};
use jwt_proxy_tests::{Upstream, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn fixture() -> PathBuf {
    jwt_proxy_tests::wasm("abi_fixture")
}

/// The product's echo upstream ([`Upstream`]), started off the test's runtime
/// (it runs one of its own).
pub fn echo() -> Upstream {
    std::thread::spawn(Upstream::start).join().unwrap()
}

/// An answer with an upstream header the client must see and hop-by-hop
/// headers it must not.
const HOP: &[u8] = b"HTTP/1.1 200 OK\r\nx-echo: 1\r\nconnection: x-up-hop\r\nx-up-hop: 1\r\nkeep-alive: timeout=5\r\ncontent-length: 0\r\n\r\n";

/// The answer [`Reply::Held`] sends once released.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nx-echo: 1\r\ncontent-length: 0\r\n\r\n";

/// The scripted upstream for the answers the echo does not give: `/h`
/// answers `200` with `x-echo: 1`; `/hop`
/// answers with `Connection: x-up-hop` + `x-up-hop`; `/slow` is held until
/// [`Scripted::release`]; `/reset` resets the connection before any byte;
/// anything else echoes the body.
pub fn scripted() -> Scripted {
    std::thread::spawn(|| {
        Scripted::start(|head| match head.route() {
            "/h" => Reply::Bytes(OK),
            "/hop" => Reply::Bytes(HOP),
            "/slow" => Reply::Held(OK),
            "/reset" => Reply::Reset,
            _ => Reply::Echo,
        })
    })
    .join()
    .unwrap()
}

/// [`wait_until`] (10 s) from an async test: the runtime must be multi-threaded
/// so the host's tasks run meanwhile.
pub fn wait<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    tokio::task::block_in_place(|| wait_until(Duration::from_secs(10), what, probe))
}

/// A response read by [`send`].
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// One request on a fresh connection (hyper client, HTTP/1.1).
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    try_send(addr, req).await.expect("request failed")
}

pub async fn try_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
        .await
        .expect("timed out")?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A GET with the given extra headers.
pub fn get(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", "proxy.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// A GET carrying `x-fixture-op: op`.
pub fn op(op: &str) -> Request<Full<Bytes>> {
    get("/op", &[("x-fixture-op", op)])
}

/// Writes raw bytes and reads until the server closes (bounded by a timeout).
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the server did not close the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value` lines of a fixture reply, as a lookup.
pub fn field(body: &str, key: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {body:?}"))
        .to_owned()
}
