//! The connection manager's header rules, applied where Envoy applies them: hop-by-hop headers
//! (RFC 7230 section 6.1) and the headers a `Connection` names never cross a hop; `Via` and
//! `X-Forwarded-For` appended; a client's `x-envoy-*` and `_` names dropped; `Upgrade` and
//! `*` refused before any filter.

use std::net::SocketAddr;

use http::header::{CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use crate::abi::Level;
use crate::state::Shared;
use crate::state::headers::HeaderList;

/// Headers that never cross a hop (RFC 7230 section 6.1 and the usual extras).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What `envoy/envoy.yaml` appends to `Via` (RFC 9110 section 7.6.3).
const VIA: &str = "jwt-proxy";

/// The `Via` entry of a message received in `protocol` (`HTTP/1.1`, ...).
pub(crate) fn via(protocol: &str) -> String {
    format!("{protocol} {VIA}")
}

/// `value` appended to header `name`, after any values it has, comma-separated (Envoy's
/// `APPEND_IF_EXISTS_OR_ADD`).
fn append(map: &mut HeaderMap, name: &'static str, value: &str) {
    let mut joined: Vec<u8> = Vec::new();
    for v in map.get_all(name) {
        joined.extend_from_slice(v.as_bytes());
        joined.push(b',');
    }
    joined.extend_from_slice(value.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        map.insert(name, v);
    }
}

/// Names listed in `Connection` headers, lowercase.
pub(crate) fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The names a message's `Connection` headers list.
pub(crate) fn named(headers: &HeaderMap) -> Vec<String> {
    connection_tokens(
        headers
            .get_all(CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

fn is_hop_by_hop(name: &str, named: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name)
}

/// Whether an HTTP/1.0 client's connection closes after this request: unless it asked to keep
/// it (Envoy then answers `connection: close`, as RFC 2616 section 19.6.2 expects).
pub(crate) fn closes_http10(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_10 && !named(headers).iter().any(|t| t == "keep-alive")
}

/// The protocol name of `request.protocol` and `Via`.
pub(crate) fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

/// How a request the connection manager refuses before the filter sees it is answered:
/// status and whether the connection closes. Envoy runs no request callback for these.
pub(crate) fn refused_early(parts: &http::request::Parts, named: &[String]) -> Option<(u16, bool)> {
    // An `Upgrade` (WebSocket, ...) with none configured: 403. `h2c` is ignored.
    let upgrade = named.iter().any(|n| n == "upgrade")
        && parts
            .headers
            .get_all(http::header::UPGRADE)
            .iter()
            .any(|v| {
                v.to_str()
                    .unwrap_or("")
                    .split(',')
                    .any(|t| !t.trim().eq_ignore_ascii_case("h2c"))
            });
    if upgrade {
        return Some((403, true));
    }
    // `OPTIONS *` (or any `*`): no route matches.
    (parts.uri.path() == "*").then_some((404, false))
}

/// The request header map the filter sees, as Envoy's connection manager builds it before any
/// filter: pseudo-headers (`:path` absent for CONNECT, an HTTP/2 client's `:scheme` kept),
/// hop-by-hop headers and `Host` removed, a client's `x-envoy-*` removed (the header_mutation
/// filter), `x-forwarded-proto` set, and names with `_` dropped; returns the map and how many
/// were dropped.
pub(crate) fn request_map(parts: &http::request::Parts, named: &[String]) -> (HeaderList, i64) {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        // Only HTTP/1.0 gets this far without one: envoy.yaml's default_host_for_http_10.
        .unwrap_or_else(|| "jwt-proxy".to_owned());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderList::new();
    headers.add(":authority", authority.as_bytes());
    if parts.method != Method::CONNECT {
        headers.add(":path", path.as_bytes());
    }
    headers.add(":method", parts.method.as_str().as_bytes());
    // An HTTP/2 client's `:scheme` is kept, as Envoy keeps it (a token's
    // `htu` names it, SPEC section 2.7); HTTP/1 requests are `http`, the
    // listener's (Envoy refuses an absolute `https://` target on it).
    let scheme = match parts.version {
        Version::HTTP_2 => parts.uri.scheme_str().unwrap_or("http"),
        _ => "http",
    };
    headers.add(":scheme", scheme.as_bytes());
    let mut underscores = 0;
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if name == HOST
            || is_hop_by_hop(n, named)
            || n.starts_with("x-envoy-")
            || n == "x-forwarded-proto"
        {
            continue;
        }
        if n.contains('_') {
            underscores += 1;
            continue;
        }
        headers.add(n, value.as_bytes());
    }
    headers.add("x-forwarded-proto", b"http");
    (headers, underscores)
}

/// Converts a filter header list to an `http::HeaderMap`, skipping pseudo-headers and
/// hop-by-hop headers; invalid names or values are logged and dropped.
pub(crate) fn to_header_map(shared: &Shared, list: &HeaderList, named: &[String]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in list.iter() {
        if name.starts_with(':') || is_hop_by_hop(name, named) {
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => shared.log(
                Level::Warn,
                format!("dropping invalid header \"{name}\" set by the filter"),
            ),
        }
    }
    map
}

/// A filter header list as a trailers map: every valid entry, silently skipping invalid ones.
pub(crate) fn raw_header_map(list: &HeaderList) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in list.iter() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// The upstream request's headers, from the map as the filter left it: hop-by-hop removed,
/// `Host` from `:authority`, then the route's `request_headers_to_add` (`Via`,
/// `X-Forwarded-For` with the TCP peer last).
pub(crate) fn upstream_headers(
    shared: &Shared,
    headers: &HeaderList,
    named: &[String],
    protocol: &str,
    peer: SocketAddr,
) -> HeaderMap {
    let mut h = to_header_map(shared, headers, named);
    if let Some(a) = headers
        .get(":authority")
        .and_then(|a| HeaderValue::from_bytes(a).ok())
    {
        h.insert(HOST, a);
    }
    append(&mut h, "via", &format!("{protocol} {VIA}"));
    append(&mut h, "x-forwarded-for", &peer.ip().to_string());
    h
}

/// The response header map the filter sees: `:status`, the upstream's headers with `Via`
/// appended (envoy.yaml's upstream filter names the protocol the response arrived in), less
/// the hop-by-hop headers Envoy's codec drops (`connection` and the headers it names stay
/// visible).
pub(crate) fn response_map(parts: &http::response::Parts) -> HeaderList {
    let mut headers = HeaderList::new();
    headers.add(":status", parts.status.as_str().as_bytes());
    let mut upstream_headers = parts.headers.clone();
    let received = if parts.version == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    append(&mut upstream_headers, "via", &format!("{received} {VIA}"));
    for (name, value) in &upstream_headers {
        if name.as_str() != "connection" && HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        headers.add(name.as_str(), value.as_bytes());
    }
    headers
}
