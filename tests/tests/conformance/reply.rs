//! Local replies (`conf_reply`, `proxy_send_local_response`): the exact bytes
//! Envoy 1.40 sends with `envoy/envoy.yaml` (only `date`'s value is
//! normalised), from each callback, with and without a body, with the
//! filter's own headers, gRPC replies, HTTP/1.0 and HTTP/2 clients; and what
//! the filter sees afterwards: its local reply through `on_response_headers` /
//! `on_response_body` (not when it replaced an upstream response), and
//! `response.code` / `response.code_details` in `on_log`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::{Upstream, h2, wasm};

pub(crate) fn setup(upstream: &Upstream) -> Setup {
    Setup {
        wasm: wasm("conf_reply"),
        config: "{}".to_owned(),
        ..Setup::new(upstream.addr())
    }
}

/// What came back on one connection: the head and body bytes exactly (with
/// `date: <now>` as `date: *`), and whether the proxy closed the connection
/// within `linger` after the response.
pub(crate) struct Wire {
    pub(crate) bytes: String,
    pub(crate) closed: bool,
}

/// Sends `request` on a new connection; reads one response (its body by
/// `content-length`, else until the connection closes), then waits up to
/// `linger` for the proxy to close.
pub(crate) fn wire(addr: SocketAddr, request: &[u8], linger: Duration) -> Wire {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    conn.write_all(request).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    let mut closed = false;
    let mut chunk = [0u8; 16384];
    let complete = |buf: &[u8]| -> bool {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse::<usize>().ok());
        let head_request = request.starts_with(b"HEAD ");
        match length {
            Some(n) => head_request || buf.len() >= end + 4 + n,
            None => false,
        }
    };
    while !closed && !complete(&buf) && Instant::now() < deadline {
        match conn.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => closed = true,
        }
    }
    let linger_until = Instant::now() + linger;
    while !closed && Instant::now() < linger_until {
        match conn.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => closed = true,
        }
    }
    Wire {
        bytes: normalise(&String::from_utf8_lossy(&buf)),
        closed,
    }
}

/// `date: <an HTTP date>` as `date: *`.
fn normalise(text: &str) -> String {
    text.split("\r\n")
        .map(|l| match l.strip_prefix("date: ") {
            Some(v) if v.ends_with(" GMT") => "date: *",
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A request from header lines (`\r\n` added), with `body` and its length
/// when `body` is given.
pub(crate) fn request(line: &str, headers: &[&str], body: Option<&str>) -> Vec<u8> {
    let mut r = format!("{line}\r\n");
    if !line.ends_with("HTTP/1.0") {
        r.push_str("Host: x\r\n");
    }
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        r.push_str("\r\n");
    }
    r.into_bytes()
}

/// The fixture's lines for request `#n` (its first word after `#n `), with
/// response header lists that show an upstream response (random request id,
/// the upstream's header order) cut to `[upstream]`.
pub(crate) fn lines(proxy: &Proxy, n: u32) -> Vec<String> {
    let prefix = format!("#{n} ");
    proxy
        .filter_log()
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| match l.split_once(" [") {
            Some((head, rest)) if rest.contains("x-echo-") => format!("{head} [upstream]"),
            _ => l,
        })
        .collect()
}

/// Waits for request `#n`'s `on_log` line, then returns its lines.
pub(crate) fn finished(proxy: &Proxy, n: u32) -> Vec<String> {
    proxy.wait_for_lines(&format!("#{n} log code="), 1);
    lines(proxy, n)
}

const LINE: &str = "GET / HTTP/1.1";
const NO_LINGER: Duration = Duration::ZERO;

/// One request per new proxy: the bytes and the filter's lines, on both hosts.
fn check(req: &[u8], want: &str, want_lines: &[&str]) {
    let upstream = Upstream::start();
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let got = wire(proxy.addr(), req, NO_LINGER);
        assert_eq!(got.bytes, want, "{name}");
        assert_eq!(finished(&proxy, 1), want_lines, "{name}");
    }
    // A reply from the request headers never reaches the upstream.
    if !want_lines.iter().any(|l| l.contains("request body")) {
        assert!(
            upstream.seen().is_empty(),
            "a local reply reached the upstream"
        );
    }
}

#[test]
fn without_a_body() {
    check(
        &request(LINE, &["x-reply-at: request-headers"], None),
        "HTTP/1.1 403 Forbidden\r\nvia: HTTP/1.1 jwt-proxy\r\ndate: *\r\nserver: envoy\r\n\
         content-length: 0\r\n\r\n",
        &[
            "#1 request headers eos=true",
            "#1 local reply in request-headers",
            "#1 response headers eos=true [:status: 403; via: HTTP/1.1 jwt-proxy]",
            "#1 log code=403 details=none",
        ],
    );
}

#[test]
fn with_a_body() {
    check(
        &request(
            LINE,
            &["x-reply-at: request-headers", "x-reply-body: nope"],
            None,
        ),
        "HTTP/1.1 403 Forbidden\r\nvia: HTTP/1.1 jwt-proxy\r\ncontent-length: 4\r\n\
         content-type: text/plain\r\ndate: *\r\nserver: envoy\r\n\r\nnope",
        &[
            "#1 request headers eos=true",
            "#1 local reply in request-headers",
            "#1 response headers eos=false [:status: 403; via: HTTP/1.1 jwt-proxy; \
             content-length: 4; content-type: text/plain]",
            "#1 response body size=4 eos=true",
            "#1 log code=403 details=none",
        ],
    );
}

#[test]
fn with_the_filters_headers() {
    // Its own content-type stays; repeated headers stay; a pseudo-header is
    // dropped; its via joins the route's; its server is overwritten.
    check(
        &request(
            LINE,
            &[
                "x-reply-at: request-headers",
                "x-reply-status: 401",
                "x-reply-body: {\"e\":1}",
                "x-reply-header: content-type: application/json",
                "x-reply-header: x-a: 1",
                "x-reply-header: x-a: 2",
                "x-reply-header: :status: 200",
                "x-reply-header: server: mine",
                "x-reply-header: via: hers",
            ],
            None,
        ),
        "HTTP/1.1 401 Unauthorized\r\nvia: HTTP/1.1 jwt-proxy,hers\r\n\
         content-type: application/json\r\nx-a: 1\r\nx-a: 2\r\nserver: envoy\r\n\
         content-length: 7\r\ndate: *\r\n\r\n{\"e\":1}",
        &[
            "#1 request headers eos=true",
            "#1 local reply in request-headers",
            "#1 response headers eos=false [:status: 401; via: HTTP/1.1 jwt-proxy,hers; \
             content-type: application/json; x-a: 1; x-a: 2; server: mine; content-length: 7]",
            "#1 response body size=7 eos=true",
            "#1 log code=401 details=none",
        ],
    );
}

#[test]
fn without_a_body_its_length_type_and_hop_headers_go() {
    check(
        &request(
            LINE,
            &[
                "x-reply-at: request-headers",
                "x-reply-header: content-length: 99",
                "x-reply-header: content-type: text/html",
                "x-reply-header: date: yesterday",
                "x-reply-header: connection: close",
                "x-reply-header: X-Upper: U",
            ],
            None,
        ),
        "HTTP/1.1 403 Forbidden\r\nvia: HTTP/1.1 jwt-proxy\r\ndate: yesterday\r\n\
         x-upper: U\r\nserver: envoy\r\ncontent-length: 0\r\n\r\n",
        &[
            "#1 request headers eos=true",
            "#1 local reply in request-headers",
            "#1 response headers eos=true [:status: 403; via: HTTP/1.1 jwt-proxy; \
             date: yesterday; connection: close; x-upper: U]",
            "#1 log code=403 details=none",
        ],
    );
}

#[test]
fn the_filters_length_and_framing_are_replaced() {
    check(
        &request(
            LINE,
            &[
                "x-reply-at: request-headers",
                "x-reply-body: b",
                "x-reply-header: content-length: 99",
                "x-reply-header: transfer-encoding: chunked",
            ],
            None,
        ),
        "HTTP/1.1 403 Forbidden\r\nvia: HTTP/1.1 jwt-proxy\r\ncontent-length: 1\r\n\
         content-type: text/plain\r\ndate: *\r\nserver: envoy\r\n\r\nb",
        &[
            "#1 request headers eos=true",
            "#1 local reply in request-headers",
            "#1 response headers eos=false [:status: 403; via: HTTP/1.1 jwt-proxy; \
             content-length: 1; transfer-encoding: chunked; content-type: text/plain]",
            "#1 response body size=1 eos=true",
            "#1 log code=403 details=none",
        ],
    );
}

/// A difference kept: Envoy keeps the filter's header order exactly; the test
/// host (hyper's `HeaderMap`) writes the values of one name together.
#[test]
fn interleaved_repeated_headers() {
    let upstream = Upstream::start();
    let req = request(
        LINE,
        &[
            "x-reply-at: request-headers",
            "x-reply-header: x-a: 1",
            "x-reply-header: x-b: 2",
            "x-reply-header: x-a: 3",
        ],
        None,
    );
    for proxy in setup(&upstream).both() {
        let got = wire(proxy.addr(), &req, NO_LINGER);
        let order = match proxy {
            Proxy::Envoy(_) => "x-a: 1\r\nx-b: 2\r\nx-a: 3",
            Proxy::Host(_) => "x-a: 1\r\nx-a: 3\r\nx-b: 2",
        };
        let want = format!(
            "HTTP/1.1 403 Forbidden\r\nvia: HTTP/1.1 jwt-proxy\r\n{order}\r\n\
             date: *\r\nserver: envoy\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(got.bytes, want, "{}", proxy.name());
        // The filter sees its order on both.
        assert!(
            finished(&proxy, 1).contains(
                &"#1 response headers eos=true [:status: 403; via: HTTP/1.1 jwt-proxy; \
                  x-a: 1; x-b: 2; x-a: 3]"
                    .to_owned()
            ),
            "{}",
            proxy.name()
        );
    }
}

#[test]
fn a_grpc_status_to_a_plain_request_is_a_plain_reply() {
    check(
        &request(
            LINE,
            &[
                "x-reply-at: request-headers",
                "x-reply-grpc: 7",
                "x-reply-body: denied",
                "x-reply-header: x-md: v",
            ],
            None,
        ),
        "HTTP/1.1 200 OK\r\nvia: HTTP/1.1 jwt-proxy\r\nx-md: v\r\ncontent-length: 6\r\n\
         content-type: text/plain\r\ndate: *\r\nserver: envoy\r\n\r\ndenied",
        &[
            "#1 request headers eos=true",
            "#1 local reply in request-headers",
            "#1 response headers eos=false [:status: 200; via: HTTP/1.1 jwt-proxy; x-md: v; \
             content-length: 6; content-type: text/plain]",
            "#1 response body size=6 eos=true",
            "#1 log code=200 details=none",
        ],
    );
}

#[test]
fn a_grpc_request_gets_a_trailers_only_reply() {
    check(
        &request(
            "POST / HTTP/1.1",
            &[
                "content-type: application/grpc",
                "x-reply-at: request-headers",
                "x-reply-grpc: 7",
                "x-reply-body: denied",
                "x-reply-header: x-md: v",
            ],
            Some(""),
        ),
        "HTTP/1.1 200 OK\r\nvia: HTTP/1.1 jwt-proxy\r\nx-md: v\r\n\
         content-type: application/grpc\r\ngrpc-status: 7\r\ngrpc-message: denied\r\n\
         date: *\r\nserver: envoy\r\ncontent-length: 0\r\n\r\n",
        &[
            "#1 request headers eos=true",
            "#1 local reply in request-headers",
            "#1 response headers eos=true [:status: 200; via: HTTP/1.1 jwt-proxy; x-md: v; \
             content-type: application/grpc; grpc-status: 7; grpc-message: denied]",
            "#1 log code=200 details=none",
        ],
    );
}

#[test]
fn a_grpc_request_gets_the_http_status_mapped() {
    check(
        &request(
            "POST / HTTP/1.1",
            &[
                "content-type: application/grpc",
                "x-reply-at: request-headers",
                "x-reply-status: 401",
                "x-reply-body: nope",
            ],
            Some(""),
        ),
        "HTTP/1.1 200 OK\r\nvia: HTTP/1.1 jwt-proxy\r\ncontent-type: application/grpc\r\n\
         grpc-status: 16\r\ngrpc-message: nope\r\ndate: *\r\nserver: envoy\r\n\
         content-length: 0\r\n\r\n",
        &[
            "#1 request headers eos=true",
            "#1 local reply in request-headers",
            "#1 response headers eos=true [:status: 200; via: HTTP/1.1 jwt-proxy; \
             content-type: application/grpc; grpc-status: 16; grpc-message: nope]",
            "#1 log code=200 details=none",
        ],
    );
}

/// Answered before the request's end: Envoy closes the HTTP/1 connection.
#[test]
fn from_the_request_body() {
    check(
        &request(
            "POST / HTTP/1.1",
            &["x-reply-at: request-body", "x-reply-body: body-reply"],
            Some("hello"),
        ),
        "HTTP/1.1 403 Forbidden\r\nvia: HTTP/1.1 jwt-proxy\r\ncontent-length: 10\r\n\
         content-type: text/plain\r\ndate: *\r\nserver: envoy\r\nconnection: close\r\n\r\n\
         body-reply",
        &[
            "#1 request headers eos=false",
            "#1 request body size=5 eos=false",
            "#1 local reply in request-body",
            "#1 response headers eos=false [:status: 403; via: HTTP/1.1 jwt-proxy; \
             content-length: 10; content-type: text/plain]",
            "#1 response body size=10 eos=true",
            "#1 log code=403 details=none",
        ],
    );
}

#[test]
fn from_the_response_headers_it_replaces_the_upstreams() {
    let upstream = Upstream::start();
    let req = request(
        LINE,
        &[
            "x-reply-at: response-headers",
            "x-reply-status: 502",
            "x-reply-body: replaced",
        ],
        None,
    );
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let got = wire(proxy.addr(), &req, NO_LINGER);
        assert_eq!(
            got.bytes,
            "HTTP/1.1 502 Bad Gateway\r\nvia: HTTP/1.1 jwt-proxy\r\ncontent-length: 8\r\n\
             content-type: text/plain\r\ndate: *\r\nserver: envoy\r\n\r\nreplaced",
            "{name}"
        );
        // Not through the response callbacks a second time.
        assert_eq!(
            finished(&proxy, 1),
            [
                "#1 request headers eos=true",
                "#1 response headers eos=true [upstream]",
                "#1 local reply in response-headers",
                "#1 log code=502 details=none",
            ],
            "{name}"
        );
    }
    assert_eq!(upstream.seen().len(), 2);
}

#[test]
fn an_upstream_response_has_details_via_upstream_and_server_envoy() {
    let upstream = Upstream::start();
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let got = wire(proxy.addr(), &request(LINE, &[], None), NO_LINGER);
        assert!(got.bytes.starts_with("HTTP/1.1 200 OK\r\n"), "{name}");
        // Envoy overwrites the upstream's `server` (none here) after the filters.
        assert!(
            got.bytes
                .contains("\r\nvia: HTTP/1.1 jwt-proxy\r\nserver: envoy\r\n"),
            "{name}: {}",
            got.bytes
        );
        assert_eq!(
            finished(&proxy, 1).last().unwrap(),
            "#1 log code=200 details=via_upstream",
            "{name}"
        );
    }
}

/// A difference kept (the test host's body framing waits for the first body
/// callback before the head leaves): a local reply after the response head
/// was decided resets the stream on both, but Envoy has sent the head by
/// then (and closes after its 1 s delayed close), the test host sends none.
#[test]
fn from_the_response_body_after_the_head_the_stream_is_reset() {
    let upstream = Upstream::start();
    let req = request(
        "POST / HTTP/1.1",
        &["x-reply-at: response-body", "x-reply-body: late"],
        Some("hello"),
    );
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let got = wire(proxy.addr(), &req, Duration::from_secs(3));
        assert!(got.closed, "{name}");
        assert!(
            got.bytes.ends_with("\r\n\r\n") || got.bytes.is_empty(),
            "{name}"
        );
        match proxy {
            Proxy::Envoy(_) => assert!(got.bytes.starts_with("HTTP/1.1 200 OK\r\n"), "{name}"),
            Proxy::Host(_) => assert_eq!(got.bytes, "", "{name}"),
        }
        let lines = finished(&proxy, 1);
        assert_eq!(
            lines[lines.len() - 3..],
            [
                "#1 response body size=5 eos=false",
                "#1 local reply in response-body",
                "#1 log code=200 details=none",
            ],
            "{name}"
        );
    }
}

#[test]
fn to_http10_clients_and_the_connection_closes() {
    let upstream = Upstream::start();
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let empty = wire(
            proxy.addr(),
            &request("GET / HTTP/1.0", &["x-reply-at: request-headers"], None),
            Duration::from_secs(3),
        );
        assert_eq!(
            empty.bytes,
            "HTTP/1.0 403 Forbidden\r\nvia: HTTP/1.0 jwt-proxy\r\ndate: *\r\nserver: envoy\r\n\
             connection: close\r\ncontent-length: 0\r\n\r\n",
            "{name}"
        );
        assert!(empty.closed, "{name}");
        let body = wire(
            proxy.addr(),
            &request(
                "GET / HTTP/1.0",
                &["x-reply-at: request-headers", "x-reply-body: ten"],
                None,
            ),
            Duration::from_secs(3),
        );
        assert_eq!(
            body.bytes,
            "HTTP/1.0 403 Forbidden\r\nvia: HTTP/1.0 jwt-proxy\r\ncontent-length: 3\r\n\
             content-type: text/plain\r\ndate: *\r\nserver: envoy\r\nconnection: close\r\n\r\nten",
            "{name}"
        );
        assert!(body.closed, "{name}");
        assert_eq!(
            finished(&proxy, 2)[2],
            "#2 response headers eos=false [:status: 403; via: HTTP/1.0 jwt-proxy; \
             content-length: 3; content-type: text/plain]",
            "{name}"
        );
    }
}

#[test]
fn to_http2_clients() {
    let upstream = Upstream::start();
    for proxy in setup(&upstream).both() {
        let name = proxy.name();
        let headers = |r: &h2::Response| -> Vec<(String, String)> {
            r.headers
                .iter()
                .filter(|(n, _)| *n != "date")
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                .collect()
        };
        let empty = h2::request(
            proxy.addr(),
            "GET",
            "/",
            &[("x-reply-at", "request-headers")],
            b"",
        )
        .unwrap();
        assert_eq!(empty.status, 403, "{name}");
        assert!(empty.headers.contains_key("date"), "{name}");
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        // No content-length on an empty HTTP/2 reply.
        assert_eq!(
            headers(&empty),
            pairs(&[("via", "HTTP/2 jwt-proxy"), ("server", "envoy")]),
            "{name}"
        );
        let body = h2::request(
            proxy.addr(),
            "GET",
            "/",
            &[("x-reply-at", "request-headers"), ("x-reply-body", "ten")],
            b"",
        )
        .unwrap();
        assert_eq!((body.status, &body.body[..]), (403, &b"ten"[..]), "{name}");
        assert_eq!(
            headers(&body),
            pairs(&[
                ("via", "HTTP/2 jwt-proxy"),
                ("content-length", "3"),
                ("content-type", "text/plain"),
                ("server", "envoy"),
            ]),
            "{name}"
        );
        assert_eq!(
            finished(&proxy, 2)[2],
            "#2 response headers eos=false [:status: 403; via: HTTP/2 jwt-proxy; \
             content-length: 3; content-type: text/plain]",
            "{name}"
        );
    }
}
