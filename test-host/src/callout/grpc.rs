//! gRPC over cleartext HTTP/2 to a cluster, as Envoy's gRPC client (`envoy_grpc`) speaks it:
//! a `POST /SERVICE/METHOD` with Envoy's headers, messages in gRPC's framing (a 5-byte
//! prefix: flag 0, big-endian length), the status from the trailers (or a trailers-only
//! response). Runs on tokio; each event goes back to the VM through `emit`. No tonic: the
//! host forwards raw bytes, never protobuf, and hyper's HTTP/2 client is already here.
//!
//! What the filter sees mirrors Envoy 1.40 (measured, `tests/tests/conformance/grpc.rs`):
//! an upstream status message is `MESSAGE{via_upstream}` (`via_upstream` when empty,
//! `grpc-message` left percent-encoded); a unary timeout closes with `Internal` (13)
//! `response_timeout`; a refused connection closes with `Unavailable` (14) and Envoy's
//! reset text, streams first getting empty initial metadata and Envoy's trailers-only
//! local reply as trailing metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use http_body_util::channel::Channel;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

use crate::abi::Status;
use crate::state::HostState;
use crate::state::callout::Completion;
use crate::state::grpc::{GrpcEvent, INTERNAL, Kind, Outbound, UNAVAILABLE, cluster_of};
use crate::state::headers::HeaderList;

/// Envoy's message for a call whose cluster refused the connection (with
/// `upstream_reset_before_response_started{...}` details appended).
const CONNECT_FAILURE: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
const PROTOCOL_ERROR: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: protocol error";

/// One call or stream to start.
#[derive(Debug)]
pub(crate) struct GrpcRequest {
    /// Where to connect (`HOST:PORT`).
    pub(crate) endpoint: String,
    /// `:authority`: the cluster's name, as Envoy sends it.
    pub(crate) cluster: String,
    /// `/SERVICE/METHOD`.
    pub(crate) path: String,
    /// The filter's metadata (already lower-cased names).
    pub(crate) metadata: HeaderList,
    /// Unary calls: the timeout (`Some(0)`: none, but `grpc-timeout: 0m` is sent).
    pub(crate) timeout: Option<Duration>,
    /// A call or a stream.
    pub(crate) kind: Kind,
}

/// A call or stream as the filter asked for it (`proxy_grpc_call` / `proxy_grpc_stream`).
pub(crate) struct GrpcStart {
    /// The `grpc_service` argument: a cluster name or a `GrpcService` proto.
    pub(crate) service: Vec<u8>,
    /// `/SERVICE/METHOD`.
    pub(crate) path: String,
    /// The serialized metadata pairs.
    pub(crate) metadata: Vec<u8>,
    pub(crate) kind: Kind,
    /// A unary call's message.
    pub(crate) first: Option<Vec<u8>>,
    /// A unary call's timeout.
    pub(crate) timeout: Option<Duration>,
}

/// Starts a call or stream for the effective context's root, as Envoy 1.40 does: an unknown
/// cluster is `ParseFailure`, a `GrpcService` proto without one `BadArgument`
/// ([`crate::state::grpc::cluster_of`]); metadata HTTP/2 cannot carry (a name with a space, a
/// value with a newline) is `InternalFailure`, its token spent. `Ok` is the token; the calls
/// belong to the root (an HTTP context ending does not cancel them).
pub(crate) fn start(state: &mut HostState, call: GrpcStart) -> Result<u32, Status> {
    let name = cluster_of(&call.service)?;
    let shared = state.shared.clone();
    let cluster = shared.clusters.get(&name).ok_or(Status::ParseFailure)?;
    let runtime = shared.clusters.runtime().ok_or(Status::InternalFailure)?;
    let poster = state
        .callouts
        .poster()
        .cloned()
        .ok_or(Status::InternalFailure)?;
    // Malformed pairs read as none, as proxy-wasm-cpp-host's `toPairs` gives none.
    let mut md = HeaderList::new();
    for (k, v) in HeaderList::deserialize(&call.metadata)
        .unwrap_or_default()
        .iter()
    {
        md.add(&k.to_ascii_lowercase(), v);
    }
    let carried = md.iter().all(|(k, v)| {
        http::HeaderName::from_bytes(k.as_bytes()).is_ok()
            && http::HeaderValue::from_bytes(v).is_ok()
    });
    let request = GrpcRequest {
        endpoint: cluster.authority.clone(),
        cluster: name,
        path: call.path,
        metadata: md,
        timeout: call.timeout,
        kind: call.kind,
    };
    let token = state.grpc.next_token(call.kind);
    if !carried {
        // Envoy refuses to start the call (its token is spent all the same).
        return Err(Status::InternalFailure);
    }
    let root = state.grpc_root();
    let (tx, rx) = mpsc::unbounded_channel();
    let request_ended = Arc::new(AtomicBool::new(false));
    if let Some(message) = call.first {
        request_ended.store(true, Ordering::SeqCst);
        let _ = tx.send(Outbound::Message(message, true));
    }
    let ended = Arc::clone(&request_ended);
    let go = state.grpc.hold_start();
    let task = runtime.spawn(async move {
        // Not before the callback returns (either way the sender goes).
        let _ = go.await;
        run(request, rx, ended, move |event| {
            poster.post(Completion::Grpc { token, event });
        })
        .await;
    });
    state
        .grpc
        .insert(token, root, task.abort_handle(), tx, request_ended);
    Ok(token)
}

/// A request body: the filter's messages, through a channel; dropping the sender ends it
/// (END_STREAM), aborting it fails it (a reset).
type RequestBody = Channel<Bytes, Cancelled>;

/// The filter cancelled the stream: its request body fails, and hyper resets the stream.
#[derive(Debug, thiserror::Error)]
#[error("cancelled by the filter")]
struct Cancelled;

/// `msg` in gRPC's framing.
fn frame(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(msg);
    out.freeze()
}

/// The next whole message of `buf`, taken out of it.
fn next_message(buf: &mut BytesMut) -> Option<Vec<u8>> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    buf.advance(5);
    Some(buf.split_to(len).to_vec())
}

/// Envoy's status message for an upstream `grpc-message`.
fn via_upstream(message: &str) -> String {
    if message.is_empty() {
        "via_upstream".to_owned()
    } else {
        format!("{message}{{via_upstream}}")
    }
}

fn to_list(map: &http::HeaderMap, status: Option<http::StatusCode>) -> HeaderList {
    let mut list = HeaderList::new();
    if let Some(s) = status {
        list.add(":status", s.as_str().as_bytes());
    }
    for (k, v) in map {
        list.add(k.as_str(), v.as_bytes());
    }
    list
}

/// The status and message of a response's trailers (or trailers-only headers).
fn status_of(map: &HeaderList) -> (u32, String) {
    let code = map
        .get_str("grpc-status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let message = map.get_str("grpc-message").unwrap_or("").to_owned();
    (code, via_upstream(&message))
}

/// Runs one call or stream to its end, emitting what the cluster sends; `outbound` carries
/// the filter's messages and half-close. Dropping (aborting) the future resets the stream.
pub(crate) async fn run(
    req: GrpcRequest,
    outbound: mpsc::UnboundedReceiver<Outbound>,
    request_ended: Arc<AtomicBool>,
    emit: impl Fn(GrpcEvent) + Send + 'static,
) {
    let kind = req.kind;
    let timeout = req.timeout.filter(|t| !t.is_zero());
    let exchange = exchange(req, outbound, &request_ended, &emit);
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, exchange).await.ok(),
        None => Some(exchange.await),
    };
    match result {
        Some(Ok(())) => {}
        Some(Err(Failure::Connect(detail))) => reset_before_headers(
            kind,
            CONNECT_FAILURE,
            &format!("remote_connection_failure|{detail}"),
            &emit,
        ),
        Some(Err(Failure::Protocol)) => {
            reset_before_headers(kind, PROTOCOL_ERROR, "protocol_error", &emit);
        }
        Some(Err(Failure::Reset(message))) => emit(GrpcEvent::Close {
            status: UNAVAILABLE,
            message,
        }),
        None => emit(GrpcEvent::Close {
            status: INTERNAL,
            message: "response_timeout".to_owned(),
        }),
    }
}

/// Envoy's answer to a call reset before the cluster's headers: a stream first gets empty
/// initial metadata and Envoy's trailers-only reply (`reason` as `grpc-message`) as trailing
/// metadata; then the close, `14` with `reason{upstream_reset_before_response_started{detail}}`.
fn reset_before_headers(kind: Kind, reason: &str, detail: &str, emit: &impl Fn(GrpcEvent)) {
    if kind == Kind::Stream {
        emit(GrpcEvent::InitialMetadata(HeaderList::new()));
        let mut local = HeaderList::new();
        local.add(":status", b"200");
        local.add("content-type", b"application/grpc");
        local.add("grpc-status", UNAVAILABLE.to_string().as_bytes());
        local.add("grpc-message", reason.as_bytes());
        emit(GrpcEvent::TrailingMetadata(local));
    }
    emit(GrpcEvent::Close {
        status: UNAVAILABLE,
        message: format!("{reason}{{upstream_reset_before_response_started{{{detail}}}}}"),
    });
}

enum Failure {
    /// The connection could not be made: Envoy's transport failure detail.
    Connect(String),
    /// The request cannot be sent as HTTP/2 (a space in its service or method): Envoy's codec
    /// resets it, and the cluster gets nothing.
    Protocol,
    /// The exchange broke after it started.
    Reset(String),
}

fn connect_detail(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "delayed_connect_error:_Connection_refused".into(),
        _ => format!("delayed_connect_error:_{}", e.to_string().replace(' ', "_")),
    }
}

fn request(req: &GrpcRequest, body: RequestBody) -> Option<http::Request<RequestBody>> {
    let mut b = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{}", req.cluster, req.path))
        .header("te", "trailers");
    if let Some(t) = req.timeout {
        b = b.header("grpc-timeout", format!("{}m", t.as_millis()));
    }
    b = b.header("content-type", "application/grpc");
    for (k, v) in req.metadata.iter() {
        // Checked by the host function: a name or value HTTP/2 cannot carry fails the call.
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_bytes(v),
        ) {
            b = b.header(k, v);
        }
    }
    b = b.header("x-envoy-internal", "true");
    if let Some(t) = req.timeout.filter(|t| !t.is_zero()) {
        b = b.header("x-envoy-expected-rq-timeout-ms", t.as_millis().to_string());
    }
    b.body(body).ok()
}

async fn exchange(
    req: GrpcRequest,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    request_ended: &AtomicBool,
    emit: &(impl Fn(GrpcEvent) + Send),
) -> Result<(), Failure> {
    let started = Instant::now();
    let (body_tx, body) = RequestBody::new(16);
    let http_req = request(&req, body).ok_or(Failure::Protocol)?;
    // envoy/render.sh gives every cluster `connect_timeout: 1s`.
    let stream = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(&req.endpoint),
    )
    .await
    .map_err(|_| Failure::Connect("connection_timeout".to_owned()))?
    .map_err(|e| Failure::Connect(connect_detail(&e)))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Reset(format!("{CONNECT_FAILURE}: {e}")))?;
    tokio::spawn(conn);
    // The filter's side: messages until it ends it (dropping the sender sends END_STREAM).
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut body_tx = Some(body_tx);
        while let Some(out) = outbound.recv().await {
            match out {
                Outbound::Message(m, end) => {
                    if let Some(tx) = body_tx.as_mut() {
                        // Fails only once the exchange is gone (then nothing is sent anyway).
                        let _ = tx.send_data(frame(&m)).await;
                    }
                    if end {
                        body_tx = None;
                        break;
                    }
                }
                Outbound::Close => {
                    body_tx = None;
                    break;
                }
                // The body fails, so the stream is reset whether or not the abort of the
                // exchange comes first (ending the body would send END_STREAM).
                Outbound::Cancel => {
                    if let Some(tx) = body_tx.take() {
                        tx.abort(Cancelled);
                    }
                    break;
                }
            }
        }
        drop(body_tx);
        let _ = ended_tx.send(());
    });
    let mut ended_rx = Some(ended_rx);
    let response = sender
        .send_request(http_req)
        .await
        .map_err(|e| Failure::Reset(format!("{CONNECT_FAILURE}: {e}")))?;
    // Complete once the filter ended its side, whether or not the last frame
    // has been written yet (the flag is set by the hostcall itself).
    let request_done = request_ended.load(Ordering::SeqCst)
        || ended_rx.as_mut().is_some_and(|rx| rx.try_recv().is_ok());
    let (parts, body) = response.into_parts();
    let mut headers = to_list(&parts.headers, Some(parts.status));
    if request_done {
        // Envoy's router times the upstream once the request is complete.
        let ms = started.elapsed().as_millis().to_string();
        headers.add("x-envoy-upstream-service-time", ms.as_bytes());
    }
    read_response(req.kind, headers, body, emit).await;
    Ok(())
}

async fn read_response(
    kind: Kind,
    headers: HeaderList,
    mut body: Incoming,
    emit: &(impl Fn(GrpcEvent) + Send),
) {
    let trailers_only = headers.get("grpc-status").is_some();
    if kind == Kind::Stream {
        emit(GrpcEvent::InitialMetadata(headers.clone()));
    }
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut trailers = None;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                emit(GrpcEvent::Close {
                    status: INTERNAL,
                    message: format!("upstream reset: {e}"),
                });
                return;
            }
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => {
                    buf.extend_from_slice(&data);
                    while let Some(m) = next_message(&mut buf) {
                        if kind == Kind::Stream {
                            emit(GrpcEvent::Message(m));
                        } else {
                            messages.push(m);
                        }
                    }
                }
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        trailers = Some(to_list(&t, None));
                    }
                }
            },
        }
    }
    let end = match trailers {
        Some(t) => t,
        None if trailers_only => headers,
        None => {
            emit(GrpcEvent::Close {
                status: INTERNAL,
                message: "no grpc-status".to_owned(),
            });
            return;
        }
    };
    let (status, message) = status_of(&end);
    match kind {
        Kind::Stream => {
            emit(GrpcEvent::TrailingMetadata(end));
            emit(GrpcEvent::Close { status, message });
        }
        Kind::Call if status == 0 && messages.len() == 1 => {
            emit(GrpcEvent::Message(messages.remove(0)));
        }
        Kind::Call if status == 0 => emit(GrpcEvent::Close {
            status: INTERNAL,
            message: via_upstream(""),
        }),
        Kind::Call => emit(GrpcEvent::Close { status, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips() {
        let mut buf = BytesMut::from(&frame(b"abc")[..]);
        buf.extend_from_slice(&frame(b"")[..]);
        buf.extend_from_slice(&[0, 0, 0]);
        assert_eq!(next_message(&mut buf), Some(b"abc".to_vec()));
        assert_eq!(next_message(&mut buf), Some(Vec::new()));
        assert_eq!(next_message(&mut buf), None);
    }

    #[test]
    fn upstream_messages_carry_envoys_suffix() {
        assert_eq!(via_upstream(""), "via_upstream");
        assert_eq!(via_upstream("denied%20here"), "denied%20here{via_upstream}");
    }
}
