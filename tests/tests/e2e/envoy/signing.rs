//! Signing, `/status`, configuration and secrets in the real Envoy binary
//! (SPEC sections 2 and 3).

use std::collections::HashSet;
use std::time::Duration;

use jwt_proxy_tests::raw::{self, bare, exchange, post};
use jwt_proxy_tests::{EnvoyBuilder, HeldPort, SECRET, Upstream, now_secs, verify};
use serde_json::Value;
use time::OffsetDateTime;

use super::status_json;

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
        utc_date(iat),
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

/// The UTC calendar date of `secs`, by the `time` crate (not the filter's
/// own civil-date code, so the check is independent).
fn utc_date(secs: u64) -> String {
    let date = OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap())
        .unwrap()
        .date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
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
    let refusing = HeldPort::new();
    let upstream = refusing.addr();
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
