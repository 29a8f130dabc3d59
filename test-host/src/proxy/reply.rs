//! Local replies rendered as Envoy 1.40 renders them with `envoy/envoy.yaml` (measured on the
//! wire; the conformance suite's `reply` and `failure` tests compare the bytes): first the
//! header map the filter's response callbacks see, then what the connection manager adds
//! after the filters (`date`, `server: envoy`). hyper then writes `content-length: 0` last for
//! an empty HTTP/1 body, and `connection: close` comes before it for HTTP/1.0, as Envoy's
//! codec does.
//!
//! The map the filter sees, in order: `:status`; the route's `via` (`response_headers_to_add`,
//! absent where no route matched); the filter's own headers in its order (pseudo-headers
//! dropped; a `via` of its own is appended to the route's with a comma, as Envoy's inline
//! `via` header merges); with a body, `content-length` (in place of the filter's) and
//! `content-type: text/plain` unless the filter set one; without one, no `content-length` or
//! `content-type` at all.
//!
//! A gRPC request (`content-type: application/grpc...`) gets Envoy's trailers-only gRPC reply
//! instead: `:status: 200`, `via`, the filter's headers, `content-type: application/grpc`,
//! `grpc-status` (the filter's, else mapped from the HTTP status) and `grpc-message` (the body,
//! percent-encoded), no body.

use std::time::SystemTime;

use http::header::{DATE, SERVER};
use http::{HeaderMap, HeaderValue};

use crate::state::LocalReply;
use crate::state::headers::HeaderList;

/// The header map (as the filter sees it) and body of a local reply.
pub(crate) fn render(reply: &LocalReply, via: Option<&str>, grpc: bool) -> (HeaderList, Vec<u8>) {
    let mut headers = HeaderList::new();
    let status = if grpc { 200 } else { reply.status };
    headers.add(":status", status.to_string().as_bytes());
    if let Some(via) = via {
        headers.add("via", via.as_bytes());
    }
    for (name, value) in reply.headers.iter() {
        if name.starts_with(':') {
            continue;
        }
        match headers.get("via") {
            Some(before) if name.eq_ignore_ascii_case("via") => {
                let mut merged = before.to_vec();
                merged.push(b',');
                merged.extend_from_slice(value);
                headers.replace("via", &merged);
            }
            _ => headers.add(name, value),
        }
    }
    if grpc {
        let code = reply
            .grpc_status
            .unwrap_or_else(|| grpc_status_of(reply.status));
        headers.replace("content-type", b"application/grpc");
        headers.replace("grpc-status", code.to_string().as_bytes());
        if !reply.body.is_empty() {
            headers.replace("grpc-message", &percent_encode(&reply.body));
        }
        headers.remove("content-length");
        return (headers, Vec::new());
    }
    if reply.body.is_empty() {
        headers.remove("content-length");
        headers.remove("content-type");
    } else {
        headers.replace("content-length", reply.body.len().to_string().as_bytes());
        if headers.get("content-type").is_none() {
            headers.add("content-type", b"text/plain");
        }
    }
    (headers, reply.body.clone())
}

/// What the connection manager adds to every response after the filters: `date` if absent
/// (appended), `server: envoy` (in place of one the filter set).
pub(crate) fn finalize(map: &mut HeaderMap) {
    if !map.contains_key(DATE)
        && let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
    {
        map.append(DATE, date);
    }
    map.insert(SERVER, HeaderValue::from_static("envoy"));
}

/// Whether a request is gRPC, as Envoy decides it: its `content-type` starts with
/// `application/grpc`.
pub(crate) fn is_grpc(request: &HeaderList) -> bool {
    request
        .get("content-type")
        .is_some_and(|ct| ct.starts_with(b"application/grpc"))
}

/// The gRPC status of an HTTP status (gRPC's HTTP-to-gRPC mapping, which Envoy applies).
fn grpc_status_of(http: u16) -> u32 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    for &b in message {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> LocalReply {
        LocalReply {
            status,
            details: String::new(),
            headers: HeaderList::from_pairs(headers.iter().copied()),
            body: body.as_bytes().to_vec(),
            grpc_status: None,
        }
    }

    fn pairs(list: &HeaderList) -> Vec<(String, String)> {
        list.to_pairs()
    }

    #[test]
    fn an_empty_reply_has_no_length_or_type() {
        let r = reply(403, &[("content-length", "9"), ("content-type", "x/y")], "");
        let (h, body) = render(&r, Some("HTTP/1.1 jwt-proxy"), false);
        assert!(body.is_empty());
        assert_eq!(
            pairs(&h),
            [(":status", "403"), ("via", "HTTP/1.1 jwt-proxy")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn the_filters_headers_come_after_via_and_its_via_merges() {
        let r = reply(
            401,
            &[
                (":status", "200"),
                ("via", "hers"),
                ("x-a", "1"),
                ("content-type", "a/b"),
            ],
            "{}",
        );
        let (h, _) = render(&r, Some("HTTP/1.1 jwt-proxy"), false);
        let want = [
            (":status", "401"),
            ("via", "HTTP/1.1 jwt-proxy,hers"),
            ("x-a", "1"),
            ("content-type", "a/b"),
            ("content-length", "2"),
        ];
        assert_eq!(pairs(&h), want.map(|(n, v)| (n.to_owned(), v.to_owned())));
    }

    #[test]
    fn a_grpc_request_gets_a_trailers_only_reply() {
        let r = reply(401, &[("x-md", "v")], "no 100%");
        let (h, body) = render(&r, None, true);
        assert!(body.is_empty());
        assert_eq!(h.get_str(":status"), Some("200"));
        assert_eq!(h.get_str("grpc-status"), Some("16"));
        assert_eq!(h.get_str("grpc-message"), Some("no 100%25"));
        assert_eq!(h.get_str("content-type"), Some("application/grpc"));
    }

    #[test]
    fn finalize_adds_date_and_overwrites_server() {
        let mut map = HeaderMap::new();
        map.insert(SERVER, HeaderValue::from_static("mine"));
        finalize(&mut map);
        assert_eq!(map[SERVER], "envoy");
        assert!(map.contains_key(DATE));
    }
}
