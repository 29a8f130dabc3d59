//! Claims from the verified caller and request binding (SPEC section 2.7,
//! issue 23 items 5 and 6): `claims_from_headers`, `require_claims` and
//! `bind_request`, each scenario run on the real Envoy binary and the test
//! host with the same assertions and compared; then the chain of
//! `envoy/examples/identity.yaml` (Envoy's `jwt_authn` in front of the
//! filter) on Envoy alone.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_proxy_tests::proxy::{Setup, leaks_key};
use jwt_proxy_tests::raw::{Response, bare, exchange, post};
use jwt_proxy_tests::{HeldPort, SECRET, Seen, Upstream, h2, verify};
use serde_json::Value;

use crate::util::status;

/// The test key's configuration with more fields (`extra`, no leading comma).
fn config(extra: &str) -> String {
    format!(r#"{{"secret":"{SECRET}",{extra}}}"#)
}

const CLAIMS: &str =
    r#""claims_from_headers":{"sub":"x-auth-sub","email":"X-Auth-Email","name":"x-auth-name"}"#;

/// A forwarded request's one token, verified with the `jsonwebtoken` crate;
/// returns its claims and their names in the order signed (the claims'
/// JSON text, which a `serde_json::Value` would sort).
fn token_claims(seen: &Seen) -> (Value, Vec<String>) {
    let tokens = seen.all("x-my-jwt");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let claims = verify(&tokens[0], SECRET.as_bytes());
    let segment = tokens[0].split('.').nth(1).unwrap();
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap();
    // Top-level member names in order: a streaming walk over the object.
    let mut names = Vec::new();
    let mut de = serde_json::Deserializer::from_str(&text);
    serde::Deserializer::deserialize_map(&mut de, MemberNames(&mut names)).unwrap();
    (claims, names)
}

/// Collects an object's member names in document order.
struct MemberNames<'a>(&'a mut Vec<String>);

impl<'de> serde::de::Visitor<'de> for MemberNames<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some((name, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
            self.0.push(name);
        }
        Ok(())
    }
}

/// The task's claims, in the order every token starts with.
const TASK: [&str; 3] = ["iat", "jti", "payload"];

fn names(extra: &[&str]) -> Vec<String> {
    TASK.iter().chain(extra).map(|s| (*s).to_owned()).collect()
}

/// A response as the tests compare it across hosts: status, headers but
/// `date` (a clock), body.
fn reply_bytes(resp: &Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let headers = resp
        .headers
        .iter()
        .filter(|(n, _)| n != "date")
        .cloned()
        .collect();
    (resp.status, headers, resp.body.clone())
}

#[test]
fn claims_from_headers_are_signed_the_same_on_both() {
    let upstream = Upstream::start();
    let setup = Setup {
        config: config(CLAIMS),
        ..Setup::new(upstream.addr())
    };
    let mut outcomes = Vec::new();
    for proxy in setup.both() {
        let name = proxy.name();
        let mut outcome = Vec::new();

        // Every header present, one not UTF-8: in the map's order after the
        // task's claims, whatever the request's order; forwarded unchanged.
        let mut request = post(
            "/c?q=1",
            &[
                "X-Auth-Email: alice@example.com",
                "X-Auth-Sub: alice",
                "X-Auth-Name: caf\u{0}",
            ],
            b"{}",
        );
        let at = request.windows(4).position(|w| w == b"caf\0").unwrap() + 3;
        request[at] = 0xe9; // Latin-1 `é`: not UTF-8.
        let resp = exchange(proxy.addr(), &request);
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
        let seen = upstream.last();
        let (claims, order) = token_claims(&seen);
        assert_eq!(order, names(&["sub", "email", "name"]), "{name}");
        assert_eq!(claims["sub"], "alice", "{name}");
        assert_eq!(claims["email"], "alice@example.com", "{name}");
        assert_eq!(claims["name"], "caf\u{fffd}", "{name}: U+FFFD");
        assert_eq!(claims["payload"]["user"], "username", "{name}");
        assert_eq!(seen.one("x-auth-sub").as_deref(), Some("alice"), "{name}");
        assert_eq!(
            seen.headers.get("x-auth-name").map(|v| v.as_bytes()),
            Some(&b"caf\xe9"[..]),
            "{name}: the header itself is forwarded as received"
        );
        outcome.push((order, claims["name"].clone()));

        // Absent headers leave their claims out.
        exchange(
            proxy.addr(),
            &post("/c", &["X-Auth-Email: b@example.com"], b"{}"),
        );
        let (claims, order) = token_claims(&upstream.last());
        assert_eq!(order, names(&["email"]), "{name}");
        assert_eq!(claims["email"], "b@example.com", "{name}");
        exchange(proxy.addr(), &post("/c", &[], b"{}"));
        let (_, order) = token_claims(&upstream.last());
        assert_eq!(order, names(&[]), "{name}");
        outcome.push((order, Value::Null));

        // 256 bytes are signed, 257 refused (the user_header limit): never forwarded.
        let at_limit = format!("X-Auth-Sub: {}", "s".repeat(256));
        exchange(proxy.addr(), &post("/c", &[&at_limit], b"{}"));
        let (claims, _) = token_claims(&upstream.last());
        assert_eq!(claims["sub"].as_str().map(str::len), Some(256), "{name}");
        let before = upstream.seen().len();
        let over = format!("X-Auth-Sub: {}", "s".repeat(257));
        let refused = exchange(proxy.addr(), &post("/c", &[&over], b"{}"));
        assert_eq!(refused.status, 400, "{name}");
        assert_eq!(
            refused.text(),
            "the x-auth-sub header is longer than 256 bytes\n",
            "{name}"
        );
        // Unsigned: no token, no claims read, the headers forwarded.
        exchange(proxy.addr(), &bare("GET", "/g", &[&over]));
        let seen = upstream.seen();
        assert_eq!(seen.len(), before + 1, "{name}: the 400 was forwarded");
        let get = seen.last().unwrap();
        assert!(get.all("x-my-jwt").is_empty(), "{name}");
        assert_eq!(get.one("x-auth-sub").map(|v| v.len()), Some(257), "{name}");
        outcomes.push((outcome, reply_bytes(&refused)));
    }
    assert_eq!(
        outcomes[0], outcomes[1],
        "envoy (left) and the test host (right) differ"
    );
}

#[test]
fn a_missing_required_claim_gets_the_same_401_on_both_and_is_never_forwarded() {
    let upstream = Upstream::start();
    let setup = Setup {
        config: config(&format!(r#"{CLAIMS},"require_claims":["sub"]"#)),
        ..Setup::new(upstream.addr())
    };
    let mut outcomes = Vec::new();
    for proxy in setup.both() {
        let name = proxy.name();
        let before = upstream.seen().len();
        let processed = status(&proxy)["requests_processed"].clone();

        let http1 = exchange(
            proxy.addr(),
            &post("/r", &["X-Auth-Email: a@example.com"], b"{}"),
        );
        assert_eq!(http1.status, 401, "{name}");
        assert_eq!(http1.header("www-authenticate"), Some("Bearer"), "{name}");
        assert_eq!(http1.header("content-type"), Some("text/plain"), "{name}");
        assert_eq!(http1.body, b"missing identity claim: sub\n", "{name}");
        let http2 = h2::request(proxy.addr(), "POST", "/r2", &[], b"{}").unwrap();
        assert_eq!(http2.status, 401, "{name}");
        assert_eq!(http2.body, b"missing identity claim: sub\n", "{name}");
        let header = |n: &str| http2.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            (header("www-authenticate"), header("content-type")),
            (Some("Bearer".into()), Some("text/plain".into())),
            "{name}"
        );
        // An empty value is a value (the layer in front set it).
        let empty = exchange(proxy.addr(), &post("/e", &["X-Auth-Sub:"], b"{}"));
        assert_eq!(empty.status, 200, "{name}");
        assert_eq!(token_claims(&upstream.last()).0["sub"], "", "{name}");
        let seen = upstream.seen();
        assert_eq!(
            seen.len(),
            before + 1,
            "{name}: a 401 reached the upstream: {:?}",
            seen[before..].iter().map(|s| &s.uri).collect::<Vec<_>>()
        );
        let after = status(&proxy)["requests_processed"].clone();
        assert_eq!(
            after.as_u64(),
            processed.as_u64().map(|n| n + 1),
            "{name}: a 401 is not counted"
        );

        let ok = exchange(proxy.addr(), &post("/r", &["X-Auth-Sub: alice"], b"{}"));
        assert_eq!(ok.status, 200, "{name}");
        let (claims, order) = token_claims(&upstream.last());
        assert_eq!(
            (claims["sub"].as_str(), order),
            (Some("alice"), names(&["sub"]))
        );
        proxy.wait_for_lines("POST /r 401 jti=- ", 1);
        outcomes.push((reply_bytes(&http1), http2.body));
    }
    assert_eq!(
        outcomes[0], outcomes[1],
        "envoy (left) and the test host (right) differ"
    );
}

/// Sends one HTTP/2 request to `addr` for `uri` (its scheme and authority
/// become `:scheme` and `:authority`, whatever the connection is).
fn h2_to(addr: SocketAddr, uri: &str) -> u16 {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post(uri)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(20), sender.send_request(req))
                .await
                .unwrap()
                .unwrap();
        resp.status().as_u16()
    })
}

/// A token's expected `htm` and `htu`; `None`: the request is not signed.
type Binding = Option<(&'static str, &'static str)>;

#[test]
fn request_binding_is_the_same_bytes_on_both() {
    let upstream = Upstream::start();
    let setup = Setup {
        config: config(&format!(
            r#"{CLAIMS},"bind_request":true,"sign_methods":["POST","PUT"]"#
        )),
        ..Setup::new(upstream.addr())
    };
    // (request, the htm and htu expected; None: not signed)
    let cases: [(&[u8], Binding); 8] = [
        (
            b"POST /A/b?x=1 HTTP/1.1\r\nHost: API.Example.COM:80\r\nX-Auth-Sub: alice\r\nContent-Length: 0\r\n\r\n",
            Some(("POST", "http://api.example.com/A/b")),
        ),
        (
            b"PUT /p HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 0\r\n\r\n",
            Some(("PUT", "http://[::1]/p")),
        ),
        (
            b"POST /x HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 0\r\n\r\n",
            Some(("POST", "http://h:8080/x")),
        ),
        (
            b"POST /x HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 0\r\n\r\n",
            Some(("POST", "http://[::1]:8080/x")),
        ),
        (
            b"POST /x HTTP/1.1\r\nHost: h:443\r\nContent-Length: 0\r\n\r\n",
            Some(("POST", "http://h:443/x")),
        ),
        // HTTP/1.0 without Host: envoy.yaml's default_host_for_http_10.
        (
            b"POST /old?q HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
            Some(("POST", "http://jwt-proxy/old")),
        ),
        // Absolute form: the authority is the target's.
        (
            b"POST http://Abs.Example:80/abs/%7E?q=1 HTTP/1.1\r\nHost: abs.example\r\nContent-Length: 0\r\n\r\n",
            Some(("POST", "http://abs.example/abs/%7E")),
        ),
        // Unsigned: no binding, no authority needed.
        (b"GET /g HTTP/1.1\r\nHost: h\r\n\r\n", None),
    ];
    let mut outcomes = Vec::new();
    for proxy in setup.both() {
        let name = proxy.name();
        let mut outcome = Vec::new();
        for (request, want) in &cases {
            let resp = exchange(proxy.addr(), request);
            let text = String::from_utf8_lossy(request);
            assert_eq!(resp.status, 200, "{name}: {text}: {}", resp.text());
            let seen = upstream.last();
            let Some((htm, htu)) = want else {
                assert!(seen.all("x-my-jwt").is_empty(), "{name}: {text}");
                continue;
            };
            let (claims, order) = token_claims(&seen);
            let extra: &[&str] = if text.contains("X-Auth-Sub") {
                &["sub", "htm", "htu"]
            } else {
                &["htm", "htu"]
            };
            assert_eq!(order, names(extra), "{name}: {text}");
            assert_eq!(
                (claims["htm"].as_str(), claims["htu"].as_str()),
                (Some(*htm), Some(*htu)),
                "{name}: {text}"
            );
            outcome.push((claims["htm"].clone(), claims["htu"].clone()));
        }
        // An empty Host: nothing to bind to, refused by the filter, never forwarded.
        let before = upstream.seen().len();
        let empty = exchange(
            proxy.addr(),
            b"POST /e HTTP/1.1\r\nHost:\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            (empty.status, empty.text().as_str()),
            (400, "no scheme or authority to bind the token to\n"),
            "{name}"
        );
        assert_eq!(upstream.seen().len(), before, "{name}");
        outcome.push((Value::Null, format!("{:?}", reply_bytes(&empty)).into()));
        // HTTP/2: the client's `:scheme` and `:authority`.
        for (uri, htu) in [
            ("http://H2.Example:80/h2?x", "http://h2.example/h2"),
            ("http://h2.example:8080/h2", "http://h2.example:8080/h2"),
            // Envoy keeps a cleartext client's `https`, and so does the test host.
            ("https://S.Example:443/s", "https://s.example/s"),
            ("https://s.example:80/s", "https://s.example:80/s"),
        ] {
            assert_eq!(h2_to(proxy.addr(), uri), 200, "{name}: {uri}");
            let (claims, _) = token_claims(&upstream.last());
            assert_eq!(claims["htu"], htu, "{name}: {uri}");
            outcome.push((claims["htm"].clone(), claims["htu"].clone()));
        }
        outcomes.push(outcome);
    }
    assert_eq!(
        outcomes[0], outcomes[1],
        "envoy (left) and the test host (right) differ"
    );
}

#[test]
fn reserved_and_unmapped_claims_are_refused_at_start_on_both() {
    let refusing = HeldPort::new();
    for (extra, field) in [
        (
            r#""claims_from_headers":{"sub":"x-auth-sub","iat":"x-auth-iat"}"#,
            "claims_from_headers.iat",
        ),
        (
            r#""claims_from_headers":{"sub":"x_auth_sub"}"#,
            "claims_from_headers.sub",
        ),
        (
            r#""claims_from_headers":{"sub":"x-auth-sub"},"require_claims":["email"]"#,
            "require_claims",
        ),
    ] {
        let config = config(extra);
        let refusal = Setup {
            config: config.clone(),
            ..Setup::new(refusing.addr())
        }
        .refused();
        assert!(!refusal.envoy_status.success(), "envoy started: {config}");
        let envoy_line = refusal
            .envoy_log
            .lines()
            .find_map(|l| {
                l.split_once("jwt-proxy refuses to start: ")
                    .map(|(_, m)| m.to_owned())
            })
            .unwrap_or_else(|| panic!("no refusal logged for {config}:\n{}", refusal.envoy_log));
        assert!(
            envoy_line.contains(&format!("field `{field}`")),
            "{envoy_line}"
        );
        let host = format!("{:#}", refusal.host);
        assert!(
            host.contains(&envoy_line),
            "envoy: {envoy_line}\ntest-host: {host}"
        );
        assert!(!leaks_key(&host) && !leaks_key(&refusal.envoy_log));
    }
}

/// A caller's ES256 key, as an identity provider holds it: made by the
/// `openssl` command line (as docs/identity.md shows), the private key PEM
/// for signing with the `jsonwebtoken` crate, the public one as a JWKS.
struct CallerKey {
    private_pem: Vec<u8>,
    /// The public point: `x || y`, 32 bytes each.
    xy: Vec<u8>,
}

impl CallerKey {
    fn generate() -> CallerKey {
        let private_pem = openssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            b"",
        );
        let spki = openssl(&["pkey", "-pubout", "-outform", "DER"], &private_pem);
        // An uncompressed P-256 SubjectPublicKeyInfo ends with 0x04 || x || y.
        assert_eq!(spki[spki.len() - 65], 4, "an uncompressed point");
        CallerKey {
            xy: spki[spki.len() - 64..].to_vec(),
            private_pem,
        }
    }

    fn jwks(&self, kid: &str) -> String {
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&self.xy[..32]),
            "y": URL_SAFE_NO_PAD.encode(&self.xy[32..]),
        }]})
        .to_string()
    }

    fn token(&self, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&self.private_pem).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// Runs `openssl args` with `stdin`; its stdout. Fails (never skips)
/// without the command.
fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl (the caller key of the identity test): {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// envoy/examples/identity.yaml on the real Envoy (SPEC section 2.7): its
/// jwt_authn verifies the caller's token and sets x-auth-sub / x-auth-email
/// from it, after removing a client's copies; the filter signs with those
/// claims. Envoy only: the chain is Envoy's own filters.
#[test]
fn the_identity_example_signs_what_envoy_verified() {
    const ISSUER: &str = "https://idp.test";
    const KID: &str = "caller-1";
    let caller = CallerKey::generate();
    let stranger = CallerKey::generate();
    let upstream = Upstream::start();
    let example = jwt_proxy_tests::root().join("envoy/examples");
    let mut envoy = jwt_proxy_tests::EnvoyBuilder::new(upstream.addr())
        .template(example.join("identity.yaml"))
        .config(std::fs::read_to_string(example.join("identity.json")).unwrap())
        .render_env("CALLER_ISSUER", ISSUER)
        .render_env("CALLER_JWKS", &caller.jwks(KID))
        .start();
    let addr = envoy.addr();
    let exp = jwt_proxy_tests::now_secs() + 300;
    let alice = serde_json::json!({"iss": ISSUER, "sub": "alice", "email": "alice@example.com", "exp": exp});
    let good = caller.token(KID, &alice);
    envoy.forbid(&good);
    let bearer = |token: &str| format!("Authorization: Bearer {token}");

    // A valid token: its sub and email in ours, its own token not forwarded.
    let resp = exchange(addr, &post("/a", &[&bearer(&good)], b"{}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = upstream.last();
    let (claims, order) = token_claims(&seen);
    assert_eq!(order, names(&["sub", "email"]));
    assert_eq!(
        (claims["sub"].as_str(), claims["email"].as_str()),
        (Some("alice"), Some("alice@example.com"))
    );
    assert!(seen.all("authorization").is_empty(), "forward: false");
    assert_eq!(seen.one("x-auth-sub").as_deref(), Some("alice"));

    // A client's own x-auth-* beside a valid token: removed, Envoy's win.
    let forged = [
        bearer(&good),
        "X-Auth-Sub: mallory".to_owned(),
        "X-Auth-Email: mallory@example.com".to_owned(),
    ];
    let forged: Vec<&str> = forged.iter().map(String::as_str).collect();
    let resp = exchange(addr, &post("/b", &forged, b"{}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = upstream.last();
    let (claims, _) = token_claims(&seen);
    assert_eq!(
        (claims["sub"].as_str(), claims["email"].as_str()),
        (Some("alice"), Some("alice@example.com"))
    );
    assert_eq!(seen.all("x-auth-sub"), ["alice"]);
    // A token without an email: a client's x-auth-email never becomes one.
    let no_email = caller.token(
        KID,
        &serde_json::json!({"iss": ISSUER, "sub": "bob", "exp": exp}),
    );
    envoy.forbid(&no_email);
    let resp = exchange(
        addr,
        &post(
            "/c",
            &[&bearer(&no_email), "X-Auth-Email: mallory@example.com"],
            b"{}",
        ),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = upstream.last();
    let (claims, order) = token_claims(&seen);
    assert_eq!(
        (claims["sub"].as_str(), order),
        (Some("bob"), names(&["sub"]))
    );
    assert!(seen.all("x-auth-email").is_empty());

    // No token, or a bad one: 401 from jwt_authn, nothing upstream, a
    // client's x-auth-sub included.
    let before = upstream.seen().len();
    let expired = caller.token(
        KID,
        &serde_json::json!({"iss": ISSUER, "sub": "alice", "exp": exp - 3600}),
    );
    let other_issuer = caller.token(
        KID,
        &serde_json::json!({"iss": "https://elsewhere.test", "sub": "alice", "exp": exp}),
    );
    let foreign = stranger.token(KID, &alice);
    // One signature character changed (not the last, whose low bits are padding).
    let at = good.len() - 10;
    let flipped = if &good[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &good[..at], &good[at + 1..]);
    let refused = [
        vec!["X-Auth-Sub: mallory".to_owned()],
        vec![],
        vec![bearer(&expired)],
        vec![bearer(&other_issuer)],
        vec![bearer(&foreign), "X-Auth-Sub: alice".to_owned()],
        vec![bearer(&tampered)],
        vec![bearer("not.a.token")],
    ];
    for headers in &refused {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        for request in [post("/r", &headers, b"{}"), bare("GET", "/r", &headers)] {
            let resp = exchange(addr, &request);
            assert_eq!(
                resp.status,
                401,
                "{headers:?}: {} {}",
                resp.status,
                resp.text()
            );
        }
    }
    assert_eq!(
        upstream.seen().len(),
        before,
        "a request without a valid caller token reached the upstream"
    );
    // The proxy's own page needs no caller token.
    let page = exchange(addr, &bare("GET", "/status", &[]));
    assert_eq!(page.status, 200);
    let figures: Value = serde_json::from_slice(&page.body).unwrap();
    assert_eq!(figures["requests_signed"], 3);
}
