//! Identity assertions (SPEC section 2.7, issue 23) on Envoy and the test
//! host side by side: EdDSA and ES256 tokens whose header follows the
//! signing key, verified by two other implementations (the `jsonwebtoken`
//! crate and PyJWT's `PyJWKClient`) from the JWKS the proxy serves, and
//! that JWKS reply itself: its bytes and headers, `HEAD`, `405`, never
//! forwarded or counted.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::{Response, bare, exchange, post};
use jwt_proxy_tests::{SECRET, Upstream, VerifyKey, root, verify_with};
use serde_json::{Value, json};

use crate::util::{run, status};

const JWKS_PATH: &str = "/.well-known/jwks.json";

/// A test-only key of tests/fixtures/keys.
fn key(name: &str) -> String {
    let path = root().join("tests/fixtures/keys").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The DER bytes of a PEM document.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

/// The venv's python with PyJWT[crypto] (`make pyjwt`; `make test` runs it).
fn pyjwt_python() -> std::path::PathBuf {
    let python = root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: `make pyjwt` (make test runs it) installs PyJWT[crypto] there",
        python.display()
    );
    python
}

/// PyJWT's view of `token`: `PyJWKClient` on the proxy's JWKS URL alone.
fn pyjwt(proxy: &Proxy, alg: &str, token: &str) -> Value {
    let url = format!("http://{}{JWKS_PATH}", proxy.addr());
    let out = run(Command::new(pyjwt_python())
        .arg(root().join("tests/pyjwt_verify.py"))
        .args([url.as_str(), alg, token]));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one token the upstream saw on the last request.
fn token(upstream: &Upstream) -> String {
    let tokens = upstream.last().all("x-my-jwt");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    tokens[0].clone()
}

/// A segment of a compact JWS, decoded.
fn segment(token: &str, i: usize) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.split('.').nth(i).unwrap())
        .unwrap()
}

/// One key signing: the token's header follows it, and the `jsonwebtoken`
/// crate (from the served JWKS, and from the PEM public key) and PyJWT (from
/// the JWKS URL) verify it, on both hosts. Returns the JWK each host served.
fn signs_and_publishes(alg: &str, private: &str, public: &str) -> Vec<Value> {
    let upstream = Upstream::start();
    let config = json!({"keys": [{"id": "k1", "alg": alg, "private_key": key(private)}]});
    let setup = Setup {
        config: config.to_string(),
        ..Setup::new(upstream.addr())
    };
    let public = key(public);
    let mut jwks = Vec::new();
    for proxy in setup.both() {
        let name = proxy.name();
        let resp = exchange(proxy.addr(), &post("/orders?id=1", &[], br#"{"a":1}"#));
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
        let token = token(&upstream);
        assert_eq!(
            String::from_utf8(segment(&token, 0)).unwrap(),
            format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"k1"}}"#),
            "{name}"
        );
        // ES256: R || S, never DER; Ed25519: 64 bytes too.
        assert_eq!(segment(&token, 2).len(), 64, "{name}");

        let served = exchange(proxy.addr(), &bare("GET", JWKS_PATH, &[]));
        assert_eq!(served.status, 200, "{name}");
        let body = served.text();
        let claims = verify_with(&token, &VerifyKey::Jwks(&body));
        assert_eq!(claims, verify_with(&token, &VerifyKey::PublicPem(&public)));
        assert_eq!(claims["payload"]["user"], "username", "{name}");
        assert!(claims["iat"].is_u64(), "{name}: {claims}");

        let py = pyjwt(&proxy, alg, &token);
        assert_eq!(py["claims"], claims, "{name}: {py}");
        assert_eq!(py["header"]["kid"], "k1", "{name}: {py}");
        assert_eq!(py["header"]["alg"], alg, "{name}: {py}");

        let doc: Value = serde_json::from_str(&body).unwrap();
        jwks.push(doc["keys"][0].clone());
    }
    assert_eq!(jwks[0], jwks[1], "the JWK differs between the hosts");
    jwks
}

#[test]
fn eddsa_tokens_verify_from_the_served_jwks_on_both_hosts() {
    let jwk = signs_and_publishes("EdDSA", "ed25519-a.pem", "ed25519-a.pub.pem").remove(0);
    // The JWK's `x` is the SPKI's key (its last 32 bytes), read here
    // without the filter's code.
    let spki = der(&key("ed25519-a.pub.pem"));
    assert_eq!(
        jwk,
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&spki[spki.len() - 32..]),
               "kid": "k1", "alg": "EdDSA", "use": "sig"})
    );
}

#[test]
fn es256_tokens_verify_from_the_served_jwks_on_both_hosts() {
    let jwk = signs_and_publishes("ES256", "p256-a.pem", "p256-a.pub.pem").remove(0);
    // The SPKI ends with the uncompressed point: 0x04, x, y.
    let spki = der(&key("p256-a.pub.pem"));
    let point = &spki[spki.len() - 65..];
    assert_eq!(point[0], 4);
    assert_eq!(
        jwk,
        json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
               "y": URL_SAFE_NO_PAD.encode(&point[33..]), "kid": "k1", "alg": "ES256", "use": "sig"})
    );
}

/// The headers a JWKS reply is compared by (Envoy adds `date` and `server`).
fn reply_headers(resp: &Response) -> Vec<(String, Option<String>)> {
    ["content-type", "cache-control", "content-length", "allow"]
        .into_iter()
        .map(|h| (h.to_owned(), resp.header(h).map(str::to_owned)))
        .collect()
}

#[test]
fn the_jwks_reply_is_the_same_bytes_on_both_hosts_never_forwarded_or_counted() {
    let upstream = Upstream::start();
    // A mixed ring in migration: HMAC (never published), a retired ES256
    // key (published, never signs) and the EdDSA key that signs.
    let config = json!({
        "keys": [
            {"id": "h1", "secret": SECRET},
            {"id": "p-old", "alg": "ES256", "public_key": key("p256-b.pub.pem")},
            {"id": "e1", "alg": "EdDSA", "private_key": key("ed25519-a.pem")},
        ],
        "signing_key": "e1",
        "jwks_max_age_seconds": 120,
    });
    let setup = Setup {
        config: config.to_string(),
        ..Setup::new(upstream.addr())
    };
    let mut seen = Vec::new();
    for proxy in setup.both() {
        let name = proxy.name();
        let before = upstream.seen().len();
        let get = exchange(proxy.addr(), &bare("GET", JWKS_PATH, &[]));
        let query = exchange(proxy.addr(), &bare("GET", &format!("{JWKS_PATH}?x=1"), &[]));
        let head = exchange(proxy.addr(), &bare("HEAD", JWKS_PATH, &[]));
        assert_eq!(
            (get.status, query.status, head.status),
            (200, 200, 200),
            "{name}"
        );
        assert_eq!(
            get.header("content-type"),
            Some("application/json"),
            "{name}"
        );
        assert_eq!(
            get.header("cache-control"),
            Some("public, max-age=120"),
            "{name}"
        );
        assert_eq!(query.body, get.body, "{name}");
        assert!(head.body.is_empty(), "{name}");
        assert_eq!(reply_headers(&head), reply_headers(&get), "{name}");
        let doc: Value = serde_json::from_slice(&get.body).unwrap();
        let kids: Vec<_> = doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["kid"].as_str().unwrap(), k["alg"].as_str().unwrap()))
            .collect();
        assert_eq!(kids, [("p-old", "ES256"), ("e1", "EdDSA")], "{name}");
        assert!(!get.text().contains("oct"), "{name}: {}", get.text());

        let mut refused = Vec::new();
        for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
            let resp = exchange(
                proxy.addr(),
                &bare(method, JWKS_PATH, &["Content-Length: 0"]),
            );
            assert_eq!(resp.status, 405, "{name} {method}");
            assert_eq!(resp.header("allow"), Some("GET, HEAD"), "{name} {method}");
            refused.push((resp.status, reply_headers(&resp), resp.body));
        }
        // Nothing reached the upstream, nothing was counted.
        assert_eq!(upstream.seen().len(), before, "{name}");
        assert_eq!(status(&proxy)["requests_processed"], 0, "{name}");
        // A POST elsewhere is signed with the EdDSA key and counted.
        let signed = exchange(proxy.addr(), &post("/", &[], b"{}"));
        assert_eq!(signed.status, 200, "{name}");
        let token = token(&upstream);
        assert_eq!(
            verify_with(&token, &VerifyKey::Jwks(&get.text()))["payload"]["user"],
            "username"
        );
        assert_eq!(status(&proxy)["requests_processed"], 1, "{name}");
        seen.push((reply_headers(&get), reply_headers(&head), get.body, refused));
    }
    assert!(
        seen[0] == seen[1],
        "the JWKS replies differ:\n{:?}\n{:?}",
        seen[0],
        seen[1]
    );
}

#[test]
fn a_ring_without_asymmetric_keys_forwards_the_jwks_path() {
    let upstream = Upstream::start();
    for proxy in Setup::new(upstream.addr()).both() {
        let resp = exchange(proxy.addr(), &bare("GET", JWKS_PATH, &[]));
        assert_eq!(resp.status, 200, "{}", proxy.name());
        assert_eq!(upstream.last().uri, JWKS_PATH, "{}", proxy.name());
        assert_eq!(status(&proxy)["requests_processed"], 1, "{}", proxy.name());
    }
}
