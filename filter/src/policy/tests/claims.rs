//! Claims from headers, `require_claims` and request binding (SPEC
//! section 2.7).

use super::*;

/// A signed forward with these claims after the task's.
fn sign_claims(user: &str, claims: &[(&str, &str)]) -> Decision {
    Decision::Forward(Forward {
        token: Token::Sign {
            user: user.to_owned(),
            claims: claims
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        },
        max_forwards: None,
        counted: true,
    })
}

const IDENTITY: &str = r#","claims_from_headers":{"sub":"X-Auth-Sub","email":"x-auth-email","groups":"x-auth-groups"}"#;

#[test]
fn claims_from_headers_come_in_the_configuration_order() {
    let c = config(IDENTITY);
    // The request's header order does not matter, the map's does.
    let req = Req::with(&[
        ("x-auth-groups", b"admins"),
        ("x-auth-email", b"a@example.com"),
        ("x-auth-sub", b"alice"),
    ]);
    assert_eq!(
        decide(&c, "POST", "/", &req),
        sign_claims(
            "username",
            &[
                ("sub", "alice"),
                ("email", "a@example.com"),
                ("groups", "admins")
            ]
        )
    );
    assert_eq!(req.asked(), ["x-auth-sub", "x-auth-email", "x-auth-groups"]);
}

#[test]
fn an_absent_claim_header_leaves_the_claim_out() {
    let c = config(IDENTITY);
    let req = Req::with(&[("x-auth-email", b"a@example.com")]);
    assert_eq!(
        decide(&c, "POST", "/", &req),
        sign_claims("username", &[("email", "a@example.com")])
    );
    // None present: no claims, still signed.
    assert_eq!(decide(&c, "POST", "/", &Req::default()), sign("username"));
    // Empty is a value, as for user_header.
    let req = Req::with(&[("x-auth-sub", b"")]);
    assert_eq!(
        decide(&c, "POST", "/", &req),
        sign_claims("username", &[("sub", "")])
    );
}

#[test]
fn a_claim_header_not_utf8_becomes_u_fffd() {
    let c = config(IDENTITY);
    let req = Req::with(&[("x-auth-sub", b"al\xffice\xc3")]);
    assert_eq!(
        decide(&c, "POST", "/", &req),
        sign_claims("username", &[("sub", "al\u{fffd}ice\u{fffd}")])
    );
}

#[test]
fn a_claim_header_over_the_limit_is_refused_as_the_user_header_is() {
    let c = config(IDENTITY);
    let at = vec![b's'; MAX_USER_LEN];
    let req = Req::with(&[("x-auth-sub", &at)]);
    assert_eq!(
        decide(&c, "POST", "/", &req),
        sign_claims("username", &[("sub", &"s".repeat(MAX_USER_LEN))])
    );
    let over = vec![b's'; MAX_USER_LEN + 1];
    let req = Req::with(&[("x-auth-email", b"a@b"), ("x-auth-sub", &over)]);
    assert_eq!(
        decide(&c, "POST", "/", &req),
        text_reply(400, "the x-auth-sub header is longer than 256 bytes\n")
    );
    // The same reply as the user_header limit's.
    let u = config(r#","user_header":"x-auth-sub""#);
    assert_eq!(decide(&u, "POST", "/", &req), decide(&c, "POST", "/", &req));
}

#[test]
fn a_missing_required_claim_is_answered_with_401() {
    let c = config(&format!(r#"{IDENTITY},"require_claims":["email","sub"]"#));
    let req = Req::with(&[("x-auth-email", b"a@example.com")]);
    let expected = Decision::Reply(Reply {
        status: 401,
        headers: vec![
            ("www-authenticate", "Bearer"),
            ("content-type", "text/plain"),
        ],
        body: Some(Cow::Borrowed(b"missing identity claim: sub\n")),
    });
    assert_eq!(decide(&c, "POST", "/", &req), expected);
    // The first missing one in require_claims' order is named.
    assert_eq!(
        decide(&c, "POST", "/", &Req::default()),
        Decision::Reply(Reply::missing_claim("email"))
    );
    let req = Req::with(&[("x-auth-email", b"a@b"), ("x-auth-sub", b"alice")]);
    assert_eq!(
        decide(&c, "POST", "/", &req),
        sign_claims("username", &[("sub", "alice"), ("email", "a@b")])
    );
    // Over the limit is a 400 before a missing claim is a 401.
    let over = vec![b'e'; MAX_USER_LEN + 1];
    let req = Req::with(&[("x-auth-email", &over)]);
    assert!(matches!(
        decide(&c, "POST", "/", &req),
        Decision::Reply(Reply { status: 400, .. })
    ));
}

#[test]
fn unsigned_requests_neither_read_claim_headers_nor_need_them() {
    let c = config(&format!(
        r#"{IDENTITY},"require_claims":["sub"],"bind_request":true"#
    ));
    let req = Req::default();
    assert_eq!(decide(&c, "GET", "/", &req), strip());
    assert!(req.asked().is_empty(), "{:?}", req.asked());
    // The status path is answered whoever asks.
    assert_eq!(
        decide(&c, "GET", "/status", &req),
        Decision::Status(Format::Json)
    );
}

#[test]
fn a_claim_from_max_forwards_reads_it_as_forwarded() {
    let c = config(r#","sign_methods":["OPTIONS"],"claims_from_headers":{"hops":"max-forwards"}"#);
    let req = Req::with(&[("max-forwards", b"3")]);
    assert_eq!(
        decide(&c, "OPTIONS", "/x", &req),
        Decision::Forward(Forward {
            token: Token::Sign {
                user: "username".to_owned(),
                claims: vec![("hops".to_owned(), "2".to_owned())],
            },
            max_forwards: Some(2),
            counted: true,
        })
    );
}

const BIND: &str = r#","bind_request":true"#;

#[test]
fn binding_adds_htm_and_htu_after_the_claims_from_headers() {
    let c = config(&format!(r#"{IDENTITY}{BIND}"#));
    let req = Req::with(&[
        (":scheme", b"http"),
        (":authority", b"API.Example.com:80"),
        ("x-auth-sub", b"alice"),
    ]);
    assert_eq!(
        decide(&c, "POST", "/Orders/7", &req),
        sign_claims(
            "username",
            &[
                ("sub", "alice"),
                ("htm", "POST"),
                ("htu", "http://api.example.com/Orders/7")
            ]
        )
    );
    // Alone, and for another signed method.
    let c = config(r#","bind_request":true,"sign_methods":["POST","PUT"]"#);
    let req = Req::with(&[(":scheme", b"http"), (":authority", b"h:8080")]);
    assert_eq!(
        decide(&c, "PUT", "/a/b", &req),
        sign_claims("username", &[("htm", "PUT"), ("htu", "http://h:8080/a/b")])
    );
}

#[test]
fn binding_without_an_authority_is_refused() {
    let c = config(BIND);
    let refused = text_reply(400, "no scheme or authority to bind the token to\n");
    for headers in [
        &[(":scheme", &b"http"[..])][..],
        &[(":scheme", b"http"), (":authority", b"")],
        &[(":scheme", b"http"), (":authority", b":80")],
        &[(":authority", b"h")],
        &[(":scheme", b""), (":authority", b"h")],
    ] {
        let req = Req::with(headers);
        assert_eq!(decide(&c, "POST", "/", &req), refused, "{headers:?}");
    }
    // Off by default: no authority needed, none read.
    let req = Req::default();
    assert_eq!(decide(&config(""), "POST", "/", &req), sign("username"));
    assert!(req.asked().is_empty());
}

#[test]
fn htu_follows_rfc_9449() {
    let cases = [
        // Scheme and authority lowercased, the path as received.
        ("HTTP", "Example.COM", "/A/b", "http://example.com/A/b"),
        // Default ports dropped, others kept.
        ("http", "example.com:80", "/", "http://example.com/"),
        ("https", "example.com:443", "/", "https://example.com/"),
        ("http", "example.com:443", "/", "http://example.com:443/"),
        ("https", "example.com:80", "/", "https://example.com:80/"),
        ("http", "example.com:8080", "/", "http://example.com:8080/"),
        ("http", "example.com:080", "/", "http://example.com:080/"),
        // IPv6 literals.
        ("http", "[::1]:80", "/x", "http://[::1]/x"),
        ("http", "[::1]", "/x", "http://[::1]/x"),
        ("http", "[::80]", "/x", "http://[::80]/x"),
        ("http", "[::1]:8080", "/x", "http://[::1]:8080/x"),
        ("http", "[FE80::1]:80", "/", "http://[fe80::1]/"),
        // Query and fragment cut at the first `?` or `#`.
        ("http", "h", "/p?q=1#f", "http://h/p"),
        ("http", "h", "/p#f?q", "http://h/p"),
        ("http", "h", "/p?", "http://h/p"),
        ("http", "h", "?q", "http://h"),
        // An empty path stays empty; other bytes as received.
        ("http", "h", "", "http://h"),
        ("http", "h", "/%2F/./../a%20b", "http://h/%2F/./../a%20b"),
        ("http", "h", "/\u{fffd}", "http://h/\u{fffd}"),
        // Another scheme has no default port to drop.
        ("ws", "h:80", "/", "ws://h:80/"),
    ];
    for (scheme, authority, path, want) in cases {
        assert_eq!(
            htu(scheme, authority, path).as_deref(),
            Some(want),
            "{scheme} {authority} {path}"
        );
    }
    for (scheme, authority) in [("http", ""), ("http", ":80"), ("https", ":443"), ("", "h")] {
        assert_eq!(htu(scheme, authority, "/"), None, "{scheme} {authority}");
    }
}
