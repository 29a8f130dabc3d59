//! The answers an [`super::Exchange`] makes itself rather than the upstream's: a filter's
//! local reply, Envoy's `503` when the filter fails, and Envoy's replies when the upstream
//! does (after the connector's retries).

use http::{Response, StatusCode};

use crate::abi::Level;
use crate::error::Error;
use crate::proxy::Proxy;
use crate::proxy::body::{ProxyBody, empty, full, host_reply};
use crate::proxy::upstream::UpstreamError;
use crate::proxy::{hop, reply};
use crate::state::LocalReply;
use crate::state::headers::HeaderList;

/// The `:status` of a header map, if valid.
pub(super) fn status_of(headers: &HeaderList) -> Option<StatusCode> {
    headers
        .get_str(":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
}

/// The client's response for a local reply's headers (after the filter's callbacks) and body.
pub(super) fn reply_response(
    proxy: &Proxy,
    headers: HeaderList,
    body: Vec<u8>,
) -> Response<ProxyBody> {
    let status = status_of(&headers).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut map = hop::to_header_map(&proxy.shared, &headers, &[]);
    if body.is_empty() {
        map.remove(http::header::CONTENT_LENGTH);
    } else if map.contains_key(http::header::CONTENT_LENGTH) {
        map.insert(http::header::CONTENT_LENGTH, body.len().into());
    }
    reply::finalize(&mut map);
    let mut response = Response::new(if body.is_empty() { empty() } else { full(body) });
    *response.status_mut() = status;
    *response.headers_mut() = map;
    response
}

/// Envoy's `503` when the filter trapped or its VM is gone: an empty local reply (no
/// `content-type`), with the route's `via`, and no callbacks.
pub(crate) fn filter_failed(
    proxy: &Proxy,
    e: &Error,
    via: Option<&str>,
    grpc: bool,
) -> Response<ProxyBody> {
    proxy.log(Level::Error, format!("request failed: {e}"));
    let (headers, body) = reply::render(&host_reply(503, ""), via, grpc);
    reply_response(proxy, headers, body)
}

/// Envoy's reply when the upstream fails (`None`: no response headers in time), logged.
pub(super) fn upstream_failed(proxy: &Proxy, failed: Option<UpstreamError>) -> LocalReply {
    const BEFORE_HEADERS: &str = "upstream connect error or disconnect/reset before headers";
    let upstream = &proxy.config.upstream;
    let (status, log, reason) = match failed {
        None => {
            let timeout = proxy.config.upstream_timeout;
            proxy.log(
                Level::Warn,
                format!("upstream {upstream} timed out after {timeout:?}"),
            );
            return host_reply(504, "upstream request timeout\n");
        }
        // After the connector's retries: Envoy's body names the last attempt's failure.
        Some(UpstreamError::Connect { timeout, error }) => {
            proxy.log(
                Level::Warn,
                format!("upstream {upstream} connect error: {error}"),
            );
            let reason = if timeout {
                "connection timeout"
            } else {
                "remote connection failure"
            };
            return host_reply(
                503,
                &format!("{BEFORE_HEADERS}. retried and the latest reset reason: {reason}"),
            );
        }
        // Accepted, then closed or reset before a byte of response: Envoy's 503.
        Some(UpstreamError::Failed {
            heard: false,
            error,
        }) => (
            503,
            format!("disconnected: {error}"),
            "connection termination",
        ),
        Some(UpstreamError::Failed { error, .. }) => {
            (502, format!("reset: {error}"), "connection termination")
        }
        // Answered by the exchange itself (`Exchange::aborted`); as a reset request if not.
        Some(UpstreamError::Aborted(_)) => (
            503,
            "request body stopped".to_owned(),
            "connection termination",
        ),
    };
    proxy.log(Level::Warn, format!("upstream {upstream} {log}"));
    host_reply(
        status,
        &format!("{BEFORE_HEADERS}. reset reason: {reason}\n"),
    )
}
