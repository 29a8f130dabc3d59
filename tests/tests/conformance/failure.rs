//! VM failure (`conf_reply` trapping where asked): with `FAIL_RELOAD`, a trap
//! fails that request with Envoy's empty 503 (no `content-type`, the route's
//! `via`, `server: envoy`), no further callback runs for it, and the failed VM
//! is re-created at the next request (`on_vm_start` / `on_configure` log then,
//! the context numbers start again at 1, `wasm.PLUGIN.vm_reload_success`
//! counts it); other requests in flight on the failed VM get no callback
//! again and are cut. Envoy re-creates it only after its reload backoff
//! (`reload_config`, 0.1 s base, jittered), answering the same 503 before;
//! the test host has no backoff.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use jwt_proxy_tests::proxy::Proxy;
use jwt_proxy_tests::{Upstream, wait_until};

use super::reply::{finished, lines, request, setup, wire};

const FAILED: &str = "HTTP/1.1 503 Service Unavailable\r\nvia: HTTP/1.1 jwt-proxy\r\n\
                      date: *\r\nserver: envoy\r\ncontent-length: 0\r\n\r\n";

/// The reload counter (`Setup` gives both hosts the plugin name `jwt_proxy`).
fn reloads(proxy: &Proxy) -> u64 {
    proxy.stat("wasm.jwt_proxy.vm_reload_success")
}

/// The VM-level lines (`vm start`, `configure`) and request `#1`'s lines, in
/// order, from the `skip`-th line on.
fn vm_lines(proxy: &Proxy, skip: usize) -> Vec<String> {
    proxy
        .filter_log()
        .into_iter()
        .skip(skip)
        .filter(|l| l == "vm start" || l == "configure" || l.starts_with("#1 request headers"))
        .collect()
}

/// Request `#n`'s lines from the failed VM, read once the next request has
/// re-created it ([`next_request_reloads`]): everything the failed VM logged
/// comes before the new VM's `vm start`, so nothing more can come for `#n`.
fn failed_vm_lines(proxy: &Proxy, n: u32) -> Vec<String> {
    let log = proxy.filter_log();
    let reloaded = log
        .iter()
        .rposition(|l| l == "vm start")
        .expect("a vm start line");
    let own = lines(proxy, n);
    let new_vm = log[reloaded..]
        .iter()
        .filter(|l| l.starts_with(&format!("#{n} ")))
        .count();
    own[..own.len() - new_vm].to_vec()
}

/// After a trap: the next request re-creates the VM (its start lines come
/// first), is served, and is counted as one reload.
fn next_request_reloads(proxy: &Proxy) {
    let name = proxy.name();
    assert_eq!(
        reloads(proxy),
        0,
        "{name}: reloaded before the next request"
    );
    let before = proxy.filter_log().len();
    // Envoy re-creates the VM only once the reload backoff has passed
    // (`reload_config`, 0.1 s base, jittered); a request before that gets the
    // failed VM's 503 and creates nothing. The test host reloads at once.
    let got = wait_until(
        Duration::from_secs(10),
        "a request after the reload backoff",
        || {
            let got = wire(
                proxy.addr(),
                &request("GET / HTTP/1.1", &[], None),
                Duration::ZERO,
            );
            (got.bytes != FAILED).then_some(got)
        },
    );
    assert!(
        got.bytes.starts_with("HTTP/1.1 200 OK\r\n"),
        "{name}: {}",
        got.bytes
    );
    proxy.wait_for_lines("log code=200 details=via_upstream", 1);
    assert_eq!(
        vm_lines(proxy, before),
        ["vm start", "configure", "#1 request headers eos=true"],
        "{name}"
    );
    assert_eq!(reloads(proxy), 1, "{name}");
}

/// A trap in a request-side callback or the response headers: the 503, then
/// nothing more for that request.
fn trap(stage: &str, body: Option<&str>, want_tail: &[&str]) {
    // Answered before the request's end (a body callback): Envoy closes the
    // HTTP/1 connection.
    let early = stage == "request-body";
    let want = if early {
        FAILED.replace(
            "server: envoy\r\n",
            "server: envoy\r\nconnection: close\r\n",
        )
    } else {
        FAILED.to_owned()
    };
    let upstream = Upstream::start();
    let line = if body.is_some() {
        "POST / HTTP/1.1"
    } else {
        "GET / HTTP/1.1"
    };
    let req = request(line, &[&format!("x-trap-at: {stage}")], body);
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        // Envoy closes after its 1 s delayed close, the test host at once.
        let linger = Duration::from_millis(if early { 3000 } else { 300 });
        let got = wire(proxy.addr(), &req, linger);
        assert_eq!(got.bytes, want, "{name}");
        assert_eq!(got.closed, early, "{name}: whether the connection closes");
        let trapped = proxy.wait_for_lines(&format!("#1 trap in {stage}"), 1);
        assert_eq!(trapped.len(), 1, "{name}");
        next_request_reloads(&proxy);
        let seen = failed_vm_lines(&proxy, 1);
        assert_eq!(seen[seen.len() - want_tail.len()..], *want_tail, "{name}");
    }
}

#[test]
fn a_trap_in_the_request_headers_is_an_empty_503() {
    trap(
        "request-headers",
        None,
        &["#1 request headers eos=true", "#1 trap in request-headers"],
    );
}

#[test]
fn a_trap_in_the_request_body_is_an_empty_503() {
    trap(
        "request-body",
        Some("hello"),
        &[
            "#1 request body size=5 eos=false",
            "#1 trap in request-body",
        ],
    );
}

#[test]
fn a_trap_in_the_response_headers_is_an_empty_503() {
    trap(
        "response-headers",
        None,
        &[
            "#1 response headers eos=true [upstream]",
            "#1 trap in response-headers",
        ],
    );
}

#[test]
fn a_trap_in_on_log_leaves_the_response_whole() {
    let upstream = Upstream::start();
    let req = request("POST / HTTP/1.1", &["x-trap-at: log"], Some("hello"));
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let got = wire(proxy.addr(), &req, Duration::ZERO);
        assert!(got.bytes.starts_with("HTTP/1.1 200 OK\r\n"), "{name}");
        assert!(got.bytes.ends_with("\r\n\r\nhello"), "{name}");
        assert_eq!(
            finished(&proxy, 1).last().unwrap(),
            "#1 trap in log",
            "{name}"
        );
        next_request_reloads(&proxy);
    }
}

#[test]
fn a_trap_to_an_http10_client_closes() {
    let upstream = Upstream::start();
    let req = request("GET / HTTP/1.0", &["x-trap-at: request-headers"], None);
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let got = wire(proxy.addr(), &req, Duration::from_secs(3));
        assert_eq!(
            got.bytes,
            "HTTP/1.0 503 Service Unavailable\r\nvia: HTTP/1.0 jwt-proxy\r\ndate: *\r\n\
             server: envoy\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            "{name}"
        );
        assert!(got.closed, "{name}");
    }
}

#[test]
fn a_trap_to_an_http2_client_is_an_empty_503() {
    let upstream = Upstream::start();
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let r = jwt_proxy_tests::h2::request(
            proxy.addr(),
            "GET",
            "/",
            &[("x-trap-at", "request-headers")],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 503, "{name}");
        assert!(r.body.is_empty(), "{name}");
        let names: Vec<&str> = r.headers.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["via", "date", "server"], "{name}");
        assert_eq!(r.headers["via"], "HTTP/2 jwt-proxy", "{name}");
    }
}

/// A difference kept (see `reply::from_the_response_body_after_the_head_...`):
/// a trap in the response body resets the stream on both; Envoy has sent the
/// head by then, the test host has not.
#[test]
fn a_trap_in_the_response_body_resets_the_stream() {
    let upstream = Upstream::start();
    let req = request(
        "POST / HTTP/1.1",
        &["x-trap-at: response-body"],
        Some("hello"),
    );
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let got = wire(proxy.addr(), &req, Duration::from_secs(3));
        assert!(got.closed, "{name}");
        assert!(!got.bytes.contains("hello"), "{name}");
        match proxy {
            Proxy::Envoy(_) => assert!(got.bytes.starts_with("HTTP/1.1 200 OK\r\n"), "{name}"),
            Proxy::Host(_) => assert_eq!(got.bytes, "", "{name}"),
        }
        let seen = lines(&proxy, 1);
        assert_eq!(
            seen[seen.len() - 2..],
            [
                "#1 response body size=5 eos=false",
                "#1 trap in response-body"
            ],
            "{name}"
        );
        next_request_reloads(&proxy);
    }
}

/// A request in flight on the VM when another one traps: it gets no callback
/// again (no body callback, no `on_log`) and its connection is cut.
#[test]
fn a_request_in_flight_on_the_failed_vm_is_cut() {
    let upstream = Upstream::start();
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let mut a = TcpStream::connect(proxy.addr()).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        a.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
            .unwrap();
        // The echo streams the first half back.
        proxy.wait_for_lines("#1 response body size=5 eos=false", 1);
        let b = wire(
            proxy.addr(),
            &request("GET / HTTP/1.1", &["x-trap-at: request-headers"], None),
            Duration::ZERO,
        );
        assert_eq!(b.bytes, FAILED, "{name}");
        a.write_all(b"world").unwrap();
        let mut got = Vec::new();
        let _ = a.read_to_end(&mut got);
        let got = String::from_utf8_lossy(&got).into_owned();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{name}: {got}");
        assert!(
            got.ends_with("\r\n\r\nhello"),
            "{name}: cut after the first half: {got}"
        );
        next_request_reloads(&proxy);
        assert_eq!(
            failed_vm_lines(&proxy, 1),
            [
                "#1 request headers eos=false",
                "#1 request body size=5 eos=false",
                "#1 response headers eos=false [upstream]",
                "#1 response body size=5 eos=false",
            ],
            "{name}"
        );
        assert_eq!(
            failed_vm_lines(&proxy, 2).last().unwrap(),
            "#2 trap in request-headers"
        );
    }
}
