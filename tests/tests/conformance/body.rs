//! Body callbacks and body size changes (`conf-body`), on Envoy and the test
//! host with the same requests and the same assertions.
//!
//! Chunk boundaries depend on the transport (Envoy's reads, hyper's frames),
//! so where a body spans several reads the tests compare what a filter can
//! rely on: the order of the calls, the total of the sizes, every call before
//! the last with `eos=false`, the last call exactly (an HTTP/1 body ends with
//! an empty `eos=true` call, an HTTP/2 one on its last data), and what
//! `get_http_*_body` returned when the filter buffers (the size accumulates).
//! Short bodies, sent in one piece, are compared line for line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::{Upstream, h2, raw, wait_until, wasm};

fn setup(upstream: SocketAddr) -> Setup {
    let mut setup = Setup::new(upstream);
    setup.wasm = wasm("conf_body");
    setup.config = "{}".to_owned();
    setup
}

/// One body callback as the fixture logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    size: usize,
    eos: bool,
    /// What `get_http_*_body(0, size)` returned (`len=N fnv=H text=..` or `none`).
    seen: String,
}

/// The fixture's lines of one request, split by direction.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lines {
    request: Vec<String>,
    response: Vec<String>,
}

impl Lines {
    fn of(lines: &[String]) -> Lines {
        let keep = |dir: &str| {
            lines
                .iter()
                .filter_map(|l| l.strip_prefix("conf-body "))
                .filter(|l| l.starts_with(dir) || (dir == "request" && !l.starts_with("response")))
                .map(|l| {
                    if l.starts_with("resume ") {
                        "resume".to_owned()
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
        };
        Lines {
            request: keep("request"),
            response: keep("response"),
        }
    }

    fn calls(lines: &[String]) -> Vec<Call> {
        lines
            .iter()
            .filter_map(|l| l.split_once(" body size="))
            .map(|(_, rest)| {
                let (size, rest) = rest.split_once(" eos=").unwrap();
                let (eos, seen) = rest.split_once(' ').unwrap();
                Call {
                    size: size.parse().unwrap(),
                    eos: eos == "true",
                    seen: seen.to_owned(),
                }
            })
            .collect()
    }

    fn request_calls(&self) -> Vec<Call> {
        Self::calls(&self.request)
    }

    fn response_calls(&self) -> Vec<Call> {
        Self::calls(&self.response)
    }
}

/// Runs `send` and returns the fixture's lines it caused, once `done` holds
/// for them (at most 5 s).
fn lines_of(proxy: &Proxy, send: impl FnOnce(), done: impl Fn(&Lines) -> bool) -> Lines {
    let before = proxy.filter_log().len();
    send();
    wait_until(
        Duration::from_secs(10),
        format_args!("{}: the fixture's lines", proxy.name()),
        || {
            let lines = Lines::of(&proxy.filter_log()[before..]);
            done(&lines).then_some(lines)
        },
    )
}

/// The response side ended (its last body call, or headers with eos).
fn response_ended(l: &Lines) -> bool {
    l.response
        .iter()
        .any(|x| x.contains("eos=true") || x.contains("trailers"))
}

/// The data calls of an HTTP/1 body: each before the last has `eos=false`,
/// the last is the empty end-of-stream call; returns the total size.
fn http1_shape(calls: &[Call], what: &str) -> usize {
    let (last, data) = calls
        .split_last()
        .unwrap_or_else(|| panic!("{what}: no body call"));
    assert_eq!(
        last,
        &Call {
            size: 0,
            eos: true,
            seen: "none".into()
        },
        "{what}: the last call"
    );
    assert!(
        data.iter().all(|c| !c.eos && c.size > 0),
        "{what}: {calls:?}"
    );
    data.iter().map(|c| c.size).sum()
}

/// FNV-1a, as the fixture logs it.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn text(call: &Call) -> &str {
    call.seen
        .split_once("text=\"")
        .map_or("", |(_, t)| t.trim_end_matches('"'))
}

const HELLO: [&str; 3] = [
    "request headers eos=false",
    "request body size=5 eos=false len=5 fnv=a430d84680aabd0b text=\"hello\"",
    "request body size=0 eos=true none",
];

#[test]
fn content_length_body_is_its_data_then_an_empty_end_of_stream_call() {
    let upstream = Upstream::start();
    for proxy in setup(upstream.addr()).both() {
        let name = proxy.name();
        let l = lines_of(
            &proxy,
            || {
                let r = raw::exchange(proxy.addr(), &raw::post("/", &[], b"hello"));
                assert_eq!(r.text(), "hello", "{name}");
            },
            response_ended,
        );
        assert_eq!(l.request, HELLO, "{name}");
        assert_eq!(
            l.response,
            [
                "response headers eos=false",
                "response body size=5 eos=false len=5 fnv=a430d84680aabd0b text=\"hello\"",
                "response body size=0 eos=true none",
            ],
            "{name}"
        );
        assert_eq!(
            upstream.last().one("content-length").as_deref(),
            Some("5"),
            "{name}"
        );
    }
}

#[test]
fn a_large_body_arrives_whole_in_calls_that_end_with_an_empty_one() {
    let upstream = Upstream::start();
    let big = vec![b'a'; 1 << 20];
    for proxy in setup(upstream.addr()).both() {
        let name = proxy.name();
        let l = lines_of(
            &proxy,
            || {
                let r = raw::exchange(proxy.addr(), &raw::post("/", &[], &big));
                assert_eq!(r.body.len(), big.len(), "{name}");
                assert!(r.body == big, "{name}: the body came back changed");
            },
            response_ended,
        );
        assert_eq!(l.request[0], "request headers eos=false", "{name}");
        assert_eq!(http1_shape(&l.request_calls(), name), 1 << 20, "{name}");
        assert_eq!(http1_shape(&l.response_calls(), name), 1 << 20, "{name}");
        let seen = upstream.last();
        assert_eq!(
            seen.one("content-length").as_deref(),
            Some("1048576"),
            "{name}"
        );
    }
}

/// Sends `parts` on one connection, each once the filter has seen the one
/// before (a new request-side line in its log), and reads the response.
fn trickle(proxy: &Proxy, parts: &[&[u8]]) -> raw::Response {
    let request_lines = || {
        proxy
            .filter_log()
            .iter()
            .filter(|l| l.contains("request headers") || l.contains("request body"))
            .count()
    };
    let mut conn = raw::Conn::connect(proxy.addr()).unwrap();
    for (i, p) in parts.iter().enumerate() {
        let before = request_lines();
        conn.send(p).unwrap();
        if i + 1 < parts.len() {
            wait_until(Duration::from_secs(10), "the filter saw the part", || {
                (request_lines() > before).then_some(())
            });
        }
    }
    conn.read_response(false).unwrap()
}

const CHUNKED: &[u8] =
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

#[test]
fn chunked_bodies_with_and_without_trailers() {
    let upstream = Upstream::start();
    for proxy in setup(upstream.addr()).both() {
        let name = proxy.name();
        for (what, last) in [
            ("no trailers", &b"0\r\n\r\n"[..]),
            ("trailers", &b"0\r\nx-t: 1\r\n\r\n"[..]),
        ] {
            let parts: [&[u8]; 5] = [
                CHUNKED,
                b"3\r\nabc\r\n",
                b"4\r\ndefg\r\n",
                b"2\r\nhi\r\n",
                last,
            ];
            let l = lines_of(
                &proxy,
                || assert_eq!(trickle(&proxy, &parts).text(), "abcdefghi", "{name}"),
                response_ended,
            );
            let calls = l.request_calls();
            // Envoy's HTTP/1 codec drops trailers (`enable_trailers` is off): the body
            // ends with the empty end-of-stream call either way.
            assert_eq!(http1_shape(&calls, name), 9, "{name} {what}");
            let texts: String = calls.iter().map(text).collect();
            assert_eq!(texts, "abcdefghi", "{name} {what}");
            assert!(
                !l.request.iter().any(|x| x.contains("trailers")),
                "{name} {what}: {l:?}"
            );
            let seen = upstream.last();
            assert_eq!(
                seen.one("transfer-encoding").as_deref(),
                Some("chunked"),
                "{name}"
            );
            assert_eq!(seen.one("x-t"), None, "{name}");
            assert_eq!(http1_shape(&l.response_calls(), name), 9, "{name} {what}");
        }
    }
}

#[test]
fn empty_bodies() {
    let upstream = Upstream::start();
    for proxy in setup(upstream.addr()).both() {
        let name = proxy.name();
        // An empty chunked body is one empty end-of-stream call.
        let l = lines_of(
            &proxy,
            || assert_eq!(trickle(&proxy, &[CHUNKED, b"0\r\n\r\n"]).status, 200),
            response_ended,
        );
        assert_eq!(
            l.request,
            [
                "request headers eos=false",
                "request body size=0 eos=true none"
            ],
            "{name}"
        );
        // No body at all (GET, content-length 0): no body call.
        for req in [
            raw::bare("GET", "/", &[]),
            raw::bare("POST", "/", &["Content-Length: 0"]),
        ] {
            let l = lines_of(
                &proxy,
                || assert_eq!(raw::exchange(proxy.addr(), &req).status, 200, "{name}"),
                response_ended,
            );
            assert_eq!(l.request, ["request headers eos=true"], "{name}");
            assert_eq!(l.response, ["response headers eos=true"], "{name}");
        }
    }
}

#[test]
fn http2_bodies_end_on_their_last_data() {
    let upstream = Upstream::start();
    let big = vec![b'b'; 1 << 20];
    for proxy in setup(upstream.addr()).both() {
        let name = proxy.name();
        let l = lines_of(
            &proxy,
            || {
                let r = h2::request(proxy.addr(), "POST", "/", &[], b"hello").unwrap();
                assert_eq!(r.body, b"hello", "{name}");
            },
            response_ended,
        );
        assert_eq!(
            l.request,
            [
                "request headers eos=false",
                "request body size=5 eos=true len=5 fnv=a430d84680aabd0b text=\"hello\"",
            ],
            "{name}"
        );
        // The upstream is HTTP/1.1: its response ends with the empty call.
        assert_eq!(http1_shape(&l.response_calls(), name), 5, "{name}");
        let l = lines_of(
            &proxy,
            || {
                let r = h2::request(proxy.addr(), "POST", "/", &[], &big).unwrap();
                assert!(r.body == big, "{name}");
            },
            response_ended,
        );
        let calls = l.request_calls();
        let (last, data) = calls.split_last().unwrap();
        assert!(last.eos && last.size > 0, "{name}: {last:?}");
        assert!(data.iter().all(|c| !c.eos), "{name}");
        assert_eq!(
            calls.iter().map(|c| c.size).sum::<usize>(),
            1 << 20,
            "{name}"
        );
    }
}

#[test]
fn a_buffering_filter_sees_the_body_accumulate() {
    let upstream = Upstream::start();
    let big = vec![b'c'; 1 << 20];
    for proxy in setup(upstream.addr()).both() {
        let name = proxy.name();
        let headers = ["x-req: buffer", "x-resp: buffer"];
        let l = lines_of(
            &proxy,
            || {
                assert_eq!(
                    raw::exchange(proxy.addr(), &raw::post("/", &headers, b"hello")).text(),
                    "hello"
                )
            },
            response_ended,
        );
        let line = "body size=5 eos=false len=5 fnv=a430d84680aabd0b text=\"hello\"";
        let end = "body size=5 eos=true len=5 fnv=a430d84680aabd0b text=\"hello\"";
        assert_eq!(
            l.request,
            [
                "request headers eos=false".to_owned(),
                format!("request {line}"),
                format!("request {end}")
            ],
            "{name}"
        );
        assert_eq!(
            l.response,
            [
                "response headers eos=false".to_owned(),
                format!("response {line}"),
                format!("response {end}")
            ],
            "{name}"
        );
        // A chunked megabyte: the size grows call by call up to the whole body.
        let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nx-req: buffer\r\nx-resp: buffer\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for piece in big.chunks(100_000) {
            req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let l = lines_of(
            &proxy,
            || assert!(raw::exchange(proxy.addr(), &req).body == big, "{name}"),
            response_ended,
        );
        for calls in [l.request_calls(), l.response_calls()] {
            let (last, rest) = calls.split_last().unwrap();
            assert_eq!(
                last,
                &Call {
                    size: 1 << 20,
                    eos: true,
                    seen: format!("len=1048576 fnv={:x}", fnv(&big))
                },
                "{name}"
            );
            assert!(
                rest.windows(2).all(|w| w[0].size <= w[1].size),
                "{name}: {calls:?}"
            );
            assert!(
                rest.iter()
                    .all(|c| !c.eos && c.seen.starts_with(&format!("len={} ", c.size)))
            );
        }
    }
}

#[test]
fn a_body_that_arrives_while_the_headers_are_paused_is_one_call() {
    let upstream = Upstream::start();
    for proxy in setup(upstream.addr()).both() {
        let name = proxy.name();
        let l = lines_of(
            &proxy,
            || {
                let r = raw::exchange(proxy.addr(), &raw::post("/", &["x-pause: 1"], b"hello"));
                assert_eq!(r.text(), "hello", "{name}");
            },
            response_ended,
        );
        assert_eq!(
            l.request,
            [
                "request headers eos=false",
                "pause",
                "resume",
                "request body size=5 eos=true len=5 fnv=a430d84680aabd0b text=\"hello\"",
            ],
            "{name}"
        );
        // What came before the resume is one call; what comes after, as usual.
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nx-pause: 1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n";
        let l = lines_of(
            &proxy,
            || {
                let resumes = || {
                    proxy
                        .filter_log()
                        .iter()
                        .filter(|l| l.contains("resume"))
                        .count()
                };
                let first_calls = || {
                    proxy
                        .filter_log()
                        .iter()
                        .filter(|l| l.contains("request body size=3 eos=false"))
                        .count()
                };
                let (before, calls_before) = (resumes(), first_calls());
                let mut conn = raw::Conn::connect(proxy.addr()).unwrap();
                conn.send(head).unwrap();
                // The rest once the filter has resumed the request and seen
                // what arrived before the resume (else both may be one call).
                wait_until(Duration::from_secs(10), "the resume", || {
                    (resumes() > before).then_some(())
                });
                wait_until(Duration::from_secs(10), "the body call for abc", || {
                    (first_calls() > calls_before).then_some(())
                });
                conn.send(b"4\r\ndefg\r\n0\r\n\r\n").unwrap();
                assert_eq!(conn.read_response(false).unwrap().text(), "abcdefg");
            },
            response_ended,
        );
        assert_eq!(
            l.request,
            [
                "request headers eos=false",
                "pause",
                "resume",
                "request body size=3 eos=false len=3 fnv=e71fa2190541574b text=\"abc\"",
                "request body size=4 eos=false len=4 fnv=a5bf036742578e91 text=\"defg\"",
                "request body size=0 eos=true none",
            ],
            "{name}"
        );
    }
}

// ---- body size changes -------------------------------------------------------------------

/// One request as [`RawUpstream`] parsed it off the wire.
#[derive(Debug, Clone)]
struct Wire {
    /// Which connection (0, 1, ...) it came on.
    conn: usize,
    /// The request line as sent (a spilled body shows as its prefix).
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The raw-wire upstream, kept apart from the scripted one because it records
/// what that one's parser rejects: a spilled body read as a request line, and
/// the connection each request came on.
///
/// An HTTP/1.1 upstream that parses requests strictly by their framing
/// (`content-length` or chunked) and answers each `200` with `pong`
/// (`content-length: 4`; chunked with a trailer `x-up` for a path with
/// `/trailers`), so a body longer than its length spills into the
/// next request on the connection, as a real server would read it.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Wire>>>,
    stop: Arc<AtomicBool>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopped) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            let conns = AtomicUsize::new(0);
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let n = conns.fetch_add(1, Ordering::SeqCst);
                let record = Arc::clone(&record);
                std::thread::spawn(move || serve_raw(stream, n, &record));
            }
        });
        RawUpstream { addr, seen, stop }
    }

    fn seen(&self) -> Vec<Wire> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_raw(mut stream: TcpStream, conn: usize, seen: &Mutex<Vec<Wire>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let fill = |stream: &mut TcpStream, buf: &mut Vec<u8>| {
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    };
    for _ in 0..100 {
        let (line, headers, head_len) = loop {
            let mut h = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut h);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let line = format!(
                        "{} {} HTTP/1.{}",
                        req.method.unwrap_or(""),
                        req.path.unwrap_or(""),
                        req.version.unwrap_or(1)
                    );
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    break (line, headers, len);
                }
                Ok(httparse::Status::Partial) if fill(&mut stream, &mut buf) => {}
                _ => return,
            }
        };
        buf.drain(..head_len);
        let value = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if fill(&mut stream, &mut buf) {
                        continue;
                    }
                    return;
                };
                let size = usize::from_str_radix(String::from_utf8_lossy(&buf[..end]).trim(), 16)
                    .unwrap_or(0);
                if buf.len() < end + 2 + size + 2 {
                    if fill(&mut stream, &mut buf) {
                        continue;
                    }
                    return;
                }
                body.extend_from_slice(&buf[end + 2..end + 2 + size]);
                buf.drain(..end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        } else {
            let len: usize = value("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < len {
                if !fill(&mut stream, &mut buf) {
                    return;
                }
            }
            body = buf.drain(..len).collect();
        }
        let trailers = line.contains("/trailers");
        seen.lock().unwrap().push(Wire {
            conn,
            line,
            headers,
            body,
        });
        let answer: &[u8] = if trailers {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\npong\r\n0\r\nx-up: 1\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npong"
        };
        if stream.write_all(answer).is_err() {
            return;
        }
    }
}

/// Sends `requests` on one connection (150 ms apart) and returns every byte
/// that came back within `wait` of the last one.
fn raw_bytes(addr: SocketAddr, requests: &[&[u8]], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    for r in requests {
        stream.write_all(r).unwrap();
        // Paces the requests (not a wait for an event); the reads below
        // take every byte within `wait`: a response with a stale length
        // never ends, which shows only by the bytes that follow it.
        std::thread::sleep(Duration::from_millis(150));
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Envoy (`i == 0`) or the test host, with a 2 s upstream timeout.
fn one_of(i: usize, upstream: SocketAddr) -> Proxy {
    let mut setup = setup(upstream);
    setup.upstream_timeout = Duration::from_secs(2);
    if i == 0 { setup.envoy() } else { setup.host() }
}

/// Envoy keeps the stale `content-length` of a request body the filter
/// lengthened: the extra bytes spill into the next request on the reused
/// upstream connection (request smuggling). The test host fixes the length.
#[test]
fn a_longer_request_body_envoy_smuggles_the_test_host_fixes_the_length() {
    for i in 0..2 {
        let upstream = RawUpstream::start();
        let proxy = one_of(i, upstream.addr);
        let name = proxy.name();
        let first = raw::exchange(proxy.addr(), &raw::post("/a", &["x-req: grow"], b"hello"));
        assert_eq!(
            (first.status, first.text().as_str()),
            (200, "pong"),
            "{name}"
        );
        let second = raw::exchange(proxy.addr(), &raw::post("/b", &[], b"world"));
        assert_eq!(second.status, 200, "{name}");
        let seen = upstream.seen();
        assert_eq!(seen.len(), 2, "{name}: {seen:?}");
        assert_eq!(seen[0].line, "POST /a HTTP/1.1", "{name}");
        if i == 0 {
            // Envoy: the head says 5, the wire carries `hello+grown`.
            assert_eq!(seen[0].header("content-length"), Some("5"), "{name}");
            assert_eq!(seen[0].body, b"hello", "{name}");
            assert_eq!(
                seen[1].conn, seen[0].conn,
                "{name}: the connection was reused"
            );
            assert_eq!(seen[1].line, "+grownPOST /b HTTP/1.1", "{name}: the spill");
        } else {
            assert_eq!(seen[0].header("content-length"), Some("11"), "{name}");
            assert_eq!(seen[0].body, b"hello+grown", "{name}");
            assert_eq!(seen[1].line, "POST /b HTTP/1.1", "{name}");
            assert_eq!(seen[1].body, b"world", "{name}");
        }
    }
}

/// A shorter request body: Envoy's upstream waits for bytes that never come
/// and the client gets the route timeout's 504; the test host sends the
/// right length.
#[test]
fn a_shorter_request_body_envoy_hangs_the_test_host_fixes_the_length() {
    for i in 0..2 {
        let upstream = RawUpstream::start();
        let proxy = one_of(i, upstream.addr);
        let name = proxy.name();
        let started = Instant::now();
        let r = raw::exchange(proxy.addr(), &raw::post("/c", &["x-req: shrink"], b"hello"));
        let seen = upstream.seen();
        if i == 0 {
            assert_eq!(
                (r.status, r.text().as_str()),
                (504, "upstream request timeout"),
                "{name}"
            );
            // The route timeout (2 s) ends it, not the upstream.
            assert!(started.elapsed() >= Duration::from_millis(1500), "{name}");
            assert!(
                seen.is_empty(),
                "{name}: the upstream read a whole request: {seen:?}"
            );
        } else {
            assert_eq!((r.status, r.text().as_str()), (200, "pong"), "{name}");
            assert_eq!(seen[0].header("content-length"), Some("2"), "{name}");
            assert_eq!(seen[0].body, b"he", "{name}");
        }
    }
}

/// A filter that changes every chunk's size and continues: the whole body is
/// not known when the head leaves, so the test host sends it chunked.
#[test]
fn a_body_changed_chunk_by_chunk_goes_chunked() {
    for i in 0..2 {
        let upstream = RawUpstream::start();
        let proxy = one_of(i, upstream.addr);
        let name = proxy.name();
        let r = raw::exchange(
            proxy.addr(),
            &raw::post("/d", &["x-req: grow-each"], b"hello"),
        );
        assert_eq!(r.status, 200, "{name}");
        let seen = upstream.seen();
        if i == 0 {
            // `hello!` then `!` on the empty end-of-stream call: 7 bytes under a length of 5.
            assert_eq!(seen[0].header("content-length"), Some("5"), "{name}");
            assert_eq!(seen[0].body, b"hello", "{name}");
        } else {
            assert_eq!(seen[0].header("content-length"), None, "{name}");
            assert_eq!(
                seen[0].header("transfer-encoding"),
                Some("chunked"),
                "{name}"
            );
            assert_eq!(seen[0].body, b"hello!!", "{name}");
        }
    }
}

/// The same in the response: Envoy's client reads a stale length (a longer
/// body spills into the next response, a shorter one never ends); the test
/// host's client gets the right length.
#[test]
fn a_response_body_changed_in_size_reaches_the_client_with_its_true_length() {
    for i in 0..2 {
        let upstream = RawUpstream::start();
        let proxy = one_of(i, upstream.addr);
        let name = proxy.name();
        let grow = raw::post("/e", &["x-resp: grow"], b"hi");
        let next = raw::bare("GET", "/f", &[]);
        let bytes = raw_bytes(proxy.addr(), &[&grow, &next], Duration::from_millis(1500));
        let shrink = raw_bytes(
            proxy.addr(),
            &[&raw::post("/g", &["x-resp: shrink"], b"hi")],
            Duration::from_millis(1500),
        );
        if i == 0 {
            assert!(contains(&bytes, b"content-length: 4\r\n"), "{name}");
            assert!(
                contains(&bytes, b"\r\n\r\npong+grownHTTP/1.1 200"),
                "{name}: {}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(contains(&shrink, b"content-length: 4\r\n"), "{name}");
            assert!(
                shrink.ends_with(b"\r\n\r\npo"),
                "{name}: {}",
                String::from_utf8_lossy(&shrink)
            );
        } else {
            let mut conn = raw::Conn::connect(proxy.addr()).unwrap();
            conn.send(&grow).unwrap();
            let r = conn.read_response(false).unwrap();
            assert_eq!(
                (r.header("content-length"), r.text().as_str()),
                (Some("10"), "pong+grown"),
                "{name}"
            );
            conn.send(&next).unwrap();
            assert_eq!(conn.read_response(false).unwrap().text(), "pong", "{name}");
            assert!(contains(&shrink, b"content-length: 2\r\n"), "{name}");
            assert!(shrink.ends_with(b"\r\n\r\npo"), "{name}");
        }
    }
}

/// A filter that passes the body on unchanged and lengthens it only on the
/// end-of-stream call: the head already left with its length. Envoy spills
/// the extra bytes into the next request; the test host holds back the bytes
/// that would complete the length until it knows, so the upstream never gets
/// a whole request with a body other than the filter's: the request is reset
/// and the client gets a 503.
#[test]
fn a_body_lengthened_after_its_length_left_is_reset_not_smuggled() {
    for i in 0..2 {
        let upstream = RawUpstream::start();
        let proxy = one_of(i, upstream.addr);
        let name = proxy.name();
        let first = raw::exchange(
            proxy.addr(),
            &raw::post("/h", &["x-req: grow-end"], b"hello"),
        );
        let second = raw::exchange(proxy.addr(), &raw::post("/i", &[], b"world"));
        assert_eq!(second.status, 200, "{name}");
        let seen = upstream.seen();
        if i == 0 {
            assert_eq!(first.status, 200, "{name}");
            assert_eq!(seen[0].line, "POST /h HTTP/1.1", "{name}");
            assert_eq!(seen[0].body, b"hello", "{name}");
            assert_eq!(seen[1].line, "+endPOST /i HTTP/1.1", "{name}: the spill");
        } else {
            assert_eq!(first.status, 503, "{name}");
            assert_eq!(seen.len(), 1, "{name}: {seen:?}");
            assert_eq!(seen[0].line, "POST /i HTTP/1.1", "{name}");
            let log = proxy.all_output();
            assert!(
                log.contains("after its content-length (5) was sent"),
                "{name}: {log}"
            );
        }
    }
}

/// The upstream's HTTP/1 trailers are dropped as the client's are: the
/// response body ends with the empty end-of-stream call, no trailers call,
/// and the client gets no trailer.
#[test]
fn upstream_trailers_over_http1_are_dropped() {
    for i in 0..2 {
        let upstream = RawUpstream::start();
        let proxy = one_of(i, upstream.addr);
        let name = proxy.name();
        let mut got = Vec::new();
        let l = lines_of(
            &proxy,
            || {
                got = raw_bytes(
                    proxy.addr(),
                    &[&raw::bare("GET", "/trailers", &["Connection: close"])],
                    Duration::from_millis(800),
                );
            },
            response_ended,
        );
        assert!(contains(&got, b"pong"), "{name}");
        assert!(
            !contains(&got, b"x-up"),
            "{name}: {}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(
            l.response,
            [
                "response headers eos=false",
                "response body size=4 eos=false len=4 fnv=8c1eda0da8870097 text=\"pong\"",
                "response body size=0 eos=true none",
            ],
            "{name}"
        );
    }
}
