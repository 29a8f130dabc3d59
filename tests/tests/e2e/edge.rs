//! Gateway duties (SPEC section 7): each scenario is written once and run
//! against the real Envoy binary and the test host, with the same assertions.
//! Raw-socket clients send the exact bytes, where an HTTP library would
//! normalise them. The divergences issue 6 found are in `regressions`.

use std::time::{Duration, Instant};

use jwt_proxy_tests::proxy::{Limits, Setup};
use jwt_proxy_tests::raw::{Conn, bare, exchange, post};
use jwt_proxy_tests::scripted::Scripted;
use jwt_proxy_tests::{SECRET, Upstream, h2, verify, wait_until};

use crate::util::seen_through_both;

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
fn the_proxys_own_replies_carry_via_with_the_requests_protocol() {
    // SPEC 7: every response carries a Via; a reply the proxy makes itself
    // after routing names the protocol the request came in. Where no route
    // matches (`OPTIONS *`) Envoy adds none, and neither does the test host.
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        let status = exchange(proxy.addr(), &bare("GET", "/status", &[]));
        assert_eq!(status.all("via"), ["HTTP/1.1 jwt-proxy"], "{name}: /status");
        let old = exchange(proxy.addr(), b"GET /status HTTP/1.0\r\n\r\n");
        assert_eq!(old.all("via"), ["HTTP/1.0 jwt-proxy"], "{name}: HTTP/1.0");
        let trace = exchange(proxy.addr(), &bare("TRACE", "/t", &[]));
        assert_eq!(trace.all("via"), ["HTTP/1.1 jwt-proxy"], "{name}: TRACE");
        let star = exchange(proxy.addr(), b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(star.status, 404, "{name}");
        assert!(star.all("via").is_empty(), "{name}: {:?}", star.headers);
    }
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
    let refusing = jwt_proxy_tests::HeldPort::new();
    for (name, resp, seen) in seen_through_both(&Setup::new(refusing.addr()), &request) {
        assert_eq!(resp.version, "HTTP/1.1", "{name}");
        assert!(seen.all("upgrade").is_empty(), "{name}");
        assert!(seen.all("http2-settings").is_empty(), "{name}");
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
        // The connections past the cap are closed at once (by the proxy).
        wait_until(
            Duration::from_secs(10),
            "the extra connections closed",
            || {
                let closed = conns
                    .iter_mut()
                    .map(|c| c.closed_by_peer(Duration::from_millis(20)))
                    .filter(|&closed| closed)
                    .count();
                (closed >= 3).then_some(())
            },
        );
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
        // The cap is freed once the proxy has processed the closes.
        let what = format!("{}: the cap is freed", proxy.name());
        let resp = wait_until(Duration::from_secs(10), what, || {
            let mut c = Conn::connect(proxy.addr()).ok()?;
            c.send(&post("/after", &[], b"{}")).ok()?;
            c.read_response(false).ok()
        });
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

#[test]
fn a_posts_head_goes_upstream_before_its_body_arrives() {
    // A slow client's body never delays its signed head: Envoy's router sends
    // the head upstream as soon as the filter lets it go, and so does the test
    // host for a module with no body callback (ours: its body cannot change).
    // The upstream reads the head while the client still holds every body byte.
    let upstream = Scripted::answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        let before = upstream.arrived().len();
        let mut conn = Conn::connect(proxy.addr()).unwrap();
        conn.send(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        let what = format!("{name}: the head upstream while the body is held");
        let head = wait_until(Duration::from_secs(10), what, || {
            upstream.arrived().get(before).cloned()
        });
        assert_eq!(
            (head.method.as_str(), head.route()),
            ("POST", "/slow"),
            "{name}"
        );
        let tokens = head.all("x-my-jwt");
        assert_eq!(tokens.len(), 1, "{name}: {:?}", head.headers);
        verify(&tokens[0], SECRET.as_bytes());
        conn.send(b"hello").unwrap();
        let resp = conn.read_response(false).unwrap();
        assert_eq!((resp.status, resp.text()), (200, "ok".to_owned()), "{name}");
        assert_eq!(
            upstream.seen().last().map(|h| h.body.clone()),
            Some(b"hello".to_vec())
        );
    }
}

#[test]
fn a_head_pipelined_behind_a_large_body_is_checked_like_the_first() {
    // The test host reads a body with nothing buffered straight into hyper's
    // buffer, up to the body's length: the head behind the body, in the same
    // write, must still meet the edge's checks. A 300 KiB POST, then a
    // `Content-Length` + `chunked` POST (a smuggling shape): the first is
    // served and signed (its body echoed whole), the second refused with 400
    // and the connection closed, and only the first reaches the upstream.
    let body: Vec<u8> = (0..300 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let mut bytes = post("/first", &[], &body);
    bytes.extend_from_slice(
        b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        let before = upstream.seen().len();
        let mut conn = Conn::connect(proxy.addr()).unwrap();
        conn.send(&bytes).unwrap();
        let first = conn.read_response(false).unwrap();
        assert_eq!(first.status, 200, "{name}: {}", first.text());
        assert!(first.body == body, "{name}: the echoed body differs");
        let second = conn.read_response(false).unwrap();
        assert_eq!(second.status, 400, "{name}: {}", second.text());
        assert!(
            conn.closed_by_peer(Duration::from_secs(5)),
            "{name}: left open"
        );
        let seen = upstream.seen()[before..].to_vec();
        let uris: Vec<&str> = seen.iter().map(|h| h.uri.as_str()).collect();
        assert_eq!(uris, ["/first"], "{name}");
        let tokens = seen[0].all("x-my-jwt");
        assert_eq!(tokens.len(), 1, "{name}: {tokens:?}");
        verify(&tokens[0], SECRET.as_bytes());
    }
}
