//! The properties Envoy 1.40 derives from an HTTP stream (`proxy_get_property`), with its
//! encodings (strings as bytes, integers as 8-byte little-endian, booleans as one byte) and
//! its visibility, as measured with `envoy/envoy.yaml` (tests/tests/conformance/properties.rs):
//! header-derived `request.*` values only while the request headers callback runs (or the
//! stream is paused there) and in `on_log`; `response.headers.*` likewise in the response
//! headers callback and `on_log`; `request.duration` only in `on_log`; `upstream.*` once the
//! upstream answered. A root context sees none of them.

use std::net::SocketAddr;

use super::HttpStream;

/// The callback an HTTP context is in (or last ran).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Created, no callback yet.
    #[default]
    Created,
    /// `proxy_on_request_headers`.
    RequestHeaders,
    /// `proxy_on_request_body` or `proxy_on_request_trailers`.
    RequestRest,
    /// `proxy_on_response_headers`.
    ResponseHeaders,
    /// `proxy_on_response_body` or `proxy_on_response_trailers`.
    ResponseRest,
    /// `proxy_on_log`.
    Log,
}

/// What the host knows besides the stream.
pub(crate) struct Facts {
    /// Now, as the filter's clock says (nanoseconds since the epoch).
    pub(crate) now_nanos: u64,
    /// The route's upstream, when it is an address.
    pub(crate) upstream: Option<SocketAddr>,
}

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn port(a: Option<SocketAddr>) -> Option<Vec<u8>> {
    a.map(|a| int(i64::from(a.port())))
}

/// Envoy's gRPC status of an HTTP response without `grpc-status` (`httpToGrpcStatus`).
fn grpc_of_http(status: u16) -> i64 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

impl HttpStream {
    /// The property at `path` (its segments), if Envoy has it at this point of the stream.
    pub(crate) fn property(&self, path: &[&str], facts: &Facts) -> Option<Vec<u8>> {
        let requests = matches!(self.phase, Phase::RequestHeaders | Phase::Log);
        let responses = matches!(self.phase, Phase::ResponseHeaders | Phase::Log);
        let request = |name: &str| {
            requests
                .then(|| self.request_headers.get(name).map(<[u8]>::to_vec))
                .flatten()
        };
        let path_only = |p: Vec<u8>| match p.iter().position(|&b| b == b'?') {
            Some(q) => p[..q].to_vec(),
            None => p,
        };
        let status = self
            .response_headers
            .get_str(":status")
            .and_then(|s| s.parse::<u16>().ok());
        let upstream = status.is_some()
            && !self.replied_locally
            && self
                .code_details
                .as_deref()
                .is_none_or(|d| d == "via_upstream");
        match path {
            ["request", "path"] => request(":path"),
            ["request", "url_path"] => request(":path").map(path_only),
            ["request", "query"] => request(":path").and_then(|p| {
                let q = p.iter().position(|&b| b == b'?')?;
                Some(p[q + 1..].to_vec())
            }),
            ["request", "host"] => request(":authority"),
            ["request", "method"] => request(":method"),
            ["request", "scheme"] => request(":scheme"),
            ["request", "referer"] => request("referer"),
            ["request", "useragent"] => request("user-agent"),
            ["request", "id"] => requests.then(|| self.info.request_id.clone().into_bytes()),
            ["request", "headers", name] => request(name),
            ["request", "protocol"] => Some(self.info.protocol.clone().into_bytes()),
            ["request", "time"] => Some(int(self.started_nanos as i64)),
            ["request", "duration"] => (self.phase == Phase::Log)
                .then(|| int(facts.now_nanos.saturating_sub(self.started_nanos) as i64)),
            ["response", "code"] => status.map(|s| int(i64::from(s))),
            ["response", "code_details"] => self
                .code_details
                .clone()
                .map(String::into_bytes)
                .or_else(|| upstream.then(|| b"via_upstream".to_vec())),
            ["response", "flags"] => Some(int(0)),
            ["response", "grpc_status"] => status.map(|s| {
                let explicit = self
                    .response_trailers
                    .get_str("grpc-status")
                    .or_else(|| self.response_headers.get_str("grpc-status"))
                    .and_then(|g| g.parse::<i64>().ok());
                int(explicit.unwrap_or_else(|| grpc_of_http(s)))
            }),
            ["response", "headers", name] => responses
                .then(|| self.response_headers.get(name).map(<[u8]>::to_vec))
                .flatten(),
            ["source", "address"] => self.info.source.map(|a| a.to_string().into_bytes()),
            ["source", "port"] => port(self.info.source),
            ["destination", "address"] => self.info.destination.map(|a| a.to_string().into_bytes()),
            ["destination", "port"] => port(self.info.destination),
            ["connection", "mtls"] => Some(vec![0]),
            ["xds", "cluster_name"] => Some(b"upstream".to_vec()),
            ["xds", "listener_direction"] => Some(int(0)),
            ["upstream", "address"] => facts
                .upstream
                .filter(|_| upstream)
                .map(|a| a.to_string().into_bytes()),
            ["upstream", "port"] => port(facts.upstream.filter(|_| upstream)),
            _ => None,
        }
    }
}
