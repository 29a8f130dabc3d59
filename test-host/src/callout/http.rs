//! The I/O of an HTTP callout (`proxy_http_call`): one request to a cluster through
//! hyper-util's client (HTTP/1.1, or HTTP/2 with prior knowledge for an `h2c://` cluster), the
//! whole response read, the result posted back to the VM's worker. What the cluster receives
//! and what the filter reads are Envoy 1.40's, measured (`tests/tests/conformance/callout.rs`):
//!
//! - The cluster gets `Host` from `:authority`, the filter's headers in order (a name given
//!   twice twice), `content-length` when there is a body (the filter's own is dropped), then `x-envoy-internal: true` and
//!   `x-envoy-expected-rq-timeout-ms` (the call's timeout), as Envoy's async client and router
//!   add them.
//! - The filter reads `:status`, the cluster's headers and `x-envoy-upstream-service-time`.
//! - Failures are Envoy's local replies, delivered as responses: no connection `503`
//!   "upstream connect error or disconnect/reset before headers. reset reason: remote connection
//!   failure", closed before a response `503` "... reset reason: connection termination", the
//!   timeout `504` "upstream request timeout" (each `content-length`, `content-type:
//!   text/plain`). A response broken after its headers is a reset: the callback gets
//!   `(0, 0, 0)` and no headers, as Envoy's `onHttpCallFailure`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::AbortHandle;

use crate::abi::Status;
use crate::state::HostState;
use crate::state::callout::{Completion, HttpResponse, Poster};
use crate::state::clusters::{Cluster, Protocol};
use crate::state::headers::HeaderList;

/// The connect timeout of `envoy/render.sh`'s clusters.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One callout, as the filter asked for it.
struct HttpCall {
    pub(crate) cluster: Cluster,
    /// The filter's headers, `:method`, `:path` and `:authority` among them.
    pub(crate) headers: HeaderList,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: HeaderList,
    /// `None`: no timeout (the filter passed 0, or more than `i32::MAX`, as Envoy reads it).
    pub(crate) timeout: Option<Duration>,
}

/// Starts a callout for the effective context, as Envoy's `httpCall`: a timeout beyond
/// `i32::MAX` ms is `BadArgument` (Envoy reads it as a negative int; 0 is no timeout), then
/// [`HostState::plan_http_call`]'s checks. `Ok` is the token.
pub(crate) fn start(
    state: &mut HostState,
    cluster: &str,
    headers: HeaderList,
    body: Vec<u8>,
    trailers: HeaderList,
    timeout_ms: u32,
) -> Result<u32, Status> {
    let timeout_ms = i32::try_from(timeout_ms).map_err(|_| Status::BadArgument)?;
    let plan = state.plan_http_call(cluster, &headers)?;
    let timeout =
        (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms.unsigned_abs())));
    let call = HttpCall {
        cluster: plan.cluster,
        headers,
        body,
        trailers,
        timeout,
    };
    let abort = spawn(&plan.runtime, call, plan.token, plan.poster);
    let context = state.effective_context;
    state.callouts.insert(plan.token, context, abort);
    Ok(plan.token)
}

/// Starts `call` on `runtime`; its result reaches the VM through `poster` as
/// [`Completion::Http`] with `token`. Aborting the handle cancels it (no completion).
fn spawn(
    runtime: &tokio::runtime::Handle,
    call: HttpCall,
    token: u32,
    poster: Poster,
) -> AbortHandle {
    runtime
        .spawn(async move {
            let response = run(call).await;
            poster.post(Completion::Http { token, response });
        })
        .abort_handle()
}

/// Envoy's local reply for a call that got no response.
fn local_reply(status: u16, body: &str) -> Option<HttpResponse> {
    let mut headers = HeaderList::new();
    headers.add(":status", status.to_string().as_bytes());
    headers.add("content-length", body.len().to_string().as_bytes());
    headers.add("content-type", b"text/plain");
    Some(HttpResponse {
        headers,
        body: body.as_bytes().to_vec(),
        trailers: HeaderList::new(),
    })
}

const RESET: &str = "upstream connect error or disconnect/reset before headers. reset reason: ";

async fn run(call: HttpCall) -> Option<HttpResponse> {
    let timeout = call.timeout;
    let exchange = exchange(call);
    match timeout {
        Some(t) => tokio::time::timeout(t, exchange)
            .await
            .unwrap_or_else(|_| local_reply(504, "upstream request timeout")),
        None => exchange.await,
    }
}

async fn exchange(call: HttpCall) -> Option<HttpResponse> {
    let request = match request(&call) {
        Ok(r) => r,
        Err(_) => return local_reply(503, &format!("{RESET}remote connection failure")),
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(call.cluster.protocol == Protocol::H2c)
        .set_host(false)
        .build(connector);
    let started = Instant::now();
    let response = match client.request(request).await {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            return local_reply(503, &format!("{RESET}remote connection failure"));
        }
        Err(_) => return local_reply(503, &format!("{RESET}connection termination")),
    };
    let (parts, body) = response.into_parts();
    let mut headers = HeaderList::new();
    headers.add(":status", parts.status.as_str().as_bytes());
    for (name, value) in &parts.headers {
        headers.add(name.as_str(), value.as_bytes());
    }
    let collected = body.collect().await.ok()?;
    let trailers = collected.trailers().map_or_else(HeaderList::new, |t| {
        let mut list = HeaderList::new();
        for (name, value) in t {
            list.add(name.as_str(), value.as_bytes());
        }
        list
    });
    let millis = started.elapsed().as_millis().to_string();
    headers.add("x-envoy-upstream-service-time", millis.as_bytes());
    Some(HttpResponse {
        headers,
        body: collected.to_bytes().to_vec(),
        trailers,
    })
}

/// The request the cluster receives (see the module docs).
fn request(call: &HttpCall) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let h = &call.headers;
    let text = |name: &str| String::from_utf8_lossy(h.get(name).unwrap_or_default()).into_owned();
    let uri = format!("http://{}{}", call.cluster.authority, text(":path"));
    let mut builder = http::Request::builder()
        .method(text(":method").as_str())
        .uri(uri)
        .header(http::header::HOST, text(":authority"));
    // A name given twice goes twice (Envoy keeps each value); a body's `content-length` is
    // the host's, replacing the filter's.
    for (name, value) in h.iter() {
        let own_length = !call.body.is_empty() && name.eq_ignore_ascii_case("content-length");
        if !name.starts_with(':') && !name.eq_ignore_ascii_case("host") && !own_length {
            builder = builder.header(name, value);
        }
    }
    if !call.body.is_empty() {
        builder = builder.header(http::header::CONTENT_LENGTH, call.body.len());
    }
    builder = builder.header("x-envoy-internal", "true");
    if let Some(t) = call.timeout {
        builder = builder.header("x-envoy-expected-rq-timeout-ms", t.as_millis().to_string());
    }
    // Trailers are only carried by a streaming body; a callout's are rare and not sent here.
    let _ = &call.trailers;
    builder.body(Full::new(Bytes::from(call.body.clone())))
}
