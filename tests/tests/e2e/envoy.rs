//! The filter inside the real Envoy binary (SPEC sections 2, 3 and 4).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jwt_proxy_tests::raw::{self, Conn, bare, exchange, post};
use jwt_proxy_tests::{EnvoyBuilder, SECRET, Upstream, dead_addr, now_secs, verify};
use serde_json::Value;

use crate::util::Scripted;

fn status_json(envoy: &jwt_proxy_tests::Envoy) -> Value {
    let resp = exchange(envoy.addr(), &bare("GET", "/status", &[]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    serde_json::from_slice(&resp.body).unwrap()
}

#[test]
fn post_gets_one_token_that_verifies_independently() {
    let upstream = Upstream::start();
    let mut envoy = EnvoyBuilder::new(upstream.addr()).start();
    let before = now_secs();
    let resp = exchange(envoy.addr(), &post("/orders?id=7", &[], br#"{"item":1}"#));
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.body, br#"{"item":1}"#,
        "the echo upstream returns the body"
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));

    let seen = upstream.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/orders?id=7")
    );
    let token = seen.one("x-my-jwt").expect("no token upstream");
    envoy.forbid(&token);
    // The client sees what arrived upstream through the echo's x-echo-* headers.
    assert_eq!(resp.header("x-echo-x-my-jwt"), Some(token.as_str()));

    let claims = verify(&token, SECRET.as_bytes());
    let obj = claims.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["iat", "jti", "payload"],
        "exactly the task's claims by default"
    );
    let iat = claims["iat"].as_u64().expect("iat is a JSON integer");
    assert!(
        iat >= before && iat <= now_secs() + 1 && now_secs() - iat < 5,
        "iat {iat}"
    );
    let jti = claims["jti"].as_str().unwrap();
    assert!(
        jti.len() == 32
            && jti
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(claims["payload"]["user"], "username");
    assert_eq!(
        claims["payload"]["date"].as_str().unwrap(),
        time_date(iat),
        "date is the UTC day of iat"
    );

    // One log line for the request: method, path (no query), status, jti, duration.
    let line = envoy.wait_for_log(&format!("jti={jti}"));
    assert!(line.contains("POST /orders 200 jti="), "{line}");
    assert!(line.ends_with("ms"), "{line}");
    assert!(
        !line.contains("id=7"),
        "the query string is not logged: {line}"
    );
}

/// The UTC calendar date of `secs`, computed without the filter's code.
fn time_date(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap();
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn client_tokens_never_reach_the_upstream() {
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    let forged = [
        "X-My-JWT: forged.one.x",
        "x-my-jwt: forged.two.x",
        "X-MY-JWT: forged.three.x",
    ];

    let resp = exchange(envoy.addr(), &post("/", &forged, b"{}"));
    assert_eq!(resp.status, 200);
    let seen = upstream.last();
    let tokens = seen.all("x-my-jwt");
    assert_eq!(tokens.len(), 1, "exactly one token upstream: {tokens:?}");
    assert!(!tokens[0].starts_with("forged"));
    verify(&tokens[0], SECRET.as_bytes());

    for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let resp = exchange(envoy.addr(), &bare(method, "/x", &forged));
        assert_eq!(resp.status, 200, "{method}");
        let seen = upstream.last();
        assert_eq!(seen.method, method);
        assert!(
            seen.all("x-my-jwt").is_empty(),
            "{method} is unsigned and stripped"
        );
    }
    let status = status_json(&envoy);
    assert_eq!(status["requests_processed"], 6);
    assert_eq!(status["requests_signed"], 1);
}

#[test]
fn status_page_is_local_and_exact_across_two_workers() {
    const N: usize = 10_000;
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr()).concurrency(2).start();
    let addr = envoy.addr();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let failures = rt.block_on(async move {
        use http_body_util::{BodyExt, Full};
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;
        let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = Vec::with_capacity(N);
        for i in 0..N {
            let client = client.clone();
            let permit = std::sync::Arc::clone(&sem).acquire_owned().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let req = hyper::Request::post(format!("http://{addr}/load/{i}"))
                    .header("content-type", "application/json")
                    .body(Full::from(format!(r#"{{"i":{i}}}"#)))
                    .unwrap();
                let out = tokio::time::timeout(Duration::from_secs(30), async {
                    let resp = client.request(req).await.ok()?;
                    let status = resp.status();
                    resp.into_body().collect().await.ok()?;
                    Some(status)
                })
                .await;
                drop(permit);
                matches!(out, Ok(Some(s)) if s == 200)
            }));
        }
        let mut failures = 0;
        for t in tasks {
            if !t.await.unwrap() {
                failures += 1;
            }
        }
        failures
    });
    assert_eq!(failures, 0, "non-200 answers under load");

    let seen = upstream.seen();
    assert_eq!(seen.len(), N);
    let mut jtis = HashSet::with_capacity(N);
    for s in &seen {
        let token = s.one("x-my-jwt").expect("unsigned POST forwarded");
        let claims = verify(&token, SECRET.as_bytes());
        assert!(
            jtis.insert(claims["jti"].as_str().unwrap().to_owned()),
            "duplicate jti"
        );
    }
    assert_eq!(jtis.len(), N);

    // Several reads land on both workers: every one is exact.
    for _ in 0..6 {
        let status = status_json(&envoy);
        assert_eq!(status["status"], "ok");
        assert_eq!(status["requests_processed"], N as u64);
        assert_eq!(status["requests_signed"], N as u64);
        assert!(status["uptime_seconds"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        envoy.stat("wasmcustom.jwt_proxy.requests_processed"),
        Some(N as u64)
    );
    assert_eq!(
        envoy.stat("wasmcustom.jwt_proxy.requests_signed"),
        Some(N as u64)
    );
    assert_eq!(
        upstream.seen().len(),
        N,
        "/status never reaches the upstream"
    );
}

#[test]
fn status_page_formats_and_methods() {
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    exchange(envoy.addr(), &post("/a", &[], b"{}"));
    exchange(envoy.addr(), &bare("GET", "/b", &[]));

    let json = status_json(&envoy);
    assert_eq!(json["requests_processed"], 2);
    assert_eq!(json["requests_signed"], 1);
    let started = json["started_at"].as_str().unwrap();
    assert!(started.len() == 20 && started.ends_with('Z'), "{started}");

    let html = exchange(
        envoy.addr(),
        &bare("GET", "/status", &["Accept: text/html"]),
    );
    assert_eq!(html.status, 200);
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        html.text().contains("requests processed") && html.text().contains(">2<"),
        "{}",
        html.text()
    );

    let q = exchange(envoy.addr(), &bare("GET", "/status?verbose=1", &[]));
    assert_eq!(q.status, 200);

    let head = exchange(envoy.addr(), &bare("HEAD", "/status", &[]));
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    for method in ["POST", "PUT", "DELETE"] {
        let resp = exchange(
            envoy.addr(),
            &post("/status", &[], b"{}").replacen("POST", method, 1),
        );
        assert_eq!(resp.status, 405, "{method}");
        assert_eq!(resp.header("allow"), Some("GET, HEAD"));
    }
    assert_eq!(
        upstream.seen().len(),
        2,
        "the status path never reaches the upstream"
    );
    assert_eq!(status_json(&envoy)["requests_processed"], 2);
}

trait ReplaceBytes {
    fn replacen(&self, from: &str, to: &str, n: usize) -> Vec<u8>;
}

impl ReplaceBytes for Vec<u8> {
    fn replacen(&self, from: &str, to: &str, n: usize) -> Vec<u8> {
        String::from_utf8(self.clone())
            .unwrap()
            .replacen(from, to, n)
            .into_bytes()
    }
}

#[test]
fn bad_configurations_refuse_to_start_naming_the_field() {
    let s = format!(r#""secret":"{SECRET}""#);
    let cases = vec![
        ("{}".to_owned(), "`secret`"),
        (r#"{"secret":"too-short"}"#.to_owned(), "`secret`"),
        (
            format!(
                r#"{{"secret":"{}","secret_encoding":"hex"}}"#,
                "zz".repeat(64)
            ),
            "`secret`",
        ),
        (format!(r#"{{{s},"colour":"red"}}"#), "`colour`"),
        (format!(r#"{{{s},"log_requests":"yes"}}"#), "`log_requests`"),
        (format!(r#"{{{s},"header":"x my jwt"}}"#), "`header`"),
        (format!(r#"{{{s},"sign_methods":[]}}"#), "`sign_methods`"),
        (
            format!(r#"{{{s},"status_path":"status"}}"#),
            "`status_path`",
        ),
        (format!(r#"{{{s},"ttl_seconds":0}}"#), "`ttl_seconds`"),
        ("not json".to_owned(), "`configuration`"),
    ];
    let upstream = dead_addr();
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(config, field)| {
            std::thread::spawn(move || {
                let (status, log) = EnvoyBuilder::new(upstream)
                    .config(config.clone())
                    .start_expecting_failure();
                assert!(!status.success(), "envoy started with {config}");
                let line = log
                    .lines()
                    .find(|l| l.contains("jwt-proxy refuses to start"))
                    .unwrap_or_else(|| panic!("no refusal logged for {config}:\n{log}"));
                assert!(
                    line.contains(field),
                    "{field} not named for {config}: {line}"
                );
                assert!(!log.contains(SECRET), "the key leaked into the log");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn secret_from_environment_hex_encoding_and_optional_claims() {
    let env_secret = "f00dfeed".repeat(16); // 128 hex digits = 64 key bytes
    let upstream = Upstream::start();
    let mut envoy = EnvoyBuilder::new(upstream.addr())
        .config(format!(
            r#"{{"secret":"{SECRET}","secret_encoding":"hex","ttl_seconds":60,"issuer":"jwt-proxy","audience":"orders","key_id":"k-2026","user_header":"x-user"}}"#
        ))
        .env("JWT_SECRET", &env_secret)
        .start();
    envoy.forbid(&env_secret);
    exchange(envoy.addr(), &post("/", &["X-User: alice"], b"{}"));
    let token = upstream.last().one("x-my-jwt").unwrap();
    let key = hex_decode(&env_secret);
    let claims = verify(&token, &key);
    assert!(
        jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
            &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS512)
        )
        .is_err(),
        "the environment's key wins over the configured one"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap(),
        claims["iat"].as_u64().unwrap() + 60
    );
    assert_eq!(claims["iss"], "jwt-proxy");
    assert_eq!(claims["aud"], "orders");
    assert_eq!(claims["payload"]["user"], "alice");
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some("k-2026")
    );
    let configured = envoy.wait_for_log("jwt-proxy configured");
    assert!(
        configured.contains("64 bytes from env JWT_SECRET"),
        "{configured}"
    );
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn user_header_values_stay_valid_json_and_have_a_limit() {
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr())
        .config(format!(r#"{{"secret":"{SECRET}","user_header":"x-user"}}"#))
        .start();
    let nasty = r#"o"brien \ <b>&'#;"#;
    exchange(
        envoy.addr(),
        &post("/", &[&format!("X-User: {nasty}")], b"{}"),
    );
    let claims = verify(&upstream.last().one("x-my-jwt").unwrap(), SECRET.as_bytes());
    assert_eq!(claims["payload"]["user"], nasty);

    // Non-UTF-8 bytes become U+FFFD; the claims stay valid JSON.
    let mut req = post("/", &[], b"{}");
    let at = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    req.splice(at..at, b"\r\nX-User: caf\xe9".iter().copied());
    assert_eq!(exchange(envoy.addr(), &req).status, 200);
    let claims = verify(&upstream.last().one("x-my-jwt").unwrap(), SECRET.as_bytes());
    assert_eq!(claims["payload"]["user"], "caf\u{fffd}");

    // Absent: the configured default.
    exchange(envoy.addr(), &post("/", &[], b"{}"));
    let claims = verify(&upstream.last().one("x-my-jwt").unwrap(), SECRET.as_bytes());
    assert_eq!(claims["payload"]["user"], "username");

    // Over 256 bytes: 400, nothing forwarded.
    let before = upstream.seen().len();
    let resp = exchange(
        envoy.addr(),
        &post("/", &[&format!("X-User: {}", "u".repeat(257))], b"{}"),
    );
    assert_eq!(resp.status, 400);
    assert_eq!(upstream.seen().len(), before);
    let resp = exchange(
        envoy.addr(),
        &post("/", &[&format!("X-User: {}", "u".repeat(256))], b"{}"),
    );
    assert_eq!(resp.status, 200);
}

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
fn hop_by_hop_response_headers_are_not_forwarded() {
    let upstream = Scripted::start(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Upstream-Private\r\nX-Upstream-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-Sum\r\nX-Kept: yes\r\n\r\nok",
    ));
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    let resp = exchange(envoy.addr(), &post("/", &[], b"{}"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
    for h in [
        "x-upstream-private",
        "keep-alive",
        "proxy-connection",
        "trailer",
    ] {
        assert!(
            resp.all(h).is_empty(),
            "{h} reached the client: {:?}",
            resp.headers
        );
    }
    assert_eq!(resp.header("x-kept"), Some("yes"));
}

#[test]
fn http10_clients_are_served_and_closed() {
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    let mut conn = Conn::connect(envoy.addr()).unwrap();
    conn.send(
        b"POST /old HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    .unwrap();
    let resp = conn.read_response(false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.version, "HTTP/1.0", "an HTTP/1.0 exchange");
    assert_eq!(resp.body, b"{}");
    assert!(
        conn.closed_by_peer(Duration::from_secs(5)),
        "no persistent connection with an HTTP/1.0 client"
    );
    let seen = upstream.last();
    assert_eq!(
        seen.version, "HTTP/1.1",
        "the upstream link is HTTP/1.1 on its own"
    );
    verify(&seen.one("x-my-jwt").unwrap(), SECRET.as_bytes());

    // A second HTTP/1.0 client: a new client connection, the same upstream one.
    exchange(envoy.addr(), b"GET /again HTTP/1.0\r\n\r\n");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].peer, seen[1].peer,
        "the upstream connection persists independently"
    );
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
fn upstream_down_is_503_within_a_second() {
    let envoy = EnvoyBuilder::new(dead_addr()).start();
    let started = Instant::now();
    let resp = exchange(envoy.addr(), &post("/", &[], b"{}"));
    assert_eq!(resp.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    // Still serving.
    assert_eq!(
        exchange(envoy.addr(), &bare("GET", "/status", &[])).status,
        200
    );
}

#[test]
fn upstream_too_slow_is_504() {
    let upstream = Scripted::start(None);
    let envoy = EnvoyBuilder::new(upstream.addr())
        .upstream_timeout("1s")
        .start();
    let started = Instant::now();
    let resp = exchange(envoy.addr(), &post("/", &[], b"{}"));
    assert_eq!(resp.status, 504);
    assert!(started.elapsed() < Duration::from_secs(5));
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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn admin_interface_is_loopback_and_shows_the_filter_metrics() {
    let upstream = Upstream::start();
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    assert!(envoy.admin().ip().is_loopback());
    exchange(envoy.addr(), &post("/", &[], b"{}"));
    exchange(envoy.addr(), &bare("GET", "/", &[]));
    assert_eq!(
        envoy.stat("wasmcustom.jwt_proxy.requests_processed"),
        Some(2)
    );
    assert_eq!(envoy.stat("wasmcustom.jwt_proxy.requests_signed"), Some(1));
    let log = envoy.log();
    assert!(!log.contains(SECRET));
    let token = upstream.seen()[0].one("x-my-jwt").unwrap();
    assert!(!log.contains(&token), "a whole token was logged");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token signature was logged");
    let configured = envoy.wait_for_log("jwt-proxy configured");
    assert!(
        configured.contains("<redacted: 128 bytes from secret, fingerprint "),
        "{configured}"
    );
    let _ = raw::blocking_get(envoy.admin(), "/ready");
}
