//! Secret hygiene (issue 5): a representative session — signing, unsigned
//! and forged requests, `/status` in both formats, local refusals, an
//! unreachable upstream, bad configurations, a guest panic — on Envoy and the
//! test host, then a scan of everything the proxies wrote or answered for
//! the key (as text, hex, base64 and raw bytes) and for every token the
//! upstream saw (whole, or its signature).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::{Response, bare, blocking_get, exchange, post};
use jwt_proxy_tests::{HeldPort, SECRET, Upstream, wait_until, wasm};

/// A second key, given through `JWT_SECRET` (128 hex digits: 64 key bytes).
const ENV_SECRET: &str = "0badc0de5eed1e55feedfacecafebabe0badc0de5eed1e55feedfacecafebabe0badc0de5eed1e55feedfacecafebabe0badc0de5eed1e55feedfacecafebabe";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every form a key could leak in: text, hex (both cases), base64, and for
/// hex keys the decoded bytes and their base64.
fn key_forms(text: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![
        text.as_bytes().to_vec(),
        text.as_bytes()[..32].to_vec(),
        hex(text.as_bytes()).into_bytes(),
        hex(text.as_bytes()).to_uppercase().into_bytes(),
        STANDARD.encode(text).into_bytes(),
        URL_SAFE_NO_PAD.encode(text).into_bytes(),
    ];
    if text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let raw = unhex(text);
        forms.push(STANDARD.encode(&raw).into_bytes());
        forms.push(URL_SAFE_NO_PAD.encode(&raw).into_bytes());
        forms.push(text.to_uppercase().into_bytes());
        forms.push(raw);
    }
    forms
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Everything a client got back from the proxy itself: status line, headers
/// and body. (Echoed upstream answers carry the token by design — the echo
/// shows what arrived — so only local replies are collected.)
fn local(resp: &Response) -> Vec<u8> {
    let mut out = format!("{} {}\n", resp.version, resp.status).into_bytes();
    for (k, v) in &resp.headers {
        out.extend_from_slice(format!("{k}: {v}\n").as_bytes());
    }
    out.extend_from_slice(&resp.body);
    out
}

/// The session on one proxy; returns what it answered locally.
fn session(proxy: &Proxy) -> Vec<u8> {
    let a = proxy.addr();
    let mut answered = Vec::new();
    for i in 0..20 {
        let user = format!("X-User: user-{i}");
        let forged = "X-My-Jwt: eyJhbGciOiJub25lIn0.e30.forged";
        assert_eq!(
            exchange(a, &post(&format!("/s/{i}?q=1"), &[&user, forged], b"{}")).status,
            200
        );
        assert_eq!(
            exchange(a, &bare("GET", &format!("/g/{i}"), &[forged])).status,
            200
        );
    }
    for req in [
        bare("GET", "/status", &[]),
        bare("GET", "/status", &["Accept: text/html"]),
        bare("HEAD", "/status", &[]),
        post("/status", &[], b"{}"),
        post("/", &[&format!("X-User: {}", "u".repeat(300))], b"{}"),
    ] {
        let resp = exchange(a, &req);
        assert!(resp.status < 500, "{}: {}", proxy.name(), resp.status);
        answered.extend(local(&resp));
    }
    answered
}

#[test]
fn no_key_and_no_token_in_any_log_status_page_or_local_reply() {
    let upstream = Upstream::start();
    let utf8 = format!(r#"{{"secret":"{SECRET}","user_header":"x-user"}}"#);
    let hex_env = format!(
        r#"{{"secret":"{SECRET}","secret_encoding":"hex","user_header":"x-user","key_id":"k1"}}"#
    );
    // (what, bytes) — everything the proxies wrote or answered.
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();

    // Each proxy: the key from the configuration, then from the environment (hex).
    let env = vec![("JWT_SECRET".to_owned(), ENV_SECRET.to_owned())];
    for (label, config, env) in [("utf8", &utf8, vec![]), ("hex+env", &hex_env, env)] {
        let setup = Setup {
            config: config.clone(),
            workers: 2,
            env,
            ..Setup::new(upstream.addr())
        };
        for proxy in setup.both() {
            let name = proxy.name();
            let answered = session(&proxy);
            outputs.push((format!("{name} {label} replies"), answered));
            if let Proxy::Envoy(envoy) = &proxy {
                let (_, stats) = blocking_get(envoy.admin(), "/stats").unwrap();
                outputs.push((format!("envoy {label} admin /stats"), stats));
            }
            outputs.push((
                format!("{name} {label} log"),
                proxy.all_output().into_bytes(),
            ));
        }
    }

    // An unreachable upstream: the 503 and the log.
    let refusing = HeldPort::new();
    let envoy = Setup {
        config: utf8.clone(),
        ..Setup::new(refusing.addr())
    }
    .envoy();
    let resp = exchange(envoy.addr(), &post("/", &[], b"{}"));
    assert_eq!(resp.status, 503);
    outputs.push(("envoy 503".into(), local(&resp)));
    outputs.push(("envoy 503 log".into(), envoy.all_output().into_bytes()));
    drop(envoy);

    // Bad configurations that carry the key: Envoy refuses, the test host too.
    for bad in [
        format!(r#"{{"secret":"{SECRET}","colour":"red"}}"#),
        format!(r#"{{"secret":"{SECRET}","secret_encoding":"hex","header":"bad header"}}"#),
        format!(
            r#"{{"secret":"{}","secret_encoding":"hex"}}"#,
            &SECRET[..126]
        ),
        format!(r#"{{"secret":"{SECRET}","sign_methods":[]}}"#),
        format!(r#"{{"secret":"{SECRET}""#),
    ] {
        let refusal = Setup {
            config: bad.clone(),
            ..Setup::new(refusing.addr())
        }
        .refused();
        assert!(!refusal.envoy_status.success());
        outputs.push((
            format!("envoy refusing {bad:.40}"),
            refusal.envoy_log.into_bytes(),
        ));
        let err = refusal.host;
        outputs.push((
            format!("test-host refusing {bad:.40}"),
            format!("{err} {err:?}").into_bytes(),
        ));
    }

    // A guest panic (the fixture, given the key as its configuration).
    let panicking = Setup {
        wasm: wasm("panic_filter"),
        config: utf8.clone(),
        ..Setup::new(upstream.addr())
    };
    for proxy in panicking.both() {
        let name = proxy.name();
        let resp = exchange(proxy.addr(), &post("/", &["X-Fixture-Panic: 1"], b"{}"));
        assert_eq!(resp.status, 503);
        outputs.push((format!("{name} panic 503"), local(&resp)));
        if name == "envoy" {
            // Served again once the VM is reloaded (FAIL_RELOAD).
            wait_until(Duration::from_secs(10), "reloaded", || {
                (exchange(proxy.addr(), &post("/", &[], b"{}")).status == 200).then_some(())
            });
        }
        outputs.push((format!("{name} panic log"), proxy.all_output().into_bytes()));
    }

    // The scan.
    let tokens: Vec<String> = upstream
        .seen()
        .iter()
        .flat_map(|s| s.all("x-my-jwt"))
        .filter(|t| !t.ends_with(".forged"))
        .collect();
    assert!(
        tokens.len() >= 80,
        "the session signed {} requests",
        tokens.len()
    );
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, key) in [("the key", SECRET), ("the env key", ENV_SECRET)] {
        for (i, form) in key_forms(key).into_iter().enumerate() {
            needles.push((format!("{name} (form {i})"), form));
        }
    }
    for t in &tokens {
        needles.push(("a whole token".into(), t.as_bytes().to_vec()));
        let signature = t.rsplit('.').next().unwrap();
        needles.push(("a token signature".into(), signature.as_bytes().to_vec()));
    }
    let mut leaks = Vec::new();
    let scanned: usize = outputs.iter().map(|(_, o)| o.len()).sum();
    for (what, out) in &outputs {
        for (name, needle) in &needles {
            if contains(out, needle) {
                leaks.push(format!("{name} in {what}"));
            }
        }
    }
    eprintln!(
        "hygiene: scanned {} outputs ({scanned} bytes) for {} needles ({} tokens)",
        outputs.len(),
        needles.len(),
        tokens.len()
    );
    assert!(leaks.is_empty(), "leaked: {leaks:#?}");
    assert!(
        outputs
            .iter()
            .any(|(w, o)| w.contains("log") && contains(o, b"jti=")),
        "the scan saw the per-request log lines"
    );
}
