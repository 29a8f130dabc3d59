//! The claims settings of SPEC section 2.7: `claims_from_headers`,
//! `require_claims`, `bind_request`.

use super::*;

#[test]
fn claims_from_headers_keep_their_order_and_lowercase_their_headers() {
    let c = parse(&format!(
        r#"{{"secret":"{SECRET}","claims_from_headers":{{"sub":"X-Auth-Sub","email":"x-auth-email","a":"x-a"}},"require_claims":["sub"],"bind_request":true}}"#
    ))
    .unwrap();
    assert_eq!(
        c.claims_from_headers,
        [
            ("sub".to_owned(), "x-auth-sub".to_owned()),
            ("email".to_owned(), "x-auth-email".to_owned()),
            ("a".to_owned(), "x-a".to_owned()),
        ]
    );
    assert_eq!(c.require_claims, ["sub"]);
    assert!(c.bind_request);
    let line = c.to_string();
    assert!(
        line.ends_with(
            r#" claims_from_headers={"sub":"x-auth-sub","email":"x-auth-email","a":"x-a"} require_claims=["sub"] bind_request=true"#
        ),
        "{line}"
    );
}

#[test]
fn claims_default_to_none_and_null_means_none() {
    let c = parse(&format!(r#"{{"secret":"{SECRET}"}}"#)).unwrap();
    assert!(c.claims_from_headers.is_empty() && c.require_claims.is_empty() && !c.bind_request);
    let c = parse(&format!(
        r#"{{"secret":"{SECRET}","claims_from_headers":null,"require_claims":null,"claims_from_headers_":null}}"#
    ));
    assert_eq!(c.unwrap_err().field, "claims_from_headers_");
    let c = parse(&format!(
        r#"{{"secret":"{SECRET}","claims_from_headers":null,"require_claims":null}}"#
    ))
    .unwrap();
    assert!(c.claims_from_headers.is_empty() && c.require_claims.is_empty());
    let c = parse(&format!(
        r#"{{"secret":"{SECRET}","claims_from_headers":{{}},"require_claims":[]}}"#
    ))
    .unwrap();
    assert!(c.claims_from_headers.is_empty() && c.require_claims.is_empty());
}

#[test]
fn reserved_claim_names_are_refused_naming_the_claim() {
    for name in RESERVED_CLAIMS {
        let err = parse(&format!(
            r#"{{"secret":"{SECRET}","claims_from_headers":{{"sub":"x-sub","{name}":"x-auth-thing"}}}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field, format!("claims_from_headers.{name}"));
        assert!(err.reason.contains("is reserved"), "{err}");
    }
    // Only exact names: `user` and letter-case variants are claims like any other.
    parse(&format!(
        r#"{{"secret":"{SECRET}","claims_from_headers":{{"user":"x-u","IAT":"x-i"}}}}"#
    ))
    .unwrap();
}

#[test]
fn bad_claims_from_headers_are_named() {
    let s = format!(r#""secret":"{SECRET}""#);
    let cases = [
        (
            r#""claims_from_headers":{"sub":"x_auth_sub"}"#,
            "claims_from_headers.sub",
        ),
        (
            r#""claims_from_headers":{"sub":"x auth"}"#,
            "claims_from_headers.sub",
        ),
        (
            r#""claims_from_headers":{"sub":""}"#,
            "claims_from_headers.sub",
        ),
        (
            r#""claims_from_headers":{"sub":7}"#,
            "claims_from_headers.sub",
        ),
        (
            r#""claims_from_headers":{"sub":"X-My-Jwt"}"#,
            "claims_from_headers.sub",
        ),
        (r#""claims_from_headers":{"":"x-a"}"#, "claims_from_headers"),
        (
            r#""claims_from_headers":{"sub":"x-a","sub":"x-b"}"#,
            "claims_from_headers.sub",
        ),
        (r#""claims_from_headers":["sub"]"#, "claims_from_headers"),
        (r#""claims_from_headers":"sub""#, "claims_from_headers"),
        (
            r#""claims_from_headers":{"sub":"x-a"},"require_claims":["email"]"#,
            "require_claims",
        ),
        (r#""require_claims":["sub"]"#, "require_claims"),
        (r#""require_claims":"sub""#, "require_claims"),
        (r#""require_claims":[1]"#, "require_claims"),
        (r#""bind_request":"yes""#, "bind_request"),
        (
            r#""claims_from_headers":{"sub":"x-a"},"claims_from_headers":{}"#,
            "claims_from_headers",
        ),
    ];
    for (extra, field) in cases {
        let err = parse(&format!("{{{s},{extra}}}")).unwrap_err();
        assert_eq!(err.field, field, "{extra}: {err}");
    }
    // Another token header is the one refused.
    let err = parse(&format!(
        r#"{{{s},"header":"x-token","claims_from_headers":{{"sub":"x-token"}}}}"#
    ))
    .unwrap_err();
    assert_eq!(err.field, "claims_from_headers.sub", "{err}");
    // A long claim name (a key pasted in) is shown by its length only.
    let long = "k".repeat(40);
    let err = parse(&format!(
        r#"{{{s},"claims_from_headers":{{"{long}":"x_a"}}}}"#
    ))
    .unwrap_err();
    assert!(!err.to_string().contains(&long), "{err}");
    assert_eq!(err.field, "claims_from_headers.<a claim of 40 characters>");
    let err = parse(&format!(
        r#"{{{s},"claims_from_headers":{{"sub":"x-a"}},"require_claims":["{long}"]}}"#
    ))
    .unwrap_err();
    assert!(!err.to_string().contains(&long), "{err}");
}

#[test]
fn a_key_in_a_ring_has_no_claims_field() {
    let err = parse(&format!(
        r#"{{"keys":[{{"id":"a","secret":"{SECRET}","claims_from_headers":{{"sub":"x-a"}}}}]}}"#
    ))
    .unwrap_err();
    assert_eq!(err.field, "keys[0].claims_from_headers", "{err}");
}
