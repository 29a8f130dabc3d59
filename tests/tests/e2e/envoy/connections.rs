//! Connections through the real Envoy binary (SPEC section 3): hop-by-hop
//! headers, persistence, bodies that stream. Upstream faults (down, too
//! slow, resets) are in `faults`.

use std::time::Duration;

use jwt_proxy_tests::load::rss_kib;
use jwt_proxy_tests::raw::{Conn, blocking_get, exchange, post};
use jwt_proxy_tests::{EnvoyBuilder, SECRET, Upstream, verify};

#[test]
fn hop_by_hop_request_headers_are_not_forwarded() {
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    let resp = exchange(
        envoy.addr(),
        &post(
            "/",
            &[
                "Connection: keep-alive, X-Private",
                "X-Private: secret-ish",
                "Keep-Alive: timeout=5",
                "Proxy-Connection: keep-alive",
                "TE: trailers",
                "Trailer: X-Checksum",
                "Upgrade: h2c",
                "X-Kept: yes",
            ],
            b"{}",
        ),
    );
    assert_eq!(resp.status, 200);
    let seen = upstream.last();
    for h in [
        "x-private",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            seen.all(h).is_empty(),
            "{h} was forwarded: {:?}",
            seen.headers
        );
    }
    assert!(
        seen.all("connection")
            .iter()
            .all(|c| !c.to_ascii_lowercase().contains("x-private"))
    );
    assert_eq!(seen.one("x-kept").as_deref(), Some("yes"));
}

#[test]
fn persistent_connections_and_connection_close() {
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    let mut conn = Conn::connect(envoy.addr()).unwrap();
    for i in 0..3 {
        conn.send(&post(&format!("/keep/{i}"), &[], b"{}")).unwrap();
        let resp = conn.read_response(false).unwrap();
        assert_eq!(resp.status, 200, "request {i} on the same connection");
        assert_eq!(resp.version, "HTTP/1.1");
    }
    conn.send(&post("/last", &["Connection: close"], b"{}"))
        .unwrap();
    let resp = conn.read_response(false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(
        conn.closed_by_peer(Duration::from_secs(5)),
        "Connection: close honoured"
    );
    assert_eq!(upstream.seen().len(), 4);
    assert!(
        upstream
            .seen()
            .iter()
            .all(|s| s.all("connection").is_empty())
    );
}

#[test]
fn a_100_mib_post_streams_through() {
    use std::io::{Read, Write};
    const SIZE: usize = 100 << 20;
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    let rss_before = rss_kib(envoy.pid());

    let mut stream = std::net::TcpStream::connect(envoy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        write!(
            writer,
            "POST /big HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..SIZE / chunk.len() {
            writer.write_all(&chunk).unwrap();
        }
    });
    let mut total = 0usize;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut rss_peak = 0;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if head.len() < 4096 {
            head.extend_from_slice(&buf[..n.min(4096)]);
        }
        total += n;
        if total % (16 << 20) < n {
            rss_peak = rss_peak.max(rss_kib(envoy.pid()));
        }
    }
    sender.join().unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..64.min(head.len())])
    );
    assert!(total > SIZE, "the whole body came back ({total} bytes)");
    verify(&upstream.last().one("x-my-jwt").unwrap(), SECRET.as_bytes());
    let grew = rss_peak.saturating_sub(rss_before);
    assert!(
        grew < 64 * 1024,
        "Envoy grew by {grew} KiB streaming 100 MiB: something buffers"
    );
}

#[test]
fn a_chunked_post_with_trailers_is_signed_and_its_body_arrives_whole() {
    // The module exports no body or trailer callbacks (filter/trim): Envoy
    // must still stream every chunk and sign the head exactly once.
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    let request = b"POST /chunks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Transfer-Encoding: chunked\r\nx-my-jwt: forged\r\n\r\n\
5\r\n{\"a\":\r\n4\r\n[1,2\r\n2\r\n]}\r\n0\r\nx-checksum: 42\r\n\r\n";
    let resp = exchange(envoy.addr(), request);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, br#"{"a":[1,2]}"#, "every chunk, in order");
    let seen = upstream.last();
    let tokens = seen.all("x-my-jwt");
    assert_eq!(tokens.len(), 1, "exactly one token: {tokens:?}");
    assert_ne!(tokens[0], "forged");
    verify(&tokens[0], SECRET.as_bytes());
}

#[test]
fn the_upstream_circuit_breakers_follow_the_connection_cap() {
    // Envoy's default breakers (1,024 connections and 1,024 pending requests
    // to the upstream) answered 503 past about 2,048 requests in flight,
    // under a cap of 10,000 client connections (BENCHMARKS.md, 5,000
    // connections). The test host has no such limit.
    let upstream = Upstream::start();
    for (cap, expected) in [(None, "10000"), (Some("4321"), "4321")] {
        let mut builder = EnvoyBuilder::new(upstream.addr());
        if let Some(cap) = cap {
            builder = builder.render_env("MAX_CONNECTIONS", cap);
        }
        let envoy = builder.start();
        let (status, body) = blocking_get(envoy.admin(), "/clusters").unwrap();
        assert_eq!(status, 200);
        let clusters = String::from_utf8(body).unwrap();
        for limit in ["max_connections", "max_pending_requests", "max_requests"] {
            let line = format!("upstream::default_priority::{limit}::{expected}");
            assert!(
                clusters.lines().any(|l| l == line),
                "no `{line}` in Envoy's /clusters:\n{clusters}"
            );
        }
    }
}
