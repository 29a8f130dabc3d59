//! Faults (issue 5): a guest panic, an upstream that refuses, resets or
//! stalls, clients that abort their uploads. Each fails only the request it
//! hits (a guest panic also the requests in flight on that VM: 503, or a
//! reset once their response has started), with a short answer or a reset;
//! the proxy keeps serving; nothing unsigned
//! reaches the upstream; nothing leaks. Run on Envoy and on the test host,
//! except the leak figures (RSS, fds, connection stats), which are Envoy's.

mod panics;
mod upstream;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::{Conn, exchange, post};
use jwt_proxy_tests::scripted::{Head, Reply, Scripted};
use jwt_proxy_tests::{SECRET, verify};

/// The faulty upstream's answer, chosen by the request path:
/// `/reset-silent` resets the connection without a byte,
/// `/reset-head` sends half a status line and resets the connection,
/// `/reset-body` sends the head and 10 of 1000 body bytes and resets,
/// `/slow-body` sends the head and 10 of 20 body bytes, the rest once released,
/// `/garbage` answers bytes that are not HTTP, `/stall` never answers,
/// anything else gets `200 ok`.
fn script(head: &Head) -> Reply {
    match head.route() {
        "/reset-silent" => Reply::Reset,
        "/reset-head" => Reply::ResetAfter(b"HTTP/1.1 200 O"),
        "/reset-body" => {
            Reply::ResetAfter(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        }
        "/slow-body" => Reply::Part {
            first: b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789",
            rest: b"0123456789",
        },
        "/garbage" => Reply::Close(b"THIS IS NOT HTTP\r\n\r\n"),
        "/stall" => Reply::Stall,
        _ => Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    }
}

/// The faulty upstream on a free port.
fn faulty() -> Scripted {
    Scripted::start(script)
}

/// The tokens a request reached the upstream with.
fn tokens(h: &Head) -> Vec<String> {
    h.all("x-my-jwt")
}

/// Whether a request went through the panic fixture (it marks them).
fn fixture_ok(h: &Head) -> bool {
    h.all("x-fixture-ok") == ["1"]
}

/// Both proxies in front of `upstream`, with a 1 s upstream timeout.
fn setup(upstream: SocketAddr) -> Setup {
    Setup {
        upstream_timeout: Duration::from_secs(1),
        ..Setup::new(upstream)
    }
}

/// Every request that reached the upstream carried exactly one token, and it
/// verifies: nothing unsigned was forwarded.
fn assert_all_signed(name: &str, seen: &[Head]) {
    for h in seen {
        let tokens = tokens(h);
        assert_eq!(
            tokens.len(),
            1,
            "{name}: {} reached the upstream with {} tokens",
            h.path,
            tokens.len()
        );
        verify(&tokens[0], SECRET.as_bytes());
    }
}

/// A POST that must succeed: the proxy still serves.
fn assert_serves(proxy: &Proxy, what: &str) {
    let resp = exchange(proxy.addr(), &post("/ok", &[], b"{}"));
    assert_eq!(
        resp.status,
        200,
        "{}: not serving after {what}",
        proxy.name()
    );
}

/// One POST that should fail: its status, body and how long it took.
fn failing_post(proxy: &Proxy, path: &str) -> (Result<(u16, String), String>, Duration) {
    let started = Instant::now();
    let mut conn = Conn::connect(proxy.addr()).unwrap();
    conn.send(&post(path, &[], b"{}")).unwrap();
    let out = conn
        .read_response(false)
        .map(|r| (r.status, r.text()))
        .map_err(|e| e.to_string());
    (out, started.elapsed())
}
