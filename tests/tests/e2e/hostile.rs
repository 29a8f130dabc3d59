//! Hostile input (issue 5): malformed request lines and headers, oversized
//! and repeated headers, hostile `user_header` values, HTTP/1.0 with
//! keep-alive. Nothing malformed is forwarded; what is forwarded is signed
//! exactly once with claims that are valid JSON.

use std::time::Duration;

use jwt_proxy_tests::proxy::Setup;
use jwt_proxy_tests::raw::{Conn, exchange, post};
use jwt_proxy_tests::{SECRET, Upstream, verify};

use crate::util::{try_exchange, with_header_line};

/// Request head bytes forwarded upstream never carry CR, LF or NUL in a value.
fn assert_clean(name: &str, what: &str, seen: &jwt_proxy_tests::Seen) {
    for (k, v) in &seen.headers {
        assert!(
            !v.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "{name} {what}: {k} reached the upstream with {:?}",
            v.as_bytes()
        );
    }
}

#[test]
fn malformed_request_lines_and_headers_are_400_and_never_forwarded() {
    let upstream = Upstream::start();
    let ok = || post("/", &[], b"{}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not a request line", b"GARBAGE\r\n\r\n".to_vec()),
        (
            "NUL in the target",
            b"POST /\x00 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        (
            "space in the target",
            b"POST /a b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        (
            "header line without a colon",
            with_header_line(ok(), b"NoColonHere"),
        ),
        (
            "space in a header name",
            with_header_line(ok(), b"Bad Name: x"),
        ),
        (
            "space before the colon",
            with_header_line(ok(), b"X-My-Jwt : forged"),
        ),
        (
            "non-ASCII header name",
            with_header_line(ok(), b"X-\xc3\xa9: 1"),
        ),
        ("NUL in a value", with_header_line(ok(), b"X-A: a\x00b")),
        ("DEL in a value", with_header_line(ok(), b"X-A: a\x7fb")),
        (
            "NUL in a token header",
            with_header_line(ok(), b"X-My-Jwt: a\x00b"),
        ),
        (
            "two Content-Lengths",
            with_header_line(ok(), b"Content-Length: 3"),
        ),
        (
            "negative Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
    ];
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        for (what, req) in &cases {
            let before = upstream.seen().len();
            let resp = try_exchange(&proxy, req);
            assert_eq!(
                resp.as_ref().map(|r| r.status),
                Some(400),
                "{name} {what}: {:?}",
                resp.map(|r| r.text())
            );
            let seen: Vec<_> = upstream.seen()[before..]
                .iter()
                .map(|s| s.uri.clone())
                .collect();
            assert!(seen.is_empty(), "{name} {what}: forwarded {seen:?}");
        }
        assert_eq!(
            exchange(proxy.addr(), &post("/", &[], b"{}")).status,
            200,
            "{name}"
        );
    }
}

/// What each proxy does with input that is malformed but can be parsed
/// leniently. Whatever is forwarded is clean and signed once.
#[test]
fn lenient_parses_forward_only_clean_signed_heads() {
    let upstream = Upstream::start();
    let ok = || post("/", &[], b"{}");
    // (case, request, Envoy's status, the test host's status)
    let cases: Vec<(&str, Vec<u8>, u16, u16)> = vec![
        // Envoy unfolds (RFC 7230 3.2.4 allows either); the host refuses.
        (
            "obs-fold",
            with_header_line(ok(), b"X-A: 1\r\n folded"),
            200,
            400,
        ),
        // Envoy drops the bare CR; the host refuses.
        (
            "bare CR in a value",
            with_header_line(ok(), b"X-A: a\rb"),
            200,
            400,
        ),
        (
            "bare LF line ends",
            b"POST / HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}".to_vec(),
            200,
            200,
        ),
        // Envoy parses any HTTP/1.x-looking version as HTTP/1.1; the host refuses.
        (
            "HTTP/9.9",
            b"POST / HTTP/9.9\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            200,
            400,
        ),
        (
            "two spaces after the method",
            b"POST  / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            200,
            400,
        ),
        // Methods are case-sensitive: both refuse `post` (SPEC section 7).
        (
            "lower-case method",
            b"post / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            400,
            400,
        ),
        (
            "Transfer-Encoding: gzip",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            501,
            501,
        ),
    ];
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        for (what, req, envoy_status, host_status) in &cases {
            let expected = if name == "envoy" {
                *envoy_status
            } else {
                *host_status
            };
            let before = upstream.seen().len();
            let resp = try_exchange(&proxy, req);
            assert_eq!(
                resp.as_ref().map(|r| r.status),
                Some(expected),
                "{name} {what}: {:?}",
                resp.map(|r| r.text())
            );
            let seen = upstream.seen()[before..].to_vec();
            if expected >= 400 {
                assert!(seen.is_empty(), "{name} {what}: refused yet forwarded");
                continue;
            }
            assert_eq!(seen.len(), 1, "{name} {what}");
            assert_clean(name, what, &seen[0]);
            let tokens = seen[0].all("x-my-jwt");
            if seen[0].method == "POST" {
                assert_eq!(tokens.len(), 1, "{name} {what}");
                verify(&tokens[0], SECRET.as_bytes());
            } else {
                assert!(
                    tokens.is_empty(),
                    "{name} {what}: {} signed",
                    seen[0].method
                );
            }
        }
    }
}

#[test]
fn many_inbound_tokens_become_exactly_one_valid_token() {
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        // With Host, Content-Type and Content-Length: 100 headers, Envoy's limit.
        let forged: Vec<String> = (0..97)
            .map(|i| match i % 3 {
                0 => format!("X-My-Jwt: forged.{i}.x"),
                1 => format!("x-my-jwt: {}", "A".repeat(500)),
                _ => format!("X-MY-JWT: eyJhbGciOiJub25lIn0.e30.{i}"),
            })
            .collect();
        let forged: Vec<&str> = forged.iter().map(String::as_str).collect();
        let resp = exchange(proxy.addr(), &post("/many", &forged, b"{}"));
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
        let seen = upstream.last();
        let tokens = seen.all("x-my-jwt");
        assert_eq!(tokens.len(), 1, "{name}: {} tokens upstream", tokens.len());
        verify(&tokens[0], SECRET.as_bytes());

        // 100 token headers: past Envoy's 100-header limit, refused whole.
        let before = upstream.seen().len();
        let forged: Vec<String> = (0..100)
            .map(|i| format!("X-My-Jwt: forged.{i}.x"))
            .collect();
        let forged: Vec<&str> = forged.iter().map(String::as_str).collect();
        let resp = exchange(proxy.addr(), &post("/hundred", &forged, b"{}"));
        assert_eq!(resp.status, 431, "{name}: {}", resp.text());
        assert_eq!(upstream.seen().len(), before, "{name}: forwarded");
    }
}

#[test]
fn hostile_user_header_values_stay_valid_json_claims() {
    let upstream = Upstream::start();
    let config = format!(r#"{{"secret":"{SECRET}","user_header":"x-user"}}"#);
    // (case, raw header line, Envoy: Some(user upstream) or None for 400, the test host's)
    type Case = (
        &'static str,
        &'static [u8],
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: [Case; 9] = [
        (
            "JSON injection",
            br#"X-User: ","admin":true,"x":"\u0000"#,
            Some(r#"","admin":true,"x":"\u0000"#),
            Some(r#"","admin":true,"x":"\u0000"#),
        ),
        (
            "quotes and backslashes",
            br#"X-User: \"\\\n"#,
            Some(r#"\"\\\n"#),
            Some(r#"\"\\\n"#),
        ),
        ("tab inside", b"X-User: a\tb", Some("a\tb"), Some("a\tb")),
        (
            "non-UTF-8 bytes",
            b"X-User: \x80\xff\xc3\x28ok",
            Some("\u{fffd}\u{fffd}\u{fffd}(ok"),
            Some("\u{fffd}\u{fffd}\u{fffd}(ok"),
        ),
        (
            "UTF-8 and an emoji",
            "X-User: zoë 😀".as_bytes(),
            Some("zoë 😀"),
            Some("zoë 😀"),
        ),
        ("bare CR", b"X-User: a\rb", Some("ab"), None),
        ("bare LF", b"X-User: a\nb", None, None),
        ("CR LF", b"X-User: a\r\nb", None, None),
        ("NUL", b"X-User: a\x00b", None, None),
    ];
    let setup = Setup {
        config,
        ..Setup::new(upstream.addr())
    };
    for proxy in setup.both() {
        let name = proxy.name();
        for (what, line, envoy_user, host_user) in cases {
            let expected = if name == "envoy" {
                envoy_user
            } else {
                host_user
            };
            let before = upstream.seen().len();
            let resp =
                try_exchange(&proxy, &with_header_line(post("/u", &[], b"{}"), line)).unwrap();
            let seen = upstream.seen()[before..].to_vec();
            match expected {
                None => {
                    assert_eq!(resp.status, 400, "{name} {what}: {}", resp.text());
                    assert!(seen.is_empty(), "{name} {what}: forwarded");
                }
                Some(user) => {
                    assert_eq!(resp.status, 200, "{name} {what}: {}", resp.text());
                    assert_eq!(seen.len(), 1);
                    assert_clean(name, what, &seen[0]);
                    let token = seen[0].one("x-my-jwt").unwrap();
                    // The claims segment is JSON on its own (jsonwebtoken parsed it too).
                    let claims = verify(&token, SECRET.as_bytes());
                    assert_eq!(claims["payload"]["user"], user, "{name} {what}");
                    let keys: Vec<_> = claims.as_object().unwrap().keys().cloned().collect();
                    assert_eq!(
                        keys,
                        ["iat", "jti", "payload"],
                        "{name} {what}: claims injected"
                    );
                }
            }
        }
    }
}

#[test]
fn http10_keep_alive_is_an_http10_exchange_on_a_reusable_connection() {
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        let mut conn = Conn::connect(proxy.addr()).unwrap();
        for i in 0..3 {
            conn.send(
                format!("POST /ka/{i} HTTP/1.0\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}")
                    .as_bytes(),
            )
            .unwrap();
            let resp = conn.read_response(false).unwrap();
            assert_eq!(
                (resp.status, resp.version.as_str()),
                (200, "HTTP/1.0"),
                "{name} {i}"
            );
            assert_eq!(resp.body, b"{}", "{name} {i}");
            // A kept HTTP/1.0 connection is announced, and delimited by length.
            assert_eq!(
                resp.header("connection")
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("keep-alive"),
                "{name} {i}: {:?}",
                resp.headers
            );
            assert!(resp.header("content-length").is_some(), "{name} {i}");
            assert!(
                resp.header("transfer-encoding").is_none(),
                "{name} {i}: chunked to HTTP/1.0"
            );
            let seen = upstream.last();
            assert_eq!(seen.uri, format!("/ka/{i}"));
            assert!(seen.all("connection").is_empty() && seen.all("keep-alive").is_empty());
            verify(&seen.one("x-my-jwt").unwrap(), SECRET.as_bytes());
        }
        // Without keep-alive the same client is closed after one exchange.
        conn.send(b"POST /ka/last HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap();
        assert_eq!(conn.read_response(false).unwrap().status, 200);
        assert!(
            conn.closed_by_peer(Duration::from_secs(5)),
            "{name}: kept open"
        );
    }
}
