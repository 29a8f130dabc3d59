//! The request-head checks of Envoy 1.40's HTTP/1 codec and connection manager: which heads
//! are refused with which answer ([`Refusal`]), and how an accepted head's body is framed.

/// Envoy's default `max_request_headers_kb` (60 KiB, start line included).
pub(crate) const MAX_HEAD: usize = 60 << 10;
/// Envoy's default `max_request_headers_count`.
pub(crate) const MAX_HEADERS: usize = 100;

/// The methods Envoy 1.40's HTTP/1 codec (Balsa) accepts; any other is 400. `MSEARCH`, not
/// `M-SEARCH`, is in Balsa's list (measured: `M-SEARCH` gets 400).
const KNOWN_METHODS: [&str; 34] = [
    "ACL",
    "BIND",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "MSEARCH",
    "NOTIFY",
    "OPTIONS",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PURGE",
    "PUT",
    "REBIND",
    "REPORT",
    "SEARCH",
    "SOURCE",
    "SUBSCRIBE",
    "TRACE",
    "UNBIND",
    "UNLINK",
    "UNLOCK",
    "UNSUBSCRIBE",
];

/// A request head the proxy refuses, with the answer Envoy gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Malformed, an unknown method, a request target with a byte outside visible ASCII
    /// (`0x21..=0x7e`: non-ASCII UTF-8 too), `Content-Length` with `Transfer-Encoding`, a
    /// repeated or invalid `Content-Length`, whitespace before a colon: the codec's 400.
    BadRequest,
    /// The connection manager's 400 (empty body): HTTP/1.1 without `Host`, or a fragment
    /// (`#`) in the request target.
    NoHost,
    /// A `Transfer-Encoding` other than exactly `chunked`: 501.
    NotImplemented,
    /// A head over 60 KiB or with more than 100 headers: 431.
    TooLarge,
    /// The head did not arrive in time: 408.
    Timeout,
}

impl Refusal {
    /// The whole response, as Envoy writes it (less `date` and `server`).
    pub(crate) fn response(self) -> Vec<u8> {
        let (status, body) = match self {
            Refusal::BadRequest => ("400 Bad Request", "Bad Request"),
            Refusal::NoHost => ("400 Bad Request", ""),
            Refusal::NotImplemented => ("501 Not Implemented", "Not Implemented"),
            Refusal::TooLarge => (
                "431 Request Header Fields Too Large",
                "Request Header Fields Too Large",
            ),
            Refusal::Timeout => ("408 Request Timeout", "request header timeout"),
        };
        let content_type = if body.is_empty() {
            ""
        } else {
            "content-type: text/plain\r\n"
        };
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{content_type}connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// How the body after a head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Parses one complete request head (up to and including its empty line) and checks it: the
/// unit tests' way in (the edge parses once and calls [`check_request`]).
#[cfg(test)]
fn check_head(head: &[u8]) -> Result<Framing, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => check_request(&req),
        Err(httparse::Error::TooManyHeaders) => Err(Refusal::TooLarge),
        // Partial: not a whole head; whitespace before a colon, a bad token, ...: malformed.
        Ok(httparse::Status::Partial) | Err(_) => Err(Refusal::BadRequest),
    }
}

/// Checks one complete request head, as httparse parsed it, the way Envoy's codec and
/// connection manager do, and tells how its body is framed.
///
/// # Errors
/// The [`Refusal`] Envoy answers with.
pub(crate) fn check_request(req: &httparse::Request<'_, '_>) -> Result<Framing, Refusal> {
    let method = req.method.unwrap_or_default();
    if !KNOWN_METHODS.contains(&method) {
        return Err(Refusal::BadRequest);
    }
    // httparse lets UTF-8 through in the target; Envoy's codec takes visible ASCII only
    // (measured: every byte `0x80..=0xff`, in the path or the query, is its 400).
    let target = req.path.unwrap_or_default().as_bytes();
    if !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Refusal::BadRequest);
    }
    let named = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    let lengths: Vec<&[u8]> = named("content-length").map(|h| h.value).collect();
    let codings: Vec<&[u8]> = named("transfer-encoding").map(|h| h.value).collect();
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(Refusal::BadRequest);
        }
        // Envoy implements `chunked` alone: a list, a repeat or another coding is 501.
        if codings.len() > 1 || !codings[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(Refusal::NotImplemented);
        }
    }
    // A fragment is refused by the connection manager, not the codec (measured).
    if target.contains(&b'#') {
        return Err(Refusal::NoHost);
    }
    if req.version == Some(1)
        && named("host").next().is_none()
        && !req.path.is_some_and(|p| p.contains("://"))
    {
        return Err(Refusal::NoHost);
    }
    match (lengths.as_slice(), codings.is_empty()) {
        (_, false) => Ok(Framing::Chunked),
        ([], true) => Ok(Framing::Empty),
        ([one], true) => {
            let text = one.trim_ascii();
            if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::BadRequest);
            }
            std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .map(Framing::Length)
                .ok_or(Refusal::BadRequest)
        }
        // Repeated, even with equal values: Envoy's 400.
        _ => Err(Refusal::BadRequest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &str) -> Vec<u8> {
        lines.replace('\n', "\r\n").into_bytes()
    }

    #[test]
    fn heads_envoy_refuses_are_refused_with_its_status() {
        let cases: [(&str, Result<Framing, Refusal>); 18] = [
            (
                "GET /\u{e9} HTTP/1.1\nHost: a\n\n",
                Err(Refusal::BadRequest),
            ),
            (
                "GET /?q=\u{e9} HTTP/1.1\nHost: a\n\n",
                Err(Refusal::BadRequest),
            ),
            ("GET /%C3%A9 HTTP/1.1\nHost: a\n\n", Ok(Framing::Empty)),
            ("GET /a#f HTTP/1.1\nHost: a\n\n", Err(Refusal::NoHost)),
            (
                "POST / HTTP/1.1\nHost: a\nContent-Length: 2\n\n",
                Ok(Framing::Length(2)),
            ),
            ("GET / HTTP/1.1\nHost: a\n\n", Ok(Framing::Empty)),
            ("GET / HTTP/1.0\n\n", Ok(Framing::Empty)),
            ("GET http://a/ HTTP/1.1\n\n", Ok(Framing::Empty)),
            (
                "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: Chunked\n\n",
                Ok(Framing::Chunked),
            ),
            ("GET / HTTP/1.1\n\n", Err(Refusal::NoHost)),
            ("post / HTTP/1.1\nHost: a\n\n", Err(Refusal::BadRequest)),
            ("M-SEARCH / HTTP/1.1\nHost: a\n\n", Err(Refusal::BadRequest)),
            (
                "GET / HTTP/1.1\nHost: a\nX-A : 1\n\n",
                Err(Refusal::BadRequest),
            ),
            (
                "POST / HTTP/1.1\nHost: a\nContent-Length: 2\nTransfer-Encoding: chunked\n\n",
                Err(Refusal::BadRequest),
            ),
            (
                "POST / HTTP/1.1\nHost: a\nContent-Length: 2\nContent-Length: 2\n\n",
                Err(Refusal::BadRequest),
            ),
            (
                "POST / HTTP/1.1\nHost: a\nContent-Length: +2\n\n",
                Err(Refusal::BadRequest),
            ),
            (
                "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n",
                Err(Refusal::NotImplemented),
            ),
            (
                "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip\nTransfer-Encoding: chunked\n\n",
                Err(Refusal::NotImplemented),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(check_head(&head(text)), want, "{text:?}");
        }
    }

    #[test]
    fn refusals_are_whole_responses_that_close() {
        let r = String::from_utf8(Refusal::Timeout.response()).unwrap_or_default();
        assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
        assert!(r.contains("connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nrequest header timeout"));
        let r = String::from_utf8(Refusal::NoHost.response()).unwrap_or_default();
        assert!(r.contains("content-length: 0\r\n") && !r.contains("content-type"));
    }
}
