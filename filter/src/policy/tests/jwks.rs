//! The JWKS path (SPEC section 2.7).

use super::*;
use crate::test_support::keys::{ED_A, P256_A_PUB};
use crate::test_support::{SECRET, ring_config};
use serde_json::json;

fn eddsa(extra: serde_json::Value) -> Config {
    ring_config(
        json!([{"id": "e", "alg": "EdDSA", "private_key": ED_A}]),
        extra,
    )
}

#[test]
fn get_and_head_on_the_jwks_path_are_answered_without_reading_a_header() {
    let c = eddsa(json!({}));
    for method in ["GET", "HEAD"] {
        let req = Req::default();
        assert_eq!(
            decide(&c, method, "/.well-known/jwks.json", &req),
            Decision::Jwks
        );
        assert!(req.asked().is_empty(), "{:?}", req.asked());
    }
    // Another jwks_path moves it; the old one is an ordinary path.
    let moved = eddsa(json!({"jwks_path": "/keys"}));
    assert_eq!(
        decide(&moved, "GET", "/keys", &Req::default()),
        Decision::Jwks
    );
    assert_eq!(
        decide(&moved, "GET", "/.well-known/jwks.json", &Req::default()),
        strip()
    );
}

#[test]
fn other_methods_on_the_jwks_path_get_405_never_a_token() {
    let c = eddsa(json!({}));
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "get"] {
        assert_eq!(
            decide(&c, method, "/.well-known/jwks.json", &Req::default()),
            not_allowed(JWKS_ALLOW),
            "{method}"
        );
    }
    assert_eq!(JWKS_ALLOW, "GET, HEAD");
}

#[test]
fn a_ring_without_asymmetric_keys_leaves_the_path_alone() {
    for c in [
        config(""),
        ring_config(json!([{"id": "h", "secret": SECRET}]), json!({})),
    ] {
        assert_eq!(c.jwks, None);
        assert_eq!(
            decide(&c, "GET", "/.well-known/jwks.json", &Req::default()),
            strip()
        );
        assert_eq!(
            decide(&c, "POST", "/.well-known/jwks.json", &Req::default()),
            sign("username")
        );
    }
}

#[test]
fn a_published_public_key_alone_serves_the_jwks_and_posts_are_still_signed() {
    let c = ring_config(
        json!([{"id": "h", "secret": SECRET},
               {"id": "old", "alg": "ES256", "public_key": P256_A_PUB}]),
        json!({}),
    );
    assert!(c.jwks.is_some());
    assert_eq!(
        decide(&c, "GET", "/.well-known/jwks.json", &Req::default()),
        Decision::Jwks
    );
    assert_eq!(decide(&c, "POST", "/", &Req::default()), sign("username"));
    // The status path keeps its place.
    assert_eq!(
        decide(&c, "GET", "/status", &Req::default()),
        Decision::Status(Format::Json)
    );
}
