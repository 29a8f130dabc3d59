//! The asymmetric keys of SPEC section 2.7.

use super::*;
use crate::test_support::keys::*;
use serde_json::json;

fn parse_doc(doc: serde_json::Value) -> Result<Config, ConfigError> {
    parse(&doc.to_string())
}

/// Every PEM body line of the fixtures: no error may quote one.
fn assert_quotes_no_key(e: &ConfigError) {
    let text = e.to_string();
    for pem in [
        ED_A,
        ED_A_PUB,
        P256_A,
        P256_A_PUB,
        P256_A_SEC1,
        P384,
        P384_PUB,
    ] {
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(&line[..16]), "{text}");
        }
    }
    assert!(!text.contains(SECRET), "{text}");
}

#[test]
fn an_eddsa_ring_signs_with_its_key_and_publishes_it() {
    let c =
        parse_doc(json!({"keys": [{"id": "e1", "alg": "EdDSA", "private_key": ED_A}]})).unwrap();
    assert_eq!((c.alg, c.key_id.as_deref()), (Alg::EdDsa, Some("e1")));
    assert_eq!(c.key.len(), 32);
    assert_eq!(c.ring[0].public.len(), 32);
    assert!(c.ring[0].can_sign());
    let jwks = c.jwks.as_ref().unwrap();
    assert_eq!(jwks.cache_control, "public, max-age=300");
    assert!(
        jwks.body
            .starts_with(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":""#)
    );
    assert!(
        jwks.body
            .ends_with(r#"","kid":"e1","alg":"EdDSA","use":"sig"}]}"#)
    );
    assert_eq!(
        jwks.headers(),
        [
            ("content-type", "application/json"),
            ("cache-control", "public, max-age=300")
        ]
    );
    assert_eq!(c.jwks_path, "/.well-known/jwks.json");
}

#[test]
fn the_jwks_lists_every_asymmetric_key_in_ring_order_never_an_hmac_key() {
    let c = parse_doc(json!({
        "keys": [
            {"id": "h", "secret": SECRET},
            {"id": "p-old", "alg": "ES256", "public_key": P256_B_PUB},
            {"id": "p", "alg": "ES256", "private_key": P256_A},
            {"id": "e", "alg": "EdDSA", "private_key": ED_B},
        ],
        "signing_key": "p",
        "jwks_path": "/keys",
        "jwks_max_age_seconds": 60,
    }))
    .unwrap();
    assert_eq!((c.alg, c.key_id.as_deref()), (Alg::Es256, Some("p")));
    let jwks = c.jwks.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&jwks.body).unwrap();
    let kids: Vec<_> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["kty"].as_str().unwrap()))
        .collect();
    assert_eq!(kids, [("p-old", "EC"), ("p", "EC"), ("e", "OKP")]);
    assert!(!jwks.body.contains("oct"), "{}", jwks.body);
    assert_eq!(jwks.cache_control, "public, max-age=60");
    assert_eq!(c.jwks_path, "/keys");
    assert!(!c.ring[1].can_sign());
}

#[test]
fn the_default_configuration_has_no_jwks_and_signs_hs512() {
    let c = parse(&format!(r#"{{"secret":"{SECRET}"}}"#)).unwrap();
    assert_eq!((c.alg, c.jwks.as_ref()), (Alg::Hs512, None));
    let ring = parse(&format!(
        r#"{{"keys":[{{"id":"a","secret":"{SECRET}","alg":"HS512"}}]}}"#
    ))
    .unwrap();
    assert_eq!((ring.alg, ring.jwks), (Alg::Hs512, None));
    // The start line is today's: nothing about JWKS.
    assert!(!c.to_string().contains("jwks"), "{c}");
}

#[test]
fn a_private_key_from_the_environment() {
    let doc = json!({"keys": [{"id": "p", "alg": "ES256", "private_key_env": "P_KEY"}]});
    let env = |name: &str| (name == "P_KEY").then(|| P256_A.to_owned());
    let c = Config::parse(doc.to_string().as_bytes(), env).unwrap();
    assert_eq!(c.key_source, KeySource::Env("P_KEY".to_owned()));
    let e = parse_doc(doc).unwrap_err();
    assert_eq!(e.field, "keys[0].private_key_env");
    assert!(e.reason.contains("P_KEY"), "{e}");
}

#[test]
fn each_bad_asymmetric_key_is_refused_naming_the_field_never_quoting_the_key() {
    let k = |fields: serde_json::Value| {
        let mut key = json!({"id": "k"});
        key.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        json!({"keys": [key]})
    };
    let cases = [
        // Unknown alg, or a JOSE name in the wrong case.
        (
            k(json!({"alg": "RS256", "private_key": P256_A})),
            "keys[0].alg",
            "unknown variant",
        ),
        (
            k(json!({"alg": "es256", "private_key": P256_A})),
            "keys[0].alg",
            "unknown variant",
        ),
        (k(json!({"alg": 256})), "keys[0].alg", "invalid type"),
        // Not PEM, or PEM of the wrong kind.
        (
            k(json!({"alg": "EdDSA", "private_key": "not a key"})),
            "keys[0].private_key",
            "not a PEM",
        ),
        (
            k(json!({"alg": "ES256", "private_key": P256_A.replace('M', "N")})),
            "keys[0].private_key",
            "",
        ),
        (
            k(json!({"alg": "EdDSA", "private_key": ED_A_PUB})),
            "keys[0].private_key",
            "public key",
        ),
        (
            k(json!({"alg": "ES256", "private_key": P256_A_SEC1})),
            "keys[0].private_key",
            "SEC1",
        ),
        (
            k(json!({"alg": "ES256", "public_key": P256_A})),
            "keys[0].public_key",
            "private key",
        ),
        // The wrong curve or family.
        (
            k(json!({"alg": "ES256", "private_key": P384})),
            "keys[0].private_key",
            "curve other than P-256",
        ),
        (
            k(json!({"alg": "ES256", "public_key": P384_PUB})),
            "keys[0].public_key",
            "curve other than P-256",
        ),
        (
            k(json!({"alg": "EdDSA", "private_key": P256_A})),
            "keys[0].private_key",
            "is a P-256 key",
        ),
        (
            k(json!({"alg": "ES256", "private_key": ED_A})),
            "keys[0].private_key",
            "is an Ed25519 key",
        ),
        (
            k(json!({"alg": "ES256", "public_key": ED_A_PUB})),
            "keys[0].public_key",
            "is an Ed25519 key",
        ),
        // HMAC fields on an asymmetric key and the other way round.
        (
            k(json!({"private_key": ED_A})),
            "keys[0].private_key",
            "only for `alg`",
        ),
        (
            k(json!({"alg": "HS512", "secret": SECRET, "public_key": P256_A_PUB})),
            "keys[0].public_key",
            "only for `alg`",
        ),
        (
            k(json!({"alg": "EdDSA", "secret": SECRET})),
            "keys[0].secret",
            "has no `secret`",
        ),
        (
            k(json!({"alg": "EdDSA", "secret_env": "K"})),
            "keys[0].secret_env",
            "has no `secret_env`",
        ),
        // `encoding` is how an HMAC secret becomes bytes: an error, not ignored.
        (
            k(json!({"alg": "EdDSA", "private_key": ED_A, "encoding": "hex"})),
            "keys[0].encoding",
            "only for HS512 keys",
        ),
        (
            k(json!({"alg": "ES256", "public_key": P256_A_PUB, "encoding": "utf8"})),
            "keys[0].encoding",
            "only for HS512 keys",
        ),
        (
            json!({"keys": [{"id": "h", "secret": SECRET},
                            {"id": "e", "alg": "ES256", "private_key_env": "K", "encoding": "utf8"}]}),
            "keys[1].encoding",
            "only for HS512 keys",
        ),
        // Missing, or too many sources.
        (k(json!({"alg": "EdDSA"})), "keys[0].private_key", "missing"),
        (
            k(json!({"alg": "EdDSA", "private_key": ED_A, "private_key_env": "K"})),
            "keys[0].private_key",
            "not both",
        ),
        (
            k(json!({"alg": "EdDSA", "private_key": ED_A, "public_key": ED_A_PUB})),
            "keys[0].public_key",
            "does not sign",
        ),
        (
            k(json!({"alg": "EdDSA", "private_key": ED_A, "pem": "x"})),
            "keys[0].pem",
            "unknown field",
        ),
        // A public key cannot sign, whether named or first.
        (
            json!({"keys": [{"id": "a", "alg": "ES256", "public_key": P256_A_PUB},
                            {"id": "b", "alg": "ES256", "private_key": P256_A}],
                   "signing_key": "a"}),
            "signing_key",
            "cannot sign",
        ),
        (
            json!({"keys": [{"id": "a", "alg": "ES256", "public_key": P256_A_PUB},
                            {"id": "b", "alg": "ES256", "private_key": P256_A}]}),
            "signing_key",
            "the first key",
        ),
        // The JWKS fields.
        (
            k(json!({"alg": "EdDSA", "private_key": ED_A})).tap("jwks_path", json!("keys")),
            "jwks_path",
            "absolute path",
        ),
        (
            k(json!({"alg": "EdDSA", "private_key": ED_A})).tap("jwks_path", json!("/status")),
            "jwks_path",
            "differ",
        ),
        (
            k(json!({"alg": "EdDSA", "private_key": ED_A})).tap("jwks_max_age_seconds", json!(-1)),
            "jwks_max_age_seconds",
            "whole number",
        ),
    ];
    for (doc, field, reason) in cases {
        let e = parse_doc(doc.clone()).unwrap_err();
        assert_eq!(e.field, field, "{doc}: {e}");
        assert!(e.reason.contains(reason), "{doc}: {e}");
        assert_quotes_no_key(&e);
    }
}

/// `doc` with one more field.
trait Tap {
    fn tap(self, name: &str, value: serde_json::Value) -> Self;
}

impl Tap for serde_json::Value {
    fn tap(mut self, name: &str, value: serde_json::Value) -> Self {
        self.as_object_mut().unwrap().insert(name.to_owned(), value);
        self
    }
}

#[test]
fn the_start_line_shows_asymmetric_keys_by_fingerprint_only() {
    let c = parse_doc(json!({
        "keys": [{"id": "e", "alg": "EdDSA", "private_key": ED_A},
                 {"id": "p", "alg": "ES256", "public_key": P256_A_PUB}]
    }))
    .unwrap();
    let line = c.to_string();
    assert!(
        line.starts_with("keys=[e:<EdDSA private key from private_key, public key fingerprint "),
        "{line}"
    );
    assert!(
        line.contains(",p:<ES256 public key only, fingerprint "),
        "{line}"
    );
    assert!(
        line.ends_with(r#" alg=EdDSA jwks_path="/.well-known/jwks.json" jwks_max_age_seconds=300"#),
        "{line}"
    );
    let raw = format!(
        "{:?}",
        RawConfig::from_json(
            json!({"keys": [{"id": "e", "alg": "EdDSA", "private_key": ED_A}]})
                .to_string()
                .as_bytes()
        )
        .unwrap()
    );
    for text in [&line, &raw] {
        for l in ED_A.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(&l[..16]), "{text}");
        }
    }
}
