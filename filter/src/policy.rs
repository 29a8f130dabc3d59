//! The request policy: which requests are answered here, refused, signed or
//! forwarded unsigned (SPEC sections 2.1, 2.3 and 7), and the local replies.
//!
//! The JWKS path of SPEC section 2.7 is answered here too, when the key ring
//! publishes a key.
//!
//! Pure functions from what the host told us (the method, the path, the few
//! headers a rule needs) to a [`Decision`]; the proxy-wasm contexts read the
//! request, apply the decision and log. Headers are asked for through
//! [`Headers`] only when a rule needs one, so the common POST costs the same
//! hostcalls as before. This module does not touch `proxy_wasm`.

use std::borrow::Cow;

use crate::config::{Config, MAX_USER_LEN};
use crate::status::{Figures, wants_html};

/// The methods the proxy serves, for its own answers to `OPTIONS` and
/// `TRACE` (SPEC section 7).
pub const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";

/// The methods the status path answers.
pub const STATUS_ALLOW: &str = "GET, HEAD";

/// The methods the JWKS path answers (SPEC section 2.7).
pub const JWKS_ALLOW: &str = "GET, HEAD";

/// The request headers a rule may need, read on demand.
///
/// As bytes only: a value need not be UTF-8 (both codecs pass any byte but
/// NUL, CR and LF), and the proxy-wasm SDK's `get_http_request_header`
/// unwraps `String::from_utf8`, which panicked the guest on such a value.
/// Each rule decodes what it reads.
pub trait Headers {
    /// A header's value as bytes, `None` when absent.
    fn bytes(&self, name: &str) -> Option<Vec<u8>>;
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through to the upstream.
    Forward(Forward),
    /// Answer with the status page, in this format: the caller gathers the
    /// figures and makes the reply with [`status_page`].
    Status(Format),
    /// Answer with the configuration's JWKS (`config.jwks`: its body and
    /// headers, made once), `200`; never forwarded or counted.
    Jwks,
    /// Answer locally; the request is never forwarded.
    Reply(Reply),
}

/// How a forwarded request leaves the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Whether it gets a token.
    pub token: Token,
    /// `Some(n)`: replace `Max-Forwards` with `n` (an `OPTIONS` that had a
    /// valid, larger value), before the token header is set.
    pub max_forwards: Option<u64>,
    /// Whether it counts in `requests_processed` (and, signed, in
    /// `requests_signed`) once it is let through. `CONNECT` does not: Envoy's
    /// router answers it with 404.
    pub counted: bool,
}

/// The token header of a forwarded request. Either way no client-sent
/// token reaches the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Remove every value of the token header.
    Strip,
    /// Sign, with `payload.user` = `user`, and replace every value of the
    /// token header with the token.
    Sign {
        /// The token's `payload.user`.
        user: String,
    },
}

/// The status page's format, from the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`, the default.
    Json,
    /// `text/html`, when `Accept` asks for it.
    Html,
}

/// A reply the filter sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u32,
    /// Response headers.
    pub headers: Vec<(&'static str, &'static str)>,
    /// The body; `None` sends none.
    pub body: Option<Cow<'static, [u8]>>,
}

impl Reply {
    /// A plain-text refusal: `message` and a newline.
    pub fn refuse(status: u32, message: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "text/plain")],
            body: Some(Cow::Owned(format!("{message}\n").into_bytes())),
        }
    }

    /// `405` with `Allow: allow`.
    fn method_not_allowed(allow: &'static str) -> Reply {
        Reply {
            status: 405,
            headers: vec![("allow", allow), ("content-type", "text/plain")],
            body: Some(Cow::Borrowed(b"method not allowed\n")),
        }
    }

    /// The `500` for a request that could not be signed: it is never
    /// forwarded unsigned.
    pub fn sign_failed() -> Reply {
        Reply::refuse(500, "could not sign the request")
    }
}

/// The request path without its query string or fragment: only the path is
/// ever used (matched, logged), and a query string can carry credentials.
#[inline]
pub fn path_only(mut path: String) -> String {
    path.truncate(path.find(['?', '#']).unwrap_or(path.len()));
    path
}

/// Decides what to do with a request. `path` is the request path without
/// its query string ([`path_only`]).
///
/// This and the other functions on a signed POST's path (here and in
/// `keys`) are `#[inline]`: the filter builds at opt-level "z", which keeps
/// each a call otherwise (about 220 more guest instructions per POST in the
/// profile harness, `tests/examples/filter_profile.rs`).
#[inline]
pub fn decide(config: &Config, method: &str, path: &str, headers: &impl Headers) -> Decision {
    if path == config.status_path {
        return status(method, headers);
    }
    // Only when the ring publishes a key; otherwise an ordinary path.
    if config.jwks.is_some() && path == config.jwks_path {
        return if method == "GET" || method == "HEAD" {
            Decision::Jwks
        } else {
            Decision::Reply(Reply::method_not_allowed(JWKS_ALLOW))
        };
    }
    let mut max_forwards = None;
    match method {
        // TRACE reflects the request back (cross-site tracing).
        "TRACE" => return Decision::Reply(Reply::method_not_allowed(ALLOW)),
        "OPTIONS" => match options(headers.bytes("max-forwards").as_deref()) {
            Hops::Answer => {
                return Decision::Reply(Reply {
                    status: 200,
                    headers: vec![("allow", ALLOW)],
                    body: None,
                });
            }
            Hops::Decrement(n) => max_forwards = Some(n),
            Hops::Unchanged => {}
        },
        // A case variant of a signed method (`post` over HTTP/2, where no
        // codec refuses it) would be forwarded unsigned.
        m if !config.signs(m)
            && config
                .sign_methods
                .iter()
                .any(|s| s.eq_ignore_ascii_case(m)) =>
        {
            return Decision::Reply(Reply::refuse(400, "methods are case-sensitive"));
        }
        _ => {}
    }
    let token = if config.signs(method) {
        match user(config, headers, max_forwards) {
            Ok(user) => Token::Sign { user },
            Err(reply) => return Decision::Reply(reply),
        }
    } else {
        Token::Strip
    };
    Decision::Forward(Forward {
        token,
        max_forwards,
        counted: method != "CONNECT",
    })
}

/// The status path: `GET` and `HEAD` get the page, other methods `405`.
fn status(method: &str, headers: &impl Headers) -> Decision {
    if method != "GET" && method != "HEAD" {
        return Decision::Reply(Reply::method_not_allowed(STATUS_ALLOW));
    }
    // Not UTF-8: U+FFFD, so only a valid `text/html` item asks for HTML.
    let accept = headers.bytes("accept");
    if wants_html(accept.as_deref().map(String::from_utf8_lossy).as_deref()) {
        Decision::Status(Format::Html)
    } else {
        Decision::Status(Format::Json)
    }
}

/// The status page with these figures (the same reply to `GET` and `HEAD`:
/// the host drops a `HEAD` reply's body).
pub fn status_page(figures: &Figures, format: Format) -> Reply {
    let (content_type, body) = match format {
        Format::Html => ("text/html; charset=utf-8", figures.to_html()),
        Format::Json => ("application/json", figures.to_json()),
    };
    Reply {
        status: 200,
        headers: vec![
            ("content-type", content_type),
            ("cache-control", "no-store"),
        ],
        body: Some(Cow::Owned(body.into_bytes())),
    }
}

/// What an `OPTIONS` request's `Max-Forwards` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hops {
    /// `0`: the proxy answers.
    Answer,
    /// A larger valid value: forwarded, decremented to this.
    Decrement(u64),
    /// Absent or invalid: forwarded unchanged.
    Unchanged,
}

/// RFC 2616 section 14.31: `Max-Forwards: 0` is answered here, a larger
/// valid value is forwarded decremented, an invalid one (not UTF-8
/// included) unchanged.
fn options(max_forwards: Option<&[u8]>) -> Hops {
    let Some(Ok(value)) = max_forwards.map(std::str::from_utf8) else {
        return Hops::Unchanged;
    };
    let value = value.trim();
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Hops::Unchanged;
    }
    // Empty or beyond u64: invalid, forwarded unchanged.
    match value.parse::<u64>() {
        Ok(0) => Hops::Answer,
        Ok(hops) => Hops::Decrement(hops - 1),
        Err(_) => Hops::Unchanged,
    }
}

/// The value of `payload.user`: the `user_header`'s value when configured
/// and present (not UTF-8: U+FFFD), else `user`; a value over
/// [`MAX_USER_LEN`] bytes is refused with `400`. A `user_header` of
/// `max-forwards` reads the value as forwarded (`max_forwards`, when it is
/// rewritten), as the filter always has: it rewrites that header first.
#[inline]
fn user(
    config: &Config,
    headers: &impl Headers,
    max_forwards: Option<u64>,
) -> Result<String, Reply> {
    let Some(name) = &config.user_header else {
        return Ok(config.user.clone());
    };
    let value = match max_forwards {
        Some(n) if name == "max-forwards" => Some(n.to_string().into_bytes()),
        _ => headers.bytes(name),
    };
    match value {
        None => Ok(config.user.clone()),
        Some(v) if v.len() > MAX_USER_LEN => Err(Reply::refuse(
            400,
            &format!("the {name} header is longer than {MAX_USER_LEN} bytes"),
        )),
        Some(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
    }
}

/// A request pseudo-header (`:method`, `:path`) read as bytes, as text:
/// not UTF-8, U+FFFD (copies the bytes only then).
pub fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The header names a response's `Connection` value lists (RFC 9110 section
/// 7.6.1), lowercase, read from its bytes: a name that is not UTF-8 cannot
/// name a header the host passed, so it is skipped.
pub fn connection_names(connection: &[u8]) -> impl Iterator<Item = String> + '_ {
    connection
        .split(|&b| b == b',')
        .filter_map(|n| std::str::from_utf8(n.trim_ascii()).ok())
        .filter(|n| !n.is_empty())
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests;
