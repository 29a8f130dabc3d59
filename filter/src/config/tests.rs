//! Unit tests of the configuration rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

pub(super) use crate::test_support::SECRET;

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

pub(super) fn parse(json: &str) -> Result<Config, ConfigError> {
    Config::parse(json.as_bytes(), no_env)
}

fn err_field(json: &str) -> String {
    parse(json).unwrap_err().field
}

#[test]
fn defaults() {
    let c = parse(&format!(r#"{{"secret":"{SECRET}"}}"#)).unwrap();
    assert_eq!(c.key, SECRET.as_bytes());
    assert_eq!(c.header, "x-my-jwt");
    assert_eq!(c.sign_methods, ["POST"]);
    assert_eq!(c.user, "username");
    assert_eq!(c.user_header, None);
    assert_eq!(c.status_path, "/status");
    assert!(c.log_requests);
    assert!(
        c.ttl_seconds.is_none() && c.issuer.is_none() && c.audience.is_none() && c.key_id.is_none()
    );
}

#[test]
fn hex_secret_decodes() {
    let c = parse(&format!(
        r#"{{"secret":"{SECRET}","secret_encoding":"hex"}}"#
    ))
    .unwrap();
    assert_eq!(c.key.len(), 64);
    assert_eq!(c.key[0], 0xa9);
}

#[test]
fn env_wins_over_config() {
    let env_key = "e".repeat(64);
    let c = Config::parse(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes(), |name| {
        (name == "JWT_SECRET").then(|| env_key.clone())
    })
    .unwrap();
    assert_eq!(c.key, env_key.as_bytes());
    assert_eq!(c.key_source, KeySource::Env("JWT_SECRET".into()));
}

#[test]
fn each_bad_field_is_named() {
    let s = format!(r#""secret":"{SECRET}""#);
    assert_eq!(err_field("{}"), "secret");
    assert_eq!(err_field(r#"{"secret":""}"#), "secret");
    assert_eq!(err_field(r#"{"secret":"short"}"#), "secret");
    assert_eq!(
        err_field(&format!(
            r#"{{"secret":"{}","secret_encoding":"hex"}}"#,
            "zz".repeat(64)
        )),
        "secret"
    );
    assert_eq!(
        err_field(&format!(
            r#"{{"secret":"{}","secret_encoding":"hex"}}"#,
            "ab".repeat(63)
        )),
        "secret"
    );
    assert_eq!(err_field(&format!(r#"{{{s},"bogus":1}}"#)), "bogus");
    assert_eq!(
        err_field(&format!(r#"{{{s},"header":"bad header"}}"#)),
        "header"
    );
    assert_eq!(err_field(&format!(r#"{{{s},"header":""}}"#)), "header");
    assert_eq!(
        err_field(&format!(r#"{{{s},"user_header":"a:b"}}"#)),
        "user_header"
    );
    assert_eq!(
        err_field(&format!(r#"{{{s},"sign_methods":[]}}"#)),
        "sign_methods"
    );
    assert_eq!(
        err_field(&format!(r#"{{{s},"sign_methods":["PO ST"]}}"#)),
        "sign_methods"
    );
    for lower in ["post", "Post", "pOST"] {
        assert_eq!(
            err_field(&format!(r#"{{{s},"sign_methods":["PUT","{lower}"]}}"#)),
            "sign_methods",
            "{lower}"
        );
    }
    let lower = parse(&format!(r#"{{{s},"sign_methods":["post"]}}"#)).unwrap_err();
    assert!(
        lower
            .to_string()
            .contains(r#""post" must be written in upper case"#)
            && lower.to_string().contains(r#"("POST")"#),
        "{lower}"
    );
    assert_eq!(
        err_field(&format!(r#"{{{s},"status_path":"status"}}"#)),
        "status_path"
    );
    assert_eq!(
        err_field(&format!(r#"{{{s},"ttl_seconds":0}}"#)),
        "ttl_seconds"
    );
    assert_eq!(err_field(&format!(r#"{{{s},"issuer":""}}"#)), "issuer");
    assert_eq!(
        err_field(&format!(r#"{{{s},"secret_env":""}}"#)),
        "secret_env"
    );
    assert_eq!(
        err_field(&format!(r#"{{{s},"secret_encoding":"base64"}}"#)),
        "secret_encoding"
    );
    assert_eq!(
        err_field(&format!(r#"{{{s},"sign_methods":"POST"}}"#)),
        "sign_methods"
    );
    assert_eq!(err_field(&format!(r#"{{{s},"user":7}}"#)), "user");
    assert_eq!(err_field("not json"), "configuration");
}

#[test]
fn wrong_types_are_refused() {
    let err = parse(&format!(r#"{{"secret":"{SECRET}","log_requests":"yes"}}"#)).unwrap_err();
    assert_eq!(err.field, "log_requests");
    assert!(err.reason.contains("invalid type"), "{err}");
    let err = parse(&format!(r#"{{"secret":"{SECRET}","ttl_seconds":-1}}"#)).unwrap_err();
    assert_eq!(err.field, "ttl_seconds");
    assert!(err.reason.contains("invalid value"), "{err}");
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn empty_env_secret_counts_as_unset() {
    let c = Config::parse(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes(), |_| {
        Some(String::new())
    })
    .unwrap();
    assert_eq!(c.key_source, KeySource::Config);
    let err = Config::parse(b"{}", |_| Some(String::new())).unwrap_err();
    assert_eq!(err.field, "secret");
}

#[test]
fn short_env_secret_is_named_as_secret_env() {
    let err = Config::parse(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes(), |_| {
        Some("short".into())
    })
    .unwrap_err();
    assert_eq!(err.field, "secret_env");
}

#[test]
fn long_values_are_elided_from_errors() {
    let err = parse(&format!(r#"{{"secret_encoding":"{SECRET}"}}"#)).unwrap_err();
    assert_eq!(err.field, "secret_encoding");
    assert!(!err.reason.contains(&SECRET[..16]), "{err}");
    assert_eq!(
        err.reason,
        "unknown variant <128 characters>, expected `utf8` or `hex`"
    );
    let err = parse(r#"{"secret_encoding":"base64"}"#).unwrap_err();
    assert_eq!(
        err.reason,
        r#"unknown variant "base64", expected `utf8` or `hex`"#
    );
}

#[test]
fn messages_say_what_was_found_and_expected() {
    let s = format!(r#""secret":"{SECRET}""#);
    let reason = |json: String| parse(&json).unwrap_err().reason;
    assert_eq!(
        reason(format!(r#"{{{s},"log_requests":"yes"}}"#)),
        r#"invalid type: string "yes", expected a boolean"#
    );
    assert_eq!(
        reason(format!(r#"{{{s},"user":[1]}}"#)),
        "invalid type: an array, expected a string"
    );
    assert_eq!(
        reason(format!(r#"{{{s},"ttl_seconds":-1}}"#)),
        r#"invalid value: "-1", expected a whole number"#
    );
    assert_eq!(
        reason(format!(r#"{{{s},"user":7}}"#)),
        r#"invalid type: number "7", expected a string"#
    );
    assert_eq!(
        reason(format!(r#"{{{s},"user":-7}}"#)),
        r#"invalid type: number "-7", expected a string"#
    );
    assert_eq!(
        reason("[]".to_owned()),
        "invalid type: an array, expected an object"
    );
    for (doc, found) in [
        ("true", "a boolean"),
        ("null", "null"),
        ("1.5", "a number"),
        (r#""{}""#, "a string"),
    ] {
        assert_eq!(
            reason(doc.to_owned()),
            format!("invalid type: {found}, expected an object")
        );
    }
    assert_eq!(
        reason(format!(r#"{{{s},"sign_methods":["POST",false]}}"#)),
        "invalid type: boolean `false`, expected a string"
    );
    assert!(
        reason(format!(r#"{{{s},"x":1}}"#))
            .starts_with("unknown field `x`, expected one of `secret`, ")
    );
    assert_eq!(
        reason(format!(r#"{{{s},"user":"a","user":"b"}}"#)),
        "duplicate field `user`"
    );
    assert_eq!(
        reason("{\"secret\": }".to_owned()),
        "expected value at line 1 column 12"
    );
}

#[test]
fn null_means_unset_for_optional_fields_only() {
    let c = parse(&format!(
        r#"{{"secret":"{SECRET}","ttl_seconds":null,"issuer":null,"user_header":null}}"#
    ))
    .unwrap();
    assert!(c.ttl_seconds.is_none() && c.issuer.is_none() && c.user_header.is_none());
    assert_eq!(
        err_field(&format!(r#"{{"secret":"{SECRET}","user":null}}"#)),
        "user"
    );
    assert_eq!(parse("  \n").unwrap_err().field, "secret");
}

#[test]
fn debug_redacts_the_key() {
    let c = parse(&format!(r#"{{"secret":"{SECRET}"}}"#)).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains(SECRET));
    assert!(!shown.contains(&SECRET[..16]));
    assert!(
        shown.contains("<redacted: 128 bytes from secret, fingerprint "),
        "{shown}"
    );
}

#[test]
fn the_start_line_shows_every_field_but_the_key() {
    let c = parse(&format!(
        r#"{{"secret":"{SECRET}","user":"a\nb","issuer":"me","ttl_seconds":60}}"#
    ))
    .unwrap();
    let line = c.to_string();
    let fingerprint = c.key_fingerprint();
    assert_eq!(
        line,
        format!(
            "key=<redacted: 128 bytes from secret, fingerprint {fingerprint}> \
             header=\"x-my-jwt\" sign_methods=[\"POST\"] user=\"a\\nb\" user_header=none \
             status_path=\"/status\" ttl_seconds=60 issuer=\"me\" audience=none \
             key_id=none log_requests=true claims_from_headers={{}} require_claims=[] \
             bind_request=false"
        )
    );
    assert!(!line.contains(SECRET) && !line.contains('\n'));
}

/// `serde_json` reads these as floats, which are never printed (float
/// formatting is 24 KB of Wasm): they are described instead.
#[test]
fn numbers_that_are_not_whole_are_described_not_shown() {
    let s = format!(r#""secret":"{SECRET}""#);
    let reason = |json: String| parse(&json).unwrap_err().reason;
    for (ttl, found) in [
        ("1.5", "a number with a fraction or an exponent"),
        ("1e3", "a number with a fraction or an exponent"),
        ("1.0", "a number with a fraction or an exponent"),
        ("-0", "a negative number"),
        ("-1.5", "a negative number"),
        ("-99999999999999999999", "a negative number"),
        (
            "99999999999999999999",
            "a number larger than 18446744073709551615",
        ),
        ("1e300", "a number larger than 18446744073709551615"),
    ] {
        assert_eq!(
            reason(format!(r#"{{{s},"ttl_seconds":{ttl}}}"#)),
            format!("invalid value: {found}, expected a whole number"),
            "{ttl}"
        );
    }
    assert_eq!(
        parse(&format!(r#"{{{s},"ttl_seconds":18446744073709551615}}"#))
            .unwrap()
            .ttl_seconds,
        Some(u64::MAX)
    );
    assert_eq!(
        reason(format!(r#"{{{s},"user":1.5}}"#)),
        "invalid type: a number, expected a string"
    );
}

#[test]
fn nested_values_are_named_by_kind() {
    let s = format!(r#""secret":"{SECRET}""#);
    let reason = |json: String| parse(&json).unwrap_err().reason;
    assert_eq!(
        reason(format!(r#"{{{s},"user":{{"a":[1,{{}}]}}}}"#)),
        "invalid type: an object, expected a string"
    );
    assert_eq!(
        reason(format!(r#"{{{s},"sign_methods":["POST",["GET"]]}}"#)),
        "invalid type: an array, expected a string"
    );
    assert_eq!(
        reason(format!(r#"{{{s},"sign_methods":null}}"#)),
        "invalid type: null, expected an array of strings"
    );
    // Deeper than serde_json's recursion limit: refused, not overflowed.
    let deep = format!(r#"{{"user":{}{}}}"#, "[".repeat(200), "]".repeat(200));
    assert_eq!(err_field(&deep), "configuration");
    assert_eq!(err_field(&"[".repeat(1_000_000)), "configuration");
}

#[test]
fn a_repeated_field_is_refused_even_with_the_same_value() {
    let doc = format!(r#"{{"secret":"{SECRET}","secret":"{SECRET}"}}"#);
    let err = parse(&doc).unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.reason.as_str()),
        ("secret", "duplicate field `secret`")
    );
    // Only the document's own members: a nested repeat is a value.
    let err = parse(&format!(
        r#"{{"secret":"{SECRET}","user":{{"a":1,"a":2}}}}"#
    ));
    assert_eq!(err.unwrap_err().field, "user");
}

#[test]
fn syntax_errors_say_where_and_never_quote() {
    for (doc, reason) in [
        ("{\"secret\": }", "expected value at line 1 column 12"),
        (
            "{\n  \"user\": [1 2]\n}",
            "expected `,` or `]` at line 2 column 14",
        ),
        ("{} x", "trailing characters at line 1 column 4"),
        (
            "{\"user\":\"a",
            "EOF while parsing a string at line 1 column 10",
        ),
        ("{\"user\":\"\\x\"}", "invalid escape at line 1 column 11"),
    ] {
        let err = parse(doc).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            ("configuration", reason)
        );
    }
    let err = Config::parse(b"{\"user\":\"\xff\"}", no_env).unwrap_err();
    assert_eq!(err.field, "configuration");
    // A key written where JSON expects a value: only its position shows.
    let err = parse(&format!(r#"{{"secret":{SECRET}}}"#)).unwrap_err();
    assert_eq!(err.field, "configuration");
    assert!(!err.reason.contains(&SECRET[..8]), "{err}");
}

/// SPEC section 7: servers that map headers to CGI-style variables
/// (gunicorn before 22, uwsgi, PHP-FPM) read `x_my_jwt` as `x-my-jwt`.
#[test]
fn header_names_with_underscores_are_refused() {
    for field in ["header", "user_header"] {
        for name in ["x_my_jwt", "X_User", "_", "x-my_jwt"] {
            let err = parse(&format!(r#"{{"secret":"{SECRET}","{field}":"{name}"}}"#)).unwrap_err();
            assert_eq!(err.field, field, "{name}");
            assert!(err.reason.contains("contains `_`"), "{err}");
            assert_eq!(err.to_string().lines().count(), 1);
        }
    }
    let err = parse(&format!(
        r#"{{"secret":"{SECRET}","header":"x_{}"}}"#,
        "a".repeat(40)
    ))
    .unwrap_err();
    assert!(
        err.reason.starts_with("<42 characters> contains `_`"),
        "{err}"
    );
    // The defaults and dashed names are fine.
    let c = parse(&format!(
        r#"{{"secret":"{SECRET}","header":"X-My-Jwt","user_header":"x-user"}}"#
    ))
    .unwrap();
    assert_eq!(
        (c.header.as_str(), c.user_header.as_deref()),
        ("x-my-jwt", Some("x-user"))
    );
}

#[test]
fn header_names_are_lowercased() {
    let c = parse(&format!(
        r#"{{"secret":"{SECRET}","header":"X-Token","user_header":"X-User"}}"#
    ))
    .unwrap();
    assert_eq!(c.header, "x-token");
    assert_eq!(c.user_header.as_deref(), Some("x-user"));
}

mod asymmetric;
mod claims;
