//! Differential tests (SPEC section 5): each scenario is written once and
//! run against the real Envoy binary and the test host with the same `.wasm`;
//! what the filter did must be the same. Only the headers Envoy itself adds
//! may differ.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use jwt_proxy_tests::proxy::{Proxy, Setup, leaks_key};
use jwt_proxy_tests::raw::{bare, exchange, post};
use jwt_proxy_tests::scripted::Scripted;
use jwt_proxy_tests::{HeldPort, SECRET, Upstream, verify, wasm};
use serde_json::Value;
use test_host::{Clock, HostBuilder, Random};

/// Headers Envoy adds on its own, not the filter.
const ENVOY_ADDED: [&str; 4] = [
    "x-request-id",
    "x-forwarded-proto",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-original-path",
];

fn upstream_header_names(seen: &jwt_proxy_tests::Seen) -> BTreeSet<String> {
    seen.headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| !ENVOY_ADDED.contains(&k.as_str()))
        .collect()
}

/// Log lines with the parts that differ per run (jti, duration) blanked.
fn shape(line: &str) -> String {
    line.split(' ')
        .map(|w| {
            if w.starts_with("jti=") && w != "jti=-" {
                "jti=<hex>"
            } else if w.ends_with("ms") && w.trim_end_matches("ms").parse::<f64>().is_ok() {
                "<ms>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn signing_and_stripping_are_the_same() {
    let mut outcomes = Vec::new();
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let before = upstream.seen().len();
        let forged = [
            "X-My-JWT: forged.1.x",
            "x-my-jwt: forged.2.x",
            "Connection: X-Hop",
            "X-Hop: 1",
        ];
        let signed = exchange(proxy.addr(), &post("/sign?q=1", &forged, br#"{"a":1}"#));
        let unsigned = exchange(proxy.addr(), &bare("GET", "/plain", &forged));
        assert_eq!(
            (signed.status, unsigned.status),
            (200, 200),
            "{}",
            proxy.name()
        );
        assert_eq!(signed.body, br#"{"a":1}"#);

        let seen = upstream.seen();
        assert_eq!(seen.len(), before + 2, "{}", proxy.name());
        let (post_seen, get_seen) = (&seen[before], &seen[before + 1]);
        let tokens = post_seen.all("x-my-jwt");
        assert_eq!(tokens.len(), 1, "{}: {tokens:?}", proxy.name());
        let claims = verify(&tokens[0], SECRET.as_bytes());
        assert!(get_seen.all("x-my-jwt").is_empty(), "{}", proxy.name());
        assert!(post_seen.all("x-hop").is_empty(), "{}", proxy.name());

        let lines = proxy.wait_for_lines(" /plain ", 1);
        let post_line = proxy.wait_for_lines(" /sign ", 1).remove(0);
        assert!(
            post_line.contains(claims["jti"].as_str().unwrap()),
            "{post_line}"
        );
        outcomes.push((
            upstream_header_names(post_seen),
            upstream_header_names(get_seen),
            (post_seen.method.clone(), post_seen.uri.clone()),
            shape(&post_line),
            shape(&lines[0]),
            claims
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
        ));
    }
    assert_eq!(
        outcomes[0], outcomes[1],
        "envoy (left) and the test host (right) differ"
    );
}

#[test]
fn status_page_and_local_replies_are_the_same() {
    let upstream = Upstream::start();
    let mut outcomes = Vec::new();
    for proxy in Setup::new(upstream.addr()).both() {
        exchange(proxy.addr(), &post("/a", &[], b"{}"));
        exchange(proxy.addr(), &bare("DELETE", "/b", &[]));
        let json = exchange(proxy.addr(), &bare("GET", "/status", &[]));
        let html = exchange(
            proxy.addr(),
            &bare("GET", "/status", &["Accept: text/html"]),
        );
        let head = exchange(proxy.addr(), &bare("HEAD", "/status", &[]));
        let not_allowed = exchange(proxy.addr(), &post("/status", &[], b"{}"));
        let v: Value = serde_json::from_slice(&json.body).unwrap();
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        outcomes.push((
            (json.status, json.header("content-type").map(str::to_owned)),
            keys,
            (
                v["requests_processed"].clone(),
                v["requests_signed"].clone(),
                v["status"].clone(),
            ),
            (
                html.status,
                html.header("content-type").map(str::to_owned),
                html.text().contains(">2<"),
            ),
            (head.status, head.body.len()),
            (
                not_allowed.status,
                not_allowed.header("allow").map(str::to_owned),
                not_allowed.text(),
            ),
        ));
    }
    assert_eq!(
        upstream.seen().len(),
        4,
        "the status path never reaches the upstream"
    );
    assert_eq!(
        outcomes[0], outcomes[1],
        "envoy (left) and the test host (right) differ"
    );
    assert_eq!(outcomes[0].2.0, 2);
}

#[test]
fn counts_are_exact_with_two_workers_on_both() {
    const CLIENTS: usize = 8;
    const EACH: usize = 50;
    let upstream = Upstream::start();
    let mut setup = Setup::new(upstream.addr());
    setup.workers = 2;
    for proxy in setup.both() {
        let addr = proxy.addr();
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut conn = jwt_proxy_tests::raw::Conn::connect(addr).unwrap();
                    for i in 0..EACH {
                        let method = if i % 5 == 0 { "PUT" } else { "POST" };
                        let req = post(&format!("/c{c}/{i}"), &[], b"{}");
                        let req = String::from_utf8(req).unwrap().replacen("POST", method, 1);
                        conn.send(req.as_bytes()).unwrap();
                        assert_eq!(conn.read_response(false).unwrap().status, 200);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for _ in 0..4 {
            let v: Value =
                serde_json::from_slice(&exchange(addr, &bare("GET", "/status", &[])).body).unwrap();
            assert_eq!(
                v["requests_processed"],
                (CLIENTS * EACH) as u64,
                "{}",
                proxy.name()
            );
            assert_eq!(
                v["requests_signed"],
                (CLIENTS * EACH * 4 / 5) as u64,
                "{}",
                proxy.name()
            );
        }
        if let Proxy::Host(h) = &proxy {
            assert_eq!(
                h.host().metric("jwt_proxy.requests_processed"),
                Some((CLIENTS * EACH) as u64)
            );
        }
    }
}

/// Also `header_names_with_underscore_are_refused_at_start_on_both` before
/// (SPEC 7: a `header` or `user_header` with `_` is refused at start).
#[test]
fn bad_configuration_is_refused_the_same_way() {
    let cases = [
        (r#"{"secret":"short"}"#.to_owned(), "secret"),
        (
            format!(r#"{{"secret":"{SECRET}","sign_methods":[]}}"#),
            "sign_methods",
        ),
        (format!(r#"{{"secret":"{SECRET}","extra":true}}"#), "extra"),
        (
            format!(r#"{{"secret":"{SECRET}","header":"x_user"}}"#),
            "header",
        ),
        (
            format!(r#"{{"secret":"{SECRET}","user_header":"x_user"}}"#),
            "user_header",
        ),
    ];
    let refusing = HeldPort::new();
    for (config, field) in cases {
        let refusal = Setup {
            config: config.clone(),
            ..Setup::new(refusing.addr())
        }
        .refused();
        let envoy_log = &refusal.envoy_log;
        assert!(
            !refusal.envoy_status.success(),
            "envoy started with {config}"
        );
        let envoy_line = envoy_log
            .lines()
            .find_map(|l| {
                l.split_once("jwt-proxy refuses to start: ")
                    .map(|(_, m)| m.to_owned())
            })
            .unwrap_or_else(|| panic!("envoy logged no refusal for {config}:\n{envoy_log}"));
        assert!(envoy_line.contains(&format!("`{field}`")), "{envoy_line}");

        let err = &refusal.host;
        let host_msg = format!("{err:#}");
        assert!(
            host_msg.contains(&envoy_line),
            "{config}:\nenvoy: {envoy_line}\ntest-host: {host_msg}"
        );
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
        assert!(!leaks_key(&host_msg) && !leaks_key(envoy_log));
        assert!(!envoy_log.contains(SECRET) && !err.to_string().contains(SECRET));
    }
}
/// Also `hop_by_hop_response_headers_are_not_forwarded` (Envoy only) before:
/// every hop-by-hop response header, on both.
#[test]
fn response_hop_by_hop_headers_are_removed_on_both() {
    let upstream = Scripted::answering(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-Sum\r\nX-Kept: yes\r\n\r\nok",
    );
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        let resp = exchange(proxy.addr(), &post("/", &[], b"{}"));
        assert_eq!(resp.status, 200, "{name}");
        assert_eq!(resp.body, b"ok", "{name}");
        for h in ["x-private", "keep-alive", "proxy-connection", "trailer"] {
            assert!(
                resp.all(h).is_empty(),
                "{name}: {h} reached the client: {:?}",
                resp.headers
            );
        }
        assert_eq!(resp.header("x-kept"), Some("yes"), "{name}");
    }
}
/// Also `http10_clients_are_served_and_closed` (Envoy only) before.
#[test]
fn http10_clients_are_served_and_closed_on_both() {
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let name = proxy.name();
        let before = upstream.seen().len();
        let mut conn = jwt_proxy_tests::raw::Conn::connect(proxy.addr()).unwrap();
        conn.send(
            b"POST /old HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        let resp = conn.read_response(false).unwrap();
        assert_eq!(
            (resp.status, resp.version.as_str()),
            (200, "HTTP/1.0"),
            "{name}"
        );
        assert_eq!(resp.version, "HTTP/1.0", "{name}: an HTTP/1.0 exchange");
        assert_eq!(resp.body, b"{}", "{name}");
        assert!(
            conn.closed_by_peer(Duration::from_secs(5)),
            "{name}: no persistent connection with an HTTP/1.0 client"
        );
        let seen = upstream.last();
        assert_eq!(
            seen.version, "HTTP/1.1",
            "{name}: the upstream link is HTTP/1.1 on its own"
        );
        verify(&seen.one("x-my-jwt").unwrap(), SECRET.as_bytes());

        // A second HTTP/1.0 client: a new client connection, the same upstream one.
        exchange(proxy.addr(), b"GET /again HTTP/1.0\r\n\r\n");
        let seen = &upstream.seen()[before..];
        assert_eq!(seen.len(), 2, "{name}");
        assert_eq!(
            seen[0].peer, seen[1].peer,
            "{name}: the upstream connection persists independently"
        );
    }
}
/// Pinned clock and seeded random source: the token is exactly the one an
/// independent implementation computes from the same claims.
#[test]
fn exact_token_with_pinned_clock_and_seeded_random() {
    let at = UNIX_EPOCH + Duration::from_secs(1_795_435_200); // 2026-11-23T12:00:00Z
    let run = |seed| {
        let plugin = HostBuilder::new(wasm("jwt_filter"))
            .plugin_config(jwt_proxy_tests::default_config().into_bytes())
            .clock(Clock::Pinned(at))
            .random(Random::Seeded(seed))
            .echo_logs(false)
            .instantiate()
            .unwrap();
        let ctx = plugin.create_http_context().unwrap();
        let verdict = plugin
            .on_request_headers(
                ctx,
                &[
                    (":method", "POST"),
                    (":path", "/x"),
                    (":authority", "h"),
                    (":scheme", "http"),
                ],
                false,
            )
            .unwrap();
        assert!(verdict.local_reply.is_none());
        verdict.headers.get_str("x-my-jwt").unwrap().to_owned()
    };
    let token = run(7);
    assert_eq!(token, run(7), "same seed, same clock: same token");
    assert_ne!(token, run(8), "another seed: another jti");

    let claims = verify(&token, SECRET.as_bytes());
    let jti = claims["jti"].as_str().unwrap();
    #[derive(serde::Serialize)]
    struct Payload<'a> {
        user: &'a str,
        date: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iat: u64,
        jti: &'a str,
        payload: Payload<'a>,
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = Claims {
        iat: at.duration_since(UNIX_EPOCH).unwrap().as_secs(),
        jti,
        payload: Payload {
            user: "username",
            date: "2026-11-23",
        },
    };
    // PyJWT's layout: {"alg","typ"} header, compact JSON claims in order.
    let signing_input = format!(
        "{}.{}",
        b64.encode(br#"{"alg":"HS512","typ":"JWT"}"#),
        b64.encode(serde_json::to_vec(&claims).unwrap())
    );
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        jsonwebtoken::Algorithm::HS512,
    )
    .unwrap();
    assert_eq!(token, format!("{signing_input}.{signature}"));
}
