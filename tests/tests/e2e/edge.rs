//! Gateway duties (SPEC section 7): each scenario is written once and run
//! against the real Envoy binary and the test host, with the same assertions.
//! Raw-socket clients send the exact bytes, where an HTTP library would
//! normalise them. Tests named `regression_*` are the divergences issue 6
//! found (a token under another spelling, the test host forwarding what Envoy
//! refuses, ...).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jwt_proxy_tests::proxy::{Limits, Proxy, Setup};
use jwt_proxy_tests::raw::{Conn, Response, bare, exchange, post};
use jwt_proxy_tests::{SECRET, Seen, Upstream, h2, verify};
use serde_json::Value;

/// The `Allow` of the proxy's own answers to `OPTIONS` and `TRACE`.
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";

fn status(proxy: &Proxy) -> Value {
    let resp = exchange(proxy.addr(), &bare("GET", "/status", &[]));
    serde_json::from_slice(&resp.body).unwrap()
}

/// Sends `request` on a new connection: the response (if any) and whether
/// the proxy then closed the connection.
fn send(addr: SocketAddr, request: &[u8]) -> (Option<Response>, bool) {
    let mut conn = Conn::connect(addr).unwrap();
    // A proxy may refuse before it has read everything: a failed write is fine.
    let _ = conn.send(request);
    let resp = conn.read_response(request.starts_with(b"HEAD ")).ok();
    let closed = conn.closed_by_peer(Duration::from_secs(3));
    (resp, closed)
}

/// Asserts that both proxies answer `request` with `want` and close the
/// connection (`close`), and that nothing reached the upstream.
fn refused_on_both(request: &[u8], want: u16, close: bool) {
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let (resp, closed) = send(proxy.addr(), request);
        let what = format!("{}: {:?}", proxy.name(), String::from_utf8_lossy(request));
        let resp = resp.unwrap_or_else(|| panic!("{what}: no response"));
        assert_eq!(resp.status, want, "{what}: {}", resp.text());
        assert_eq!(closed, close, "{what}: connection closed?");
        assert!(upstream.seen().is_empty(), "{what}: forwarded");
        assert_eq!(
            status(&proxy)["requests_processed"],
            0,
            "{what}: counted as forwarded"
        );
    }
}

/// The upstream's view of one request sent through each proxy.
fn seen_through_both(setup: &Setup, request: &[u8]) -> Vec<(String, Response, Seen)> {
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

#[test]
fn request_smuggling_shapes_are_refused_and_the_connection_closed() {
    let h = "Host: 127.0.0.1\r\n";
    let cases: [(&str, String, u16); 12] = [
        (
            "content-length with chunked",
            format!(
                "POST / HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            "chunked with content-length",
            format!(
                "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            "final coding not chunked",
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
            501,
        ),
        (
            "a coding the proxy does not implement",
            format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            501,
        ),
        (
            "two transfer-encoding lines",
            format!(
                "POST / HTTP/1.1\r\n{h}Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            501,
        ),
        (
            "differing content-lengths",
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}x"),
            400,
        ),
        (
            "a content-length list",
            format!("POST / HTTP/1.1\r\n{h}Content-Length: 2, 2\r\n\r\n{{}}"),
            400,
        ),
        (
            "whitespace before a colon",
            format!("POST / HTTP/1.1\r\n{h}Content-Length : 2\r\n\r\n{{}}"),
            400,
        ),
        (
            "a tab before a colon",
            format!("GET / HTTP/1.1\r\n{h}X-A\t: 1\r\n\r\n"),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            "GET / HTTP/1.1\r\n\r\n".to_owned(),
            400,
        ),
        (
            "an unknown method",
            format!("FOO / HTTP/1.1\r\n{h}\r\n"),
            400,
        ),
        (
            "M-SEARCH (Envoy's codec knows MSEARCH)",
            format!("M-SEARCH / HTTP/1.1\r\n{h}\r\n"),
            400,
        ),
    ];
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        for (what, request, want) in &cases {
            let (resp, closed) = send(proxy.addr(), request.as_bytes());
            let resp = resp.unwrap_or_else(|| panic!("{}: {what}: no response", proxy.name()));
            assert_eq!(resp.status, *want, "{}: {what}", proxy.name());
            assert!(closed, "{}: {what}: connection left open", proxy.name());
        }
        assert!(upstream.seen().is_empty(), "{}: forwarded", proxy.name());
        assert_eq!(status(&proxy)["requests_processed"], 0, "{}", proxy.name());
    }
}

#[test]
fn regression_test_host_forwarded_content_length_with_chunked() {
    refused_on_both(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        true,
    );
}

#[test]
fn regression_test_host_served_http11_without_host() {
    refused_on_both(b"GET / HTTP/1.1\r\n\r\n", 400, true);
}

#[test]
fn regression_lowercase_post_was_forwarded_unsigned() {
    // HTTP/1: Envoy's codec refuses it, and so does the test host.
    let mut request = post("/", &[], b"{}");
    request[..4].copy_from_slice(b"post");
    refused_on_both(&request, 400, true);
}

#[test]
fn regression_lowercase_post_over_http2_is_refused_by_the_filter() {
    // HTTP/2 has no codec rule on method case: the filter refuses a case
    // variant of a signed method, never forwards it unsigned.
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        for method in ["post", "Post"] {
            let resp = h2::request(proxy.addr(), method, "/h2", &[], b"{}").unwrap();
            assert_eq!(resp.status, 400, "{}: {method}", proxy.name());
        }
        assert!(upstream.seen().is_empty(), "{}: forwarded", proxy.name());
    }
}

#[test]
fn http2_prior_knowledge_is_served_and_every_post_signed() {
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let forged = [("x-my-jwt", "forged"), ("x_my_jwt", "forged")];
        let resp = h2::request(proxy.addr(), "POST", "/h2", &forged, br#"{"a":1}"#).unwrap();
        assert_eq!(resp.status, 200, "{}", proxy.name());
        assert_eq!(resp.body, br#"{"a":1}"#, "{}", proxy.name());
        let seen = upstream.last();
        let tokens = seen.all("x-my-jwt");
        assert_eq!(tokens.len(), 1, "{}: {tokens:?}", proxy.name());
        verify(&tokens[0], SECRET.as_bytes());
        assert!(seen.all("x_my_jwt").is_empty(), "{}", proxy.name());
        assert_eq!(seen.all("via"), ["HTTP/2 jwt-proxy"], "{}", proxy.name());
        assert_eq!(
            resp.headers.get("via").map(|v| v.to_str().unwrap()),
            Some("HTTP/1.1 jwt-proxy"),
            "{}",
            proxy.name()
        );
        assert_eq!(proxy.stat("http2.dropped_headers_with_underscores"), 1);
    }
}

#[test]
fn regression_underscore_spelling_of_the_token_header_never_reaches_the_upstream() {
    // CGI-style upstreams read `x_my_jwt` as `x-my-jwt`: the client would
    // choose the token. Every header name with `_` is dropped; the request is
    // still served and signed.
    let request = post(
        "/u",
        &[
            "x_my_jwt: forged",
            "X_My_Jwt: forged",
            "x-ok: 1",
            "user_id: 7",
        ],
        b"{}",
    );
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let resp = exchange(proxy.addr(), &request);
        assert_eq!(resp.status, 200, "{}", proxy.name());
        let seen = upstream.last();
        let names: Vec<&str> = seen.headers.keys().map(http::HeaderName::as_str).collect();
        assert!(
            names.iter().all(|n| !n.contains('_')),
            "{}: {names:?}",
            proxy.name()
        );
        assert_eq!(seen.all("x-ok"), ["1"], "{}", proxy.name());
        verify(&seen.one("x-my-jwt").unwrap(), SECRET.as_bytes());
        assert_eq!(
            proxy.stat("http1.dropped_headers_with_underscores"),
            3,
            "{}",
            proxy.name()
        );
    }
}

#[test]
fn header_names_with_underscore_are_refused_at_start_on_both() {
    let upstream = Upstream::start();
    for field in ["header", "user_header"] {
        let config = format!(r#"{{"secret":"{SECRET}","{field}":"x_user"}}"#);
        let setup = Setup {
            config: config.clone(),
            ..Setup::new(upstream.addr())
        };
        let (code, log) = jwt_proxy_tests::EnvoyBuilder::new(upstream.addr())
            .config(config.clone())
            .start_expecting_failure();
        assert!(!code.success(), "envoy started with {config}");
        let line = log
            .lines()
            .find(|l| l.contains("jwt-proxy refuses to start"))
            .unwrap_or_else(|| panic!("no refusal for {config}:\n{log}"));
        assert!(line.contains(&format!("`{field}`")), "{line}");
        let err = test_host::HostBuilder::new(setup.wasm.clone())
            .plugin_config(config.into_bytes())
            .instantiate()
            .err()
            .unwrap_or_else(|| panic!("the test host started with `{field}` = x_user"));
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
        assert!(!log.contains(SECRET) && !err.to_string().contains(SECRET));
    }
}

#[test]
fn regression_no_via_on_requests_or_responses() {
    let setup = Setup::new(jwt_proxy_tests::dead_addr());
    let request = post("/v", &["Via: 1.0 front"], b"{}");
    for (name, resp, seen) in seen_through_both(&setup, &request) {
        assert_eq!(
            seen.all("via").join(","),
            "1.0 front,HTTP/1.1 jwt-proxy",
            "{name}: the request's Via"
        );
        assert_eq!(resp.all("via"), ["HTTP/1.1 jwt-proxy"], "{name}");
    }
    let request = b"POST /v HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}";
    for (name, resp, seen) in seen_through_both(&setup, request) {
        assert_eq!(seen.all("via"), ["HTTP/1.0 jwt-proxy"], "{name}");
        assert_eq!(resp.version, "HTTP/1.0", "{name}");
        verify(&seen.one("x-my-jwt").unwrap(), SECRET.as_bytes());
    }
}

#[test]
fn local_replies_carry_no_via() {
    // The proxy's own answers are not forwarded messages (RFC 9110 7.6.3).
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let resp = exchange(proxy.addr(), &bare("GET", "/status", &[]));
        assert_eq!(resp.status, 200);
        assert!(
            resp.all("via").is_empty(),
            "{}: {:?}",
            proxy.name(),
            resp.headers
        );
    }
}

#[test]
fn regression_max_forwards_ignored_and_trace_forwarded() {
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        let before = upstream.seen().len();
        let zero = exchange(proxy.addr(), &bare("OPTIONS", "/o", &["Max-Forwards: 0"]));
        assert_eq!(
            (zero.status, zero.header("allow")),
            (200, Some(ALLOW)),
            "{name}"
        );
        assert!(zero.body.is_empty(), "{name}");
        let trace = exchange(proxy.addr(), &bare("TRACE", "/t", &["Cookie: secret=1"]));
        assert_eq!(
            (trace.status, trace.header("allow")),
            (405, Some(ALLOW)),
            "{name}"
        );
        assert!(!trace.text().contains("secret"), "{name}: TRACE reflected");
        assert_eq!(upstream.seen().len(), before, "{name}: forwarded");

        let five = exchange(proxy.addr(), &bare("OPTIONS", "/o", &["Max-Forwards: 5"]));
        assert_eq!(five.status, 200, "{name}");
        assert_eq!(upstream.last().all("max-forwards"), ["4"], "{name}");
        let bad = exchange(proxy.addr(), &bare("OPTIONS", "/o", &["Max-Forwards: x1"]));
        assert_eq!(bad.status, 200, "{name}");
        assert_eq!(upstream.last().all("max-forwards"), ["x1"], "{name}");
        // Only OPTIONS obeys Max-Forwards.
        exchange(proxy.addr(), &bare("GET", "/g", &["Max-Forwards: 0"]));
        assert_eq!(upstream.last().all("max-forwards"), ["0"], "{name}");
        assert_eq!(upstream.seen().len(), before + 3, "{name}");
        assert_eq!(status(&proxy)["requests_processed"], 3, "{name}");
    }
}

#[test]
fn regression_options_star_and_connect_answered_unlike_envoy() {
    // Envoy has no route for either: 404 (CONNECT also closes).
    refused_on_both(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 404, false);
    refused_on_both(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        404,
        true,
    );
}

#[test]
fn regression_websocket_upgrades_were_proxied() {
    refused_on_both(
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        403,
        true,
    );
}

#[test]
fn upgrade_h2c_is_ignored_and_served_over_http11() {
    let request = bare(
        "GET",
        "/h2c",
        &[
            "Connection: Upgrade, HTTP2-Settings",
            "Upgrade: h2c",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        ],
    );
    for (name, resp, seen) in seen_through_both(&Setup::new(jwt_proxy_tests::dead_addr()), &request)
    {
        assert_eq!(resp.version, "HTTP/1.1", "{name}");
        assert!(seen.all("upgrade").is_empty(), "{name}");
        assert!(seen.all("http2-settings").is_empty(), "{name}");
    }
}

#[test]
fn regression_no_client_address_and_envoy_internal_headers_upstream() {
    let request = post(
        "/x",
        &[
            "X-Forwarded-For: 203.0.113.9",
            "X-Forwarded-Proto: https",
            "X-Envoy-Upstream-Alt-Stat-Name: x",
            "x-envoy-retry-on: 5xx",
        ],
        b"{}",
    );
    let setup = Setup::new(jwt_proxy_tests::dead_addr());
    for (name, _, seen) in seen_through_both(&setup, &request) {
        assert_eq!(
            seen.all("x-forwarded-for"),
            ["203.0.113.9,127.0.0.1"],
            "{name}"
        );
        assert_eq!(seen.all("x-forwarded-proto"), ["http"], "{name}");
        let internal: Vec<&str> = seen
            .headers
            .keys()
            .map(http::HeaderName::as_str)
            .filter(|n| n.starts_with("x-envoy-"))
            .collect();
        assert!(internal.is_empty(), "{name}: {internal:?}");
    }
    for (name, _, seen) in seen_through_both(&setup, &post("/y", &[], b"{}")) {
        assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"], "{name}");
    }
}

#[test]
fn regression_slow_client_trickling_a_head_held_the_connection() {
    let upstream = Upstream::start();
    let setup = Setup {
        limits: Limits {
            request_headers_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Setup::new(upstream.addr())
    };
    for proxy in setup.both() {
        let mut conn = Conn::connect(proxy.addr()).unwrap();
        let started = Instant::now();
        let mut answer = None;
        // One header line every 300 ms, for at most 5 s.
        for i in 0..16 {
            let line = if i == 0 {
                "POST /slow HTTP/1.1\r\nHost: a\r\n".to_owned()
            } else {
                format!("X-Line-{i}: {i}\r\n")
            };
            if conn.send(line.as_bytes()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            if started.elapsed() > Duration::from_millis(1500) {
                answer = conn.read_response(false).ok();
                break;
            }
        }
        let resp = answer.unwrap_or_else(|| panic!("{}: no 408", proxy.name()));
        assert_eq!(resp.status, 408, "{}: {}", proxy.name(), resp.text());
        assert!(
            conn.closed_by_peer(Duration::from_secs(3)),
            "{}",
            proxy.name()
        );
        assert!(upstream.seen().is_empty(), "{}", proxy.name());
    }
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let upstream = Upstream::start();
    let setup = Setup {
        limits: Limits {
            idle_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Setup::new(upstream.addr())
    };
    for proxy in setup.both() {
        let mut conn = Conn::connect(proxy.addr()).unwrap();
        conn.send(&post("/a", &[], b"{}")).unwrap();
        assert_eq!(conn.read_response(false).unwrap().status, 200);
        let idle = Instant::now();
        // Envoy drains an idle HTTP/1 connection before it closes it (its
        // default drain_timeout, 5 s): closed within 1 s + 5 s + slack.
        assert!(
            conn.closed_by_peer(Duration::from_secs(10)),
            "{}: still open",
            proxy.name()
        );
        assert!(
            idle.elapsed() >= Duration::from_millis(900),
            "{}: closed early",
            proxy.name()
        );
    }
}

#[test]
fn connections_past_the_cap_are_closed_at_once() {
    const CAP: usize = 5;
    let upstream = Upstream::start();
    let setup = Setup {
        limits: Limits {
            max_connections: CAP,
            ..Limits::default()
        },
        ..Setup::new(upstream.addr())
    };
    for proxy in setup.both() {
        let mut conns: Vec<Conn> = (0..CAP + 3)
            .map(|_| Conn::connect(proxy.addr()).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let served = conns
            .iter_mut()
            .map(|c| {
                c.send(&bare("GET", "/status", &[])).is_ok()
                    && c.read_response(false).is_ok_and(|r| r.status == 200)
            })
            .filter(|&ok| ok)
            .count();
        assert!(
            (CAP - 1..=CAP).contains(&served),
            "{}: {served} of {} served with a cap of {CAP}",
            proxy.name(),
            CAP + 3
        );
        drop(conns);
        std::thread::sleep(Duration::from_millis(300));
        let resp = exchange(proxy.addr(), &post("/after", &[], b"{}"));
        assert_eq!(resp.status, 200, "{}: the cap is freed", proxy.name());
    }
}

#[test]
fn hundreds_of_idle_connections_never_keep_a_post_from_being_served() {
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let idle: Vec<Conn> = (0..400)
            .map(|_| Conn::connect(proxy.addr()).unwrap())
            .collect();
        // Half of them have started a head and stalled.
        let mut idle = idle;
        for c in idle.iter_mut().step_by(2) {
            c.send(b"POST /stall HTTP/1.1\r\nHost: a\r\n").unwrap();
        }
        let started = Instant::now();
        let resp = exchange(proxy.addr(), &post("/busy", &[], b"{}"));
        assert_eq!(resp.status, 200, "{}", proxy.name());
        verify(&upstream.last().one("x-my-jwt").unwrap(), SECRET.as_bytes());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: {:?}",
            proxy.name(),
            started.elapsed()
        );
        drop(idle);
    }
}
