//! Every branch of the request policy, natively.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::HashMap;

use super::*;

use crate::test_support::config;

/// Request headers (names lowercase), recording every name asked for.
#[derive(Default)]
struct Req {
    headers: HashMap<&'static str, Vec<u8>>,
    asked: RefCell<Vec<String>>,
}

impl Req {
    fn with(headers: &[(&'static str, &[u8])]) -> Req {
        Req {
            headers: headers.iter().map(|(n, v)| (*n, v.to_vec())).collect(),
            asked: RefCell::default(),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.borrow().clone()
    }
}

impl Headers for Req {
    fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.asked.borrow_mut().push(name.to_owned());
        self.headers.get(name).cloned()
    }
}

fn sign(user: &str) -> Decision {
    Decision::Forward(Forward {
        token: Token::Sign {
            user: user.to_owned(),
            claims: Vec::new(),
        },
        max_forwards: None,
        counted: true,
    })
}

fn strip() -> Decision {
    Decision::Forward(Forward {
        token: Token::Strip,
        max_forwards: None,
        counted: true,
    })
}

fn text_reply(status: u32, body: &str) -> Decision {
    Decision::Reply(Reply {
        status,
        headers: vec![("content-type", "text/plain")],
        body: Some(Cow::Owned(body.as_bytes().to_vec())),
    })
}

fn not_allowed(allow: &'static str) -> Decision {
    Decision::Reply(Reply {
        status: 405,
        headers: vec![("allow", allow), ("content-type", "text/plain")],
        body: Some(Cow::Borrowed(b"method not allowed\n")),
    })
}

#[test]
fn a_post_is_signed_for_the_configured_user_without_reading_a_header() {
    let req = Req::default();
    assert_eq!(decide(&config(""), "POST", "/x", &req), sign("username"));
    assert_eq!(
        decide(&config(r#","user":"alice""#), "POST", "/", &req),
        sign("alice")
    );
    assert!(req.asked().is_empty(), "{:?}", req.asked());
}

#[test]
fn other_methods_are_forwarded_with_the_token_header_stripped() {
    let req = Req::with(&[("max-forwards", b"0")]);
    for method in ["GET", "HEAD", "PUT", "DELETE", "PATCH", "FOO"] {
        assert_eq!(decide(&config(""), method, "/x", &req), strip(), "{method}");
    }
    // Only OPTIONS obeys Max-Forwards; nothing else reads a header.
    assert!(req.asked().is_empty(), "{:?}", req.asked());
}

#[test]
fn sign_methods_choose_what_is_signed() {
    let c = config(r#","sign_methods":["PUT","POST"]"#);
    let req = Req::default();
    assert_eq!(decide(&c, "PUT", "/", &req), sign("username"));
    assert_eq!(decide(&c, "POST", "/", &req), sign("username"));
    assert_eq!(decide(&c, "PATCH", "/", &req), strip());
}

#[test]
fn a_case_variant_of_a_signed_method_is_refused() {
    let c = config(r#","sign_methods":["POST","PUT"]"#);
    for method in ["post", "Post", "pOST", "put"] {
        assert_eq!(
            decide(&c, method, "/x", &Req::default()),
            text_reply(400, "methods are case-sensitive\n"),
            "{method}"
        );
    }
    // A case variant of a method that is not signed goes on, unsigned.
    assert_eq!(decide(&c, "get", "/x", &Req::default()), strip());
}

#[test]
fn trace_is_refused_even_when_signed() {
    for extra in ["", r#","sign_methods":["TRACE"]"#] {
        assert_eq!(
            decide(&config(extra), "TRACE", "/x", &Req::default()),
            not_allowed(ALLOW)
        );
    }
}

#[test]
fn options_max_forwards_zero_is_answered_here() {
    for value in ["0", " 0 ", "000"] {
        assert_eq!(
            decide(
                &config(""),
                "OPTIONS",
                "/x",
                &Req::with(&[("max-forwards", value.as_bytes())])
            ),
            Decision::Reply(Reply {
                status: 200,
                headers: vec![("allow", ALLOW)],
                body: None,
            }),
            "{value:?}"
        );
    }
}

#[test]
fn options_max_forwards_is_decremented_when_valid() {
    let cases: [(&str, Option<u64>); 10] = [
        ("5", Some(4)),
        ("1", Some(0)),
        (" 7", Some(6)),
        ("18446744073709551615", Some(u64::MAX - 1)),
        // Invalid: forwarded unchanged.
        ("18446744073709551616", None),
        ("x1", None),
        ("", None),
        ("-1", None),
        ("+1", None),
        ("1 2", None),
    ];
    for (value, hops) in cases {
        let req = Req::with(&[("max-forwards", value.as_bytes())]);
        assert_eq!(
            decide(&config(""), "OPTIONS", "/x", &req),
            Decision::Forward(Forward {
                token: Token::Strip,
                max_forwards: hops,
                counted: true,
            }),
            "{value:?}"
        );
        assert_eq!(req.asked(), ["max-forwards"]);
    }
    // Absent: forwarded as it is.
    assert_eq!(
        decide(&config(""), "OPTIONS", "*", &Req::default()),
        strip()
    );
}

#[test]
fn options_max_forwards_not_utf8_is_invalid_and_forwarded_unchanged() {
    // The SDK's text getter panicked the guest on these (a 503 and a VM
    // re-created).
    for value in [&b"\xff"[..], b"1\xff", b"\xff0", b"0\xc3", b"\xc3\x28"] {
        let req = Req::with(&[("max-forwards", value)]);
        assert_eq!(
            decide(&config(""), "OPTIONS", "/x", &req),
            strip(),
            "{value:?}"
        );
        assert_eq!(req.asked(), ["max-forwards"]);
    }
    // Valid UTF-8 that is not ASCII is invalid too.
    let req = Req::with(&[("max-forwards", "\u{664}".as_bytes())]);
    assert_eq!(decide(&config(""), "OPTIONS", "/x", &req), strip());
}

#[test]
fn a_signed_options_with_a_max_forwards_not_utf8_signs_it_as_u_fffd() {
    let c = config(r#","sign_methods":["OPTIONS"],"user_header":"max-forwards""#);
    let req = Req::with(&[("max-forwards", b"1\xff")]);
    assert_eq!(decide(&c, "OPTIONS", "/x", &req), sign("1\u{fffd}"));
}

#[test]
fn a_signed_options_keeps_its_max_forwards_rules() {
    let c = config(r#","sign_methods":["OPTIONS"],"user_header":"max-forwards""#);
    // The user header is read after the decrement, as forwarded.
    let req = Req::with(&[("max-forwards", b"3")]);
    assert_eq!(
        decide(&c, "OPTIONS", "/x", &req),
        Decision::Forward(Forward {
            token: Token::Sign {
                user: "2".to_owned(),
                claims: Vec::new(),
            },
            max_forwards: Some(2),
            counted: true,
        })
    );
    let req = Req::with(&[("max-forwards", b"x")]);
    assert_eq!(decide(&c, "OPTIONS", "/x", &req), sign("x"));
    let req = Req::with(&[("max-forwards", b"0")]);
    assert!(matches!(
        decide(&c, "OPTIONS", "/x", &req),
        Decision::Reply(Reply { status: 200, .. })
    ));
}

#[test]
fn connect_is_not_counted() {
    let forward = |c: &Config| match decide(c, "CONNECT", "/", &Req::default()) {
        Decision::Forward(f) => f,
        other => panic!("{other:?}"),
    };
    let f = forward(&config(""));
    assert_eq!((f.token, f.counted), (Token::Strip, false));
    let f = forward(&config(r#","sign_methods":["CONNECT"]"#));
    assert_eq!(
        (f.token, f.counted),
        (
            Token::Sign {
                user: "username".to_owned(),
                claims: Vec::new(),
            },
            false
        )
    );
}

#[test]
fn the_user_header_names_the_user_when_present() {
    let c = config(r#","user":"dflt","user_header":"X-Auth-User""#);
    let req = Req::with(&[("x-auth-user", b"alice")]);
    assert_eq!(decide(&c, "POST", "/", &req), sign("alice"));
    assert_eq!(req.asked(), ["x-auth-user"]);
    assert_eq!(decide(&c, "POST", "/", &Req::default()), sign("dflt"));
    // Not UTF-8: U+FFFD.
    let req = Req::with(&[("x-auth-user", b"a\xffb")]);
    assert_eq!(decide(&c, "POST", "/", &req), sign("a\u{fffd}b"));
    // Empty is a value.
    let req = Req::with(&[("x-auth-user", b"")]);
    assert_eq!(decide(&c, "POST", "/", &req), sign(""));
    // Unsigned requests never read it.
    let req = Req::with(&[("x-auth-user", b"alice")]);
    assert_eq!(decide(&c, "GET", "/", &req), strip());
    assert!(req.asked().is_empty());
}

#[test]
fn a_user_header_over_the_limit_is_refused() {
    let c = config(r#","user_header":"x-auth-user""#);
    let at = vec![b'u'; MAX_USER_LEN];
    let req = Req::with(&[("x-auth-user", &at)]);
    assert_eq!(
        decide(&c, "POST", "/", &req),
        sign(&"u".repeat(MAX_USER_LEN))
    );
    let over = vec![b'u'; MAX_USER_LEN + 1];
    let req = Req::with(&[("x-auth-user", &over)]);
    assert_eq!(
        decide(&c, "POST", "/", &req),
        text_reply(400, "the x-auth-user header is longer than 256 bytes\n")
    );
}

#[test]
fn the_status_path_is_answered_for_get_and_head() {
    for method in ["GET", "HEAD"] {
        assert_eq!(
            decide(&config(""), method, "/status", &Req::default()),
            Decision::Status(Format::Json)
        );
        let html = Req::with(&[("accept", b"text/html,*/*;q=0.8")]);
        assert_eq!(
            decide(&config(""), method, "/status", &html),
            Decision::Status(Format::Html)
        );
        assert_eq!(html.asked(), ["accept"]);
        let json = Req::with(&[("accept", b"application/json")]);
        assert_eq!(
            decide(&config(""), method, "/status", &json),
            Decision::Status(Format::Json)
        );
    }
}

#[test]
fn an_accept_not_utf8_gets_html_only_for_a_valid_text_html() {
    // The SDK's text getter panicked the guest on these.
    let cases: [(&[u8], Format); 5] = [
        (b"text/\xffhtml", Format::Json),
        (b"\xff", Format::Json),
        (b"text/html\xff", Format::Json),
        (b"\xff, text/html", Format::Html),
        (b"application/json;q=\xff, text/html;q=0.5", Format::Html),
    ];
    for method in ["GET", "HEAD"] {
        for (accept, format) in cases {
            let req = Req::with(&[("accept", accept)]);
            assert_eq!(
                decide(&config(""), method, "/status", &req),
                Decision::Status(format),
                "{method} {accept:?}"
            );
            assert_eq!(req.asked(), ["accept"]);
        }
    }
}

#[test]
fn pseudo_headers_not_utf8_become_u_fffd() {
    assert_eq!(lossy(b"GET".to_vec()), "GET");
    assert_eq!(lossy(b"/caf\xc3\xa9".to_vec()), "/caf\u{e9}");
    assert_eq!(lossy(b"/a\xffb?\xfe".to_vec()), "/a\u{fffd}b?\u{fffd}");
    assert_eq!(lossy(Vec::new()), "");
}

#[test]
fn connection_names_are_read_from_bytes() {
    let names = |v: &[u8]| connection_names(v).collect::<Vec<_>>();
    assert_eq!(names(b"X-Hop, keep-alive"), ["x-hop", "keep-alive"]);
    assert_eq!(names(b" a ,, b\t,"), ["a", "b"]);
    assert!(names(b"").is_empty());
    // A name that is not UTF-8 names no header the host passed: skipped,
    // the others are still removed.
    assert_eq!(names(b"x-hop, \xff, x-\xc3"), ["x-hop"]);
    assert!(names(b"\xff").is_empty());
}

#[test]
fn other_methods_on_the_status_path_get_405() {
    // Before every other rule: TRACE, a case variant, a signed method.
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "post", "get"] {
        let req = Req::with(&[("max-forwards", b"0")]);
        assert_eq!(
            decide(&config(""), method, "/status", &req),
            not_allowed(STATUS_ALLOW),
            "{method}"
        );
        assert!(req.asked().is_empty());
    }
}

#[test]
fn the_status_path_is_configurable_and_matched_exactly() {
    let c = config(r#","status_path":"/health""#);
    assert_eq!(
        decide(&c, "GET", "/health", &Req::default()),
        Decision::Status(Format::Json)
    );
    for path in ["/status", "/health/", "/Health", "/healthz"] {
        assert_eq!(decide(&c, "GET", path, &Req::default()), strip(), "{path}");
    }
    assert_eq!(
        decide(&c, "POST", "/status", &Req::default()),
        sign("username")
    );
}

#[test]
fn the_path_loses_its_query_and_fragment() {
    for (raw, path) in [
        ("/status", "/status"),
        ("/status?x=1", "/status"),
        ("/a#b?c", "/a"),
        ("/a?b#c", "/a"),
        ("?q", ""),
        ("", ""),
        ("*", "*"),
    ] {
        assert_eq!(path_only(raw.to_owned()), path, "{raw}");
    }
}

#[test]
fn the_status_page_reply() {
    let figures = Figures {
        started_at_nanos: 1_795_435_200_000_000_000,
        now_nanos: 1_795_435_212_500_000_000,
        requests_processed: 42,
        requests_signed: 40,
        kid: Some("k1".to_owned()),
    };
    let json = status_page(&figures, Format::Json);
    assert_eq!(json.status, 200);
    assert_eq!(
        json.headers,
        [
            ("content-type", "application/json"),
            ("cache-control", "no-store")
        ]
    );
    assert_eq!(
        json.body.as_deref(),
        Some(figures.to_json().as_bytes()),
        "{json:?}"
    );
    let html = status_page(&figures, Format::Html);
    assert_eq!(html.status, 200);
    assert_eq!(
        html.headers,
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-store")
        ]
    );
    assert_eq!(html.body.as_deref(), Some(figures.to_html().as_bytes()));
}

#[test]
fn a_request_that_cannot_be_signed_gets_500() {
    assert_eq!(
        Decision::Reply(Reply::sign_failed()),
        text_reply(500, "could not sign the request\n")
    );
}

mod claims;
mod jwks;
