//! Helpers several test modules share and the library does not need: raw
//! exchanges that tell "refused" from "answered", and the upstream's view of
//! one request through both proxies, and commands run to their end.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::{Conn, Response, bare, exchange};
use jwt_proxy_tests::{Seen, Upstream};
use serde_json::Value;

/// The proxy's `/status` figures.
pub fn status(proxy: &Proxy) -> Value {
    let resp = exchange(proxy.addr(), &bare("GET", "/status", &[]));
    serde_json::from_slice(&resp.body).unwrap()
}

/// Sends `request` on a new connection: the response (if any) and whether
/// the proxy then closed the connection.
pub fn send(addr: SocketAddr, request: &[u8]) -> (Option<Response>, bool) {
    let mut conn = Conn::connect(addr).unwrap();
    // A proxy may refuse before it has read everything: a failed write is fine.
    let _ = conn.send(request);
    let resp = conn.read_response(request.starts_with(b"HEAD ")).ok();
    let closed = conn.closed_by_peer(Duration::from_secs(3));
    (resp, closed)
}

/// Sends `request` on a new connection: the response, or `None` when the
/// proxy closed the connection without one.
pub fn try_exchange(proxy: &Proxy, request: &[u8]) -> Option<Response> {
    let mut conn = Conn::connect(proxy.addr()).unwrap();
    // A proxy may close before reading everything: a failed write is an answer too.
    if conn.send(request).is_err() {
        return None;
    }
    conn.read_response(request.starts_with(b"HEAD ")).ok()
}

/// Inserts `line` (raw bytes, no CRLF) as a header line before the blank line.
pub fn with_header_line(mut request: Vec<u8>, line: &[u8]) -> Vec<u8> {
    let at = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let mut insert = b"\r\n".to_vec();
    insert.extend_from_slice(line);
    request.splice(at..at, insert);
    request
}

/// The upstream's view of one request sent through each proxy.
pub fn seen_through_both(setup: &Setup, request: &[u8]) -> Vec<(String, Response, Seen)> {
    let upstream = Upstream::start();
    let setup = Setup {
        upstream: upstream.addr(),
        ..setup.clone()
    };
    setup
        .both()
        .iter()
        .map(|proxy| {
            let resp = exchange(proxy.addr(), request);
            assert_eq!(resp.status, 200, "{}: {}", proxy.name(), resp.text());
            (proxy.name().to_owned(), resp, upstream.last())
        })
        .collect()
}

/// Runs `cmd` to its end and returns its output; fails the test, with
/// both output streams, when it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} failed to start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
