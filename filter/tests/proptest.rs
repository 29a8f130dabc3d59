//! Property tests (issue 5) of the filter's plain-Rust modules, natively:
//! configuration parsing on arbitrary bytes, JSON-like text and JSON
//! objects (the values `serde_json` writes are the values read; what
//! `serde_json` refuses is a `configuration` error), the signer on arbitrary
//! clocks, nonces and users (checked with the `jsonwebtoken` crate), dates
//! (checked with the `time` crate), the status page on arbitrary figures, and
//! the secret hygiene of every `Debug` and error text.
//!
//! Case count: `PROPTEST_CASES` (proptest's default, 256, in `make test`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use jwt_filter::config::{Config, MAX_USER_LEN, MIN_KEY_LEN, RawConfig, SecretEncoding};
use jwt_filter::jwt::{NONCE_LEN, Signer, utc_date};
use jwt_filter::status::{Figures, rfc3339, wants_html};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const SECRET: &str = "a9ddbcaba8c0ac1a0a812dc0c2f08514b23f2db0a68343cb8199ebb38a6d91e4ebfb378e22ad39c2d01d0b4ec9c34aa91056862ddace3fbbd6852ee60c36acbf";

/// Every field the configuration knows.
const FIELDS: [&str; 15] = [
    "secret",
    "secret_env",
    "secret_encoding",
    "header",
    "sign_methods",
    "user",
    "user_header",
    "status_path",
    "ttl_seconds",
    "issuer",
    "audience",
    "key_id",
    "keys",
    "signing_key",
    "log_requests",
];

/// Latest second with a four-digit year (9999-12-31T23:59:59Z).
const LAST_SECOND: u64 = 253_402_300_799;

fn no_env(_: &str) -> Option<String> {
    None
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,80}".prop_map(Value::String),
        Just(Value::String(SECRET.to_owned())),
        Just(Value::String("POST".to_owned())),
        Just(Value::String("hex".to_owned())),
        Just(Value::String("/status".to_owned())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arbitrary configuration objects: mostly known fields (with values of any
/// type), sometimes unknown ones, sometimes a valid secret.
fn config_object() -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![
        8 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
    ];
    (
        prop::collection::btree_map(key, json_value(), 0..8),
        any::<bool>(),
    )
        .prop_map(|(fields, with_secret)| {
            let mut map: Map<String, Value> = fields.into_iter().collect();
            if with_secret {
                map.insert("secret".into(), json!(SECRET));
            }
            map
        })
}

/// An error names a field: a known one (possibly with a path into it, e.g.
/// `sign_methods[0]`), an unknown key of the document, or the document.
fn names_a_field(field: &str, doc: Option<&Map<String, Value>>) -> bool {
    let base = field.split(['[', '.']).next().unwrap_or("");
    field == "configuration"
        || FIELDS.contains(&base)
        || doc.is_some_and(|d| d.contains_key(field) && !FIELDS.contains(&field))
}

fn verify(token: &str, key: &[u8]) -> Value {
    let mut v = Validation::new(Algorithm::HS512);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    v.validate_nbf = false;
    decode::<Value>(token, &DecodingKey::from_secret(key), &v)
        .unwrap_or_else(|e| panic!("token does not verify: {e}"))
        .claims
}

fn config(extra: &str) -> Config {
    Config::parse(
        format!(r#"{{"secret":"{SECRET}"{extra}}}"#).as_bytes(),
        no_env,
    )
    .unwrap()
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = Config::parse(&bytes, no_env) {
            prop_assert!(!e.field.is_empty());
            prop_assert!(!e.reason.is_empty());
            prop_assert!(e.to_string().contains(&format!("`{}`", e.field)), "{}", e);
        }
    }

    #[test]
    fn parse_never_panics_on_json_like_text(text in r#"[{}\[\]":,a-z_0-9 \\.-]{0,200}"#) {
        if let Err(e) = Config::parse(text.as_bytes(), no_env) {
            prop_assert!(!e.field.is_empty());
        }
    }

    #[test]
    fn errors_on_arbitrary_objects_name_a_field(
        doc in config_object(),
        env in prop::option::of(".{0,140}"),
    ) {
        let bytes = serde_json::to_vec(&Value::Object(doc.clone())).unwrap();
        let env_fn = |name: &str| (name == "JWT_SECRET").then(|| env.clone()).flatten();
        match Config::parse(&bytes, env_fn) {
            Ok(c) => {
                prop_assert!(c.key.len() >= MIN_KEY_LEN);
                prop_assert!(!c.sign_methods.is_empty());
                prop_assert!(c.status_path.starts_with('/'));
                prop_assert!(c.header.bytes().all(|b| !b.is_ascii_uppercase()));
                // A valid configuration makes a working signer.
                prop_assert!(Signer::new(&c).is_ok());
            }
            Err(e) => {
                prop_assert!(
                    names_a_field(&e.field, Some(&doc)),
                    "error does not name a field: {e} (document {doc:?})"
                );
                let text = e.to_string();
                prop_assert!(!text.contains(SECRET), "the key is in the error: {text}");
                if let Some(v) = env.as_deref().filter(|v| v.len() >= 16) {
                    prop_assert!(!text.contains(v), "the env key is in the error: {text}");
                }
            }
        }
    }

    #[test]
    fn signed_tokens_verify_and_the_user_round_trips(
        iat in prop_oneof![0..=LAST_SECOND, any::<u64>()],
        nonce in any::<[u8; NONCE_LEN]>(),
        user in prop_oneof![".{0,64}", any::<String>(), Just("\"\\\r\n\0\u{7f}\u{fffd}".to_owned())],
        ttl in prop::option::of(1..=u64::MAX),
        issuer in prop::option::of(".{1,20}"),
        key_id in prop::option::of("[A-Za-z0-9._-]{1,20}"),
    ) {
        let mut c = config("");
        c.ttl_seconds = ttl;
        c.issuer = issuer.clone();
        c.audience = issuer.clone();
        c.key_id = key_id.clone();
        let signer = Signer::new(&c).unwrap();
        match signer.sign(iat, &nonce, &user) {
            Err(_) => prop_assert!(iat > LAST_SECOND, "refused a signable time {iat}"),
            Ok(signed) => {
                prop_assert!(iat <= LAST_SECOND);
                let header = decode_header(&signed.token).unwrap();
                prop_assert_eq!(header.alg, Algorithm::HS512);
                prop_assert_eq!(header.kid, key_id);
                let claims = verify(&signed.token, SECRET.as_bytes());
                prop_assert_eq!(&claims["payload"]["user"], &json!(user));
                prop_assert_eq!(&claims["jti"], &json!(hex_lower(&nonce)));
                prop_assert_eq!(&signed.jti, &hex_lower(&nonce));
                prop_assert_eq!(&claims["iat"], &json!(iat));
                prop_assert_eq!(&claims["payload"]["date"], &json!(utc_date(iat).unwrap()));
                if let Some(ttl) = ttl {
                    prop_assert_eq!(&claims["exp"], &json!(iat.saturating_add(ttl)));
                }
                if let Some(i) = &issuer {
                    prop_assert_eq!(&claims["iss"], &json!(i));
                    prop_assert_eq!(&claims["aud"], &json!(i));
                }
                // Another key never verifies it.
                let mut v = Validation::new(Algorithm::HS512);
                v.required_spec_claims.clear();
                v.validate_exp = false;
                prop_assert!(decode::<Value>(&signed.token, &DecodingKey::from_secret(&[7; 64]), &v).is_err());
                // Debug never shows the token.
                prop_assert!(!format!("{signed:?}").contains(&signed.token), "Debug shows the token");
            }
        }
    }

    #[test]
    fn user_header_sized_values_sign(user in prop::collection::vec(any::<u8>(), 0..=MAX_USER_LEN)) {
        // What the filter does with a header value: lossy UTF-8, then sign.
        let user = String::from_utf8_lossy(&user).into_owned();
        let signed = Signer::new(&config("")).unwrap().sign(1_795_435_200, &[0; NONCE_LEN], &user).unwrap();
        prop_assert_eq!(&verify(&signed.token, SECRET.as_bytes())["payload"]["user"], &json!(user));
    }

    /// The date and time agree with the `time` crate's calendar, not a copy
    /// of the filter's own arithmetic.
    #[test]
    fn dates_and_times_match_the_time_crate(secs in prop_oneof![0..=LAST_SECOND, Just(LAST_SECOND)]) {
        let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap()).unwrap();
        let date = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
        prop_assert_eq!(&utc_date(secs).unwrap(), &date);
        let stamp = format!("{date}T{:02}:{:02}:{:02}Z", t.hour(), t.minute(), t.second());
        prop_assert_eq!(rfc3339(secs), stamp);
    }

    #[test]
    fn status_page_never_panics_and_shows_the_figures(
        started in any::<u64>(),
        now in any::<u64>(),
        processed in any::<u64>(),
        signed in any::<u64>(),
        accept in prop::option::of(".{0,60}"),
    ) {
        let f = Figures { started_at_nanos: started, now_nanos: now, requests_processed: processed, requests_signed: signed, kid: None };
        let v: Value = serde_json::from_str(&f.to_json()).unwrap();
        prop_assert_eq!(&v["status"], &json!("ok"));
        prop_assert_eq!(&v["requests_processed"], &json!(processed));
        prop_assert_eq!(&v["requests_signed"], &json!(signed));
        prop_assert!(v["uptime_seconds"].as_f64().unwrap() >= 0.0);
        prop_assert_eq!(v["started_at"].as_str().unwrap().len(), 20);
        let html = f.to_html();
        prop_assert!(
            html.contains(&format!(">{processed}<")) && html.contains(&format!(">{signed}<")),
            "{}",
            html
        );
        let _ = wants_html(accept.as_deref());
        let _ = rfc3339(started);
    }

    /// Every field reads back what `serde_json` writes for it, compact or
    /// pretty, whatever the strings hold.
    #[test]
    fn fields_read_back_what_serde_json_writes(
        user in any::<String>(),
        issuer in prop::option::of(".{0,30}"),
        ttl in prop::option::of(any::<u64>()),
        methods in prop::collection::vec("[A-Z]{1,8}", 0..4),
        log_requests in any::<bool>(),
        hex in any::<bool>(),
        pretty in any::<bool>(),
    ) {
        let doc = json!({
            "secret": SECRET,
            "secret_encoding": if hex { "hex" } else { "utf8" },
            "user": user,
            "issuer": issuer,
            "ttl_seconds": ttl,
            "sign_methods": methods,
            "log_requests": log_requests,
        });
        let text = if pretty {
            serde_json::to_string_pretty(&doc).unwrap()
        } else {
            serde_json::to_string(&doc).unwrap()
        };
        let raw = RawConfig::from_json(text.as_bytes()).unwrap();
        prop_assert_eq!(raw.secret.as_deref(), Some(SECRET));
        let encoding = if hex { SecretEncoding::Hex } else { SecretEncoding::Utf8 };
        prop_assert_eq!(raw.secret_encoding, encoding);
        prop_assert_eq!(&raw.user, &user);
        prop_assert_eq!(&raw.issuer, &issuer);
        prop_assert_eq!(raw.ttl_seconds, ttl);
        prop_assert_eq!(&raw.sign_methods, &methods);
        prop_assert_eq!(raw.log_requests, log_requests);
    }

    /// A field written twice is refused, naming it, whatever the values;
    /// so is one written twice among other fields.
    #[test]
    fn a_repeated_field_is_refused(
        field in prop::sample::select(FIELDS.to_vec()),
        first in json_value(),
        second in json_value(),
        others in config_object(),
    ) {
        let mut members: Vec<String> = others
            .iter()
            .filter(|(k, _)| k.as_str() != field)
            .map(|(k, v)| format!("{}:{v}", json!(k)))
            .collect();
        members.insert(0, format!("\"{field}\":{first}"));
        members.push(format!("\"{field}\":{second}"));
        let text = format!("{{{}}}", members.join(","));
        let e = Config::parse(text.as_bytes(), no_env).unwrap_err();
        // An earlier field may be refused first, for its own value.
        prop_assert!(names_a_field(&e.field, Some(&others)) || e.field == field, "{}", e);
        if e.reason.starts_with("duplicate field") {
            prop_assert_eq!(e.field, field);
        }
    }

    /// On JSON-like text, what `serde_json` refuses, or reads as something
    /// other than an object, is refused as the `configuration`; an object
    /// is read field by field (its errors name a field).
    #[test]
    fn the_document_is_what_serde_json_reads(
        text in r#"([{}\[\]":, ]|true|null|-?[0-9]{1,3}(\.[0-9])?([eE][+-]?[0-9])?|\\[nu"\\x]|[0-9a-fA-F]{1,4}|[a-z]|\t|\n|é){0,40}"#,
    ) {
        prop_assume!(!text.trim().is_empty());
        let object = serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_object());
        match Config::parse(text.as_bytes(), no_env) {
            Ok(_) => prop_assert!(false, "no key, yet accepted: {:?}", text),
            Err(e) => prop_assert_eq!(e.field != "configuration", object, "{:?}: {}", text, e),
        }
    }

    /// A configured header name with `_` is refused at start (SPEC 7),
    /// naming the field; one without is accepted, lowercased.
    #[test]
    fn header_names_with_underscores_are_refused(
        field in prop::sample::select(vec!["header", "user_header"]),
        name in "[A-Za-z0-9_-]{1,20}",
    ) {
        let doc = json!({"secret": SECRET, field: name}).to_string();
        match Config::parse(doc.as_bytes(), no_env) {
            Ok(c) => {
                prop_assert!(!name.contains('_'));
                let configured = if field == "header" { Some(c.header) } else { c.user_header };
                prop_assert_eq!(configured, Some(name.to_ascii_lowercase()));
            }
            Err(e) => {
                prop_assert!(name.contains('_'), "{}", e);
                prop_assert_eq!(e.field, field);
            }
        }
    }

    #[test]
    fn config_debug_never_shows_the_key(key in "[!-~]{64,130}", hex in any::<bool>()) {
        let key = if hex { hex_lower(key.as_bytes()) } else { key };
        let encoding = if hex { "hex" } else { "utf8" };
        let doc = json!({"secret": key, "secret_encoding": encoding}).to_string();
        let c = Config::parse(doc.as_bytes(), no_env).unwrap();
        let debug = format!("{c:?}");
        prop_assert!(!debug.contains(&key), "{}", debug);
        prop_assert!(!debug.contains(&hex_lower(&c.key)), "{}", debug);
        prop_assert!(debug.contains("<redacted"));
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `RawConfig` is public and derives `Debug`: printing it (e.g. a
/// `log::debug!("{raw:?}")` added later) would print the key.
#[test]
fn raw_config_debug_never_shows_the_key() {
    let raw = RawConfig::from_json(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes()).unwrap();
    let debug = format!("{raw:?}");
    assert!(
        !debug.contains(SECRET),
        "RawConfig's Debug prints the secret: {debug}"
    );
}

/// Errors about a bad key say what is wrong without quoting the key.
#[test]
fn key_errors_never_quote_the_key() {
    let cases = [
        json!({"secret": "short secret text"}),
        json!({"secret": format!("{}zz", &SECRET[..126]), "secret_encoding": "hex"}),
        json!({"secret": &SECRET[..127], "secret_encoding": "hex"}),
        json!({"secret": &SECRET[..100], "secret_encoding": "hex"}),
        json!({"secret": SECRET, "colour": "red"}),
        json!({"secret": SECRET, "header": "bad header"}),
        json!({"secret": SECRET, "sign_methods": []}),
    ];
    for doc in cases {
        let secret = doc["secret"].as_str().unwrap().to_owned();
        let e = Config::parse(doc.to_string().as_bytes(), no_env).unwrap_err();
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(&secret), "the key is quoted: {text}");
            assert!(
                !text.contains(&secret[..16]),
                "part of the key is quoted: {text}"
            );
        }
    }
}

/// Found by `errors_on_arbitrary_objects_name_a_field`: a key pasted into
/// `secret_env` (an easy slip) is quoted whole in the refusal, which Envoy logs.
#[test]
fn a_key_pasted_into_secret_env_is_not_quoted_in_the_error() {
    let doc = json!({ "secret_env": SECRET }).to_string();
    let e = Config::parse(doc.as_bytes(), no_env).unwrap_err();
    assert_eq!(e.field, "secret");
    assert!(!e.to_string().contains(SECRET), "the key is quoted: {e}");
}

/// Found by `parse_never_panics_on_json_like_text`: an empty key (`{"":1}`)
/// gives an error whose field is the empty string, so the log line names no
/// field (``).
#[test]
fn an_empty_field_name_is_still_named_in_the_error() {
    let e = Config::parse(br#"{"":1}"#, no_env).unwrap_err();
    assert!(!e.field.is_empty(), "no field named: {e}");
}

/// Found by `errors_on_arbitrary_objects_name_a_field` at 100,000 cases: a
/// key pasted into any field the validation quotes is repeated whole in the
/// refusal (which Envoy logs). Every field, each way it can be refused.
#[test]
fn a_key_pasted_into_any_field_is_not_quoted_in_the_error() {
    let fields = [
        json!({ "secret": SECRET, "status_path": SECRET }),
        json!({ "secret": SECRET, "header": format!("{SECRET} x") }),
        json!({ "secret": SECRET, "user_header": format!("{SECRET} x") }),
        json!({ "secret": SECRET, "sign_methods": [format!("{SECRET} x")] }),
        json!({ "secret": SECRET, "secret_env": "" , "status_path": format!("/{SECRET}?") }),
        json!({ "secret": SECRET, "secret_encoding": SECRET }),
        json!({ "secret": SECRET, "ttl_seconds": SECRET }),
        json!({ "secret": SECRET, "log_requests": SECRET }),
        json!({ "secret": SECRET, "user": [SECRET] }),
        json!({ "secret_env": SECRET }),
        json!({ SECRET: 1 }),
    ];
    let mut quoted = Vec::new();
    for doc in fields {
        let e = Config::parse(doc.to_string().as_bytes(), no_env).unwrap_err();
        if e.to_string().contains(SECRET) || e.to_string().contains(&SECRET[..32]) {
            quoted.push(e.to_string());
        }
    }
    assert!(quoted.is_empty(), "the key is quoted: {quoted:#?}");
}
