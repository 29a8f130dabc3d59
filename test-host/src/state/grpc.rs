//! gRPC calls and streams of one VM, as Envoy keeps them: owned by the root context of the
//! context that made them (so an HTTP context ending does not cancel them), tokens numbered
//! as Envoy numbers them (calls `4n + 1` from 5, streams `4n + 2` from 6), the status of the
//! last close per root context (`proxy_get_status`), and what a gRPC callback may read while
//! it runs (buffer type 5, map types 4 and 5). Leaf: no guest memory, no wasmtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::abi::Status;
use crate::state::headers::HeaderList;

/// Envoy's `GrpcService`, of which only `envoy_grpc` is read (`timeout`, `google_grpc`, ...
/// are skipped as unknown fields).
#[derive(Clone, PartialEq, prost::Message)]
struct GrpcService {
    #[prost(message, optional, tag = "1")]
    envoy_grpc: Option<EnvoyGrpc>,
}

/// `GrpcService.EnvoyGrpc`: the cluster (absent when not on the wire).
#[derive(Clone, PartialEq, prost::Message)]
struct EnvoyGrpc {
    #[prost(string, optional, tag = "1")]
    cluster_name: Option<String>,
}

/// The cluster a `grpc_service` argument names, as Envoy 1.40 reads it: bytes that parse as
/// a `GrpcService` proto name its `envoy_grpc.cluster_name`; others are the name itself (what
/// SDK 0.2.5 passes). A proto without that name (an empty argument too) is `BadArgument`
/// (Envoy aborts on it: `unset oneof`).
pub(crate) fn cluster_of(service: &[u8]) -> Result<String, Status> {
    match <GrpcService as prost::Message>::decode(service) {
        Ok(proto) => proto
            .envoy_grpc
            .and_then(|e| e.cluster_name)
            .ok_or(Status::BadArgument),
        Err(_) => Ok(String::from_utf8_lossy(service).into_owned()),
    }
}

/// gRPC status `Unavailable`.
pub(crate) const UNAVAILABLE: u32 = 14;
/// gRPC status `Internal`.
pub(crate) const INTERNAL: u32 = 13;

/// What the cluster sent, on its way to the VM.
#[derive(Debug)]
pub(crate) enum GrpcEvent {
    /// The response headers (streams only).
    InitialMetadata(HeaderList),
    /// One message (a unary call's only one: that call is then over).
    Message(Vec<u8>),
    /// The trailers (streams only).
    TrailingMetadata(HeaderList),
    /// The call or the stream ended with this status and message.
    Close {
        /// gRPC status code.
        status: u32,
        /// Its message, as the filter reads it.
        message: String,
    },
}

/// What the filter sends on a call, to the I/O task.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A message (`proxy_grpc_send`); `true` ends the client's side after it.
    Message(Vec<u8>, bool),
    /// End the client's side (`proxy_grpc_close` of a stream).
    Close,
    /// `proxy_grpc_cancel`: the stream is reset (its exchange is aborted), never ended.
    Cancel,
}

/// Whether a token names a unary call or a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `proxy_grpc_call`.
    Call,
    /// `proxy_grpc_stream`.
    Stream,
}

impl Kind {
    /// The kind of `token` by Envoy's numbering (`None`: not a gRPC token).
    pub(crate) fn of(token: u32) -> Option<Self> {
        match token & 3 {
            1 => Some(Self::Call),
            2 => Some(Self::Stream),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Pending {
    root: u32,
    abort: AbortHandle,
    outbound: mpsc::UnboundedSender<Outbound>,
    /// Set when the filter ends its side, as the hostcall runs (Envoy's router
    /// knows the request is complete then, before any I/O).
    request_ended: Arc<AtomicBool>,
    local_closed: bool,
    remote_closed: bool,
}

/// One VM's gRPC calls and streams.
#[derive(Debug)]
pub(crate) struct GrpcCalls {
    next_call: u32,
    next_stream: u32,
    pending: HashMap<u32, Pending>,
    /// The status of the last close delivered to each root context.
    status: HashMap<u32, (u32, String)>,
    /// Buffer type 5 while `proxy_on_grpc_receive` runs.
    pub(crate) receive_buffer: Option<Vec<u8>>,
    /// Map type 4 while `proxy_on_grpc_receive_initial_metadata` runs.
    pub(crate) initial_metadata: Option<HeaderList>,
    /// Map type 5 while `proxy_on_grpc_receive_trailing_metadata` runs.
    pub(crate) trailing_metadata: Option<HeaderList>,
    /// Calls and streams started by the callback that is running: their I/O
    /// waits until it returns (dropping a sender lets it go), as Envoy, one
    /// thread per worker, does no I/O during a callback. So a stream the
    /// callback opens and ends is complete before any answer is read.
    held_starts: Vec<oneshot::Sender<()>>,
}

impl Default for GrpcCalls {
    fn default() -> Self {
        Self {
            next_call: 1,
            next_stream: 2,
            pending: HashMap::new(),
            status: HashMap::new(),
            receive_buffer: None,
            initial_metadata: None,
            trailing_metadata: None,
            held_starts: Vec::new(),
        }
    }
}

impl GrpcCalls {
    /// Holds a call's I/O until the running callback returns ([`Self::release_starts`]).
    pub(crate) fn hold_start(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.held_starts.push(tx);
        rx
    }

    /// Lets the I/O of the calls the last callback started go.
    pub(crate) fn release_starts(&mut self) {
        self.held_starts.clear();
    }

    /// The next token of `kind` (Envoy adds 4 each time; never one in flight).
    pub(crate) fn next_token(&mut self, kind: Kind) -> u32 {
        loop {
            let next = match kind {
                Kind::Call => &mut self.next_call,
                Kind::Stream => &mut self.next_stream,
            };
            *next = next.wrapping_add(4);
            let token = *next;
            if token > 3 && !self.pending.contains_key(&token) {
                return token;
            }
        }
    }

    /// Records a call in flight for root context `root`.
    pub(crate) fn insert(
        &mut self,
        token: u32,
        root: u32,
        abort: AbortHandle,
        outbound: mpsc::UnboundedSender<Outbound>,
        request_ended: Arc<AtomicBool>,
    ) {
        self.pending.insert(
            token,
            Pending {
                root,
                abort,
                outbound,
                request_ended,
                local_closed: false,
                remote_closed: false,
            },
        );
    }

    /// The root context a call in flight belongs to.
    pub(crate) fn root_of(&self, token: u32) -> Option<u32> {
        self.pending.get(&token).map(|p| p.root)
    }

    /// Whether `token` is in flight.
    #[cfg(test)]
    pub(crate) fn contains(&self, token: u32) -> bool {
        self.pending.contains_key(&token)
    }

    /// Sends `message` on stream `token` (`false`: no such stream).
    pub(crate) fn send(&mut self, token: u32, message: Vec<u8>, end_stream: bool) -> bool {
        let Some(p) = self.pending.get_mut(&token) else {
            return false;
        };
        if end_stream {
            p.request_ended.store(true, Ordering::SeqCst);
        }
        let _ = p.outbound.send(Outbound::Message(message, end_stream));
        if end_stream {
            p.local_closed = true;
        }
        true
    }

    /// Cancels `token`: its I/O stops (a stream is reset) and no callback follows.
    pub(crate) fn cancel(&mut self, token: u32) -> bool {
        match self.pending.remove(&token) {
            Some(p) => {
                // Told first, so the client's side is not ended (END_STREAM) while the abort
                // is on its way: the stream is reset, as Envoy resets it.
                let _ = p.outbound.send(Outbound::Cancel);
                p.abort.abort();
                true
            }
            None => false,
        }
    }

    /// `proxy_grpc_close` of a stream: ends the client's side; the stream is forgotten once
    /// the server has closed too.
    pub(crate) fn close_local(&mut self, token: u32) -> bool {
        let Some(p) = self.pending.get_mut(&token) else {
            return false;
        };
        p.request_ended.store(true, Ordering::SeqCst);
        let _ = p.outbound.send(Outbound::Close);
        p.local_closed = true;
        if p.remote_closed {
            self.pending.remove(&token);
        }
        true
    }

    /// After a close was delivered: a call is over; a stream is forgotten if the filter
    /// closed its side already (else `proxy_grpc_close` still finds it).
    pub(crate) fn closed_remotely(&mut self, token: u32) {
        let forget = match (Kind::of(token), self.pending.get_mut(&token)) {
            (Some(Kind::Stream), Some(p)) => {
                p.remote_closed = true;
                p.local_closed
            }
            _ => true,
        };
        if forget {
            self.pending.remove(&token);
        }
    }

    /// After a unary call's message was delivered: the call is over.
    pub(crate) fn finish(&mut self, token: u32) {
        if Kind::of(token) == Some(Kind::Call) {
            self.pending.remove(&token);
        }
    }

    /// Sets the status `proxy_get_status` reports to `root`.
    pub(crate) fn set_status(&mut self, root: u32, code: u32, message: String) {
        self.status.insert(root, (code, message));
    }

    /// Clears the message after a close callback, keeping the code (as Envoy does).
    pub(crate) fn clear_message(&mut self, root: u32) {
        if let Some((_, m)) = self.status.get_mut(&root) {
            m.clear();
        }
    }

    /// `proxy_get_status` of `root`: code 0 and no message before any close.
    pub(crate) fn status(&self, root: u32) -> (u32, String) {
        self.status.get(&root).cloned().unwrap_or_default()
    }
}

impl crate::state::HostState {
    /// The root context that owns the gRPC calls of the effective context: itself for a
    /// root, the current root for an HTTP context (as Envoy's `root_context()`).
    pub(crate) fn grpc_root(&self) -> u32 {
        if self.roots.contains(&self.effective_context) {
            self.effective_context
        } else {
            self.root
        }
    }
}

impl Drop for GrpcCalls {
    fn drop(&mut self) {
        for p in self.pending.values() {
            p.abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_a_cluster_and_a_proto_names_one() {
        assert_eq!(cluster_of(b"grpc_cluster"), Ok("grpc_cluster".to_owned()));
        assert_eq!(cluster_of(b"bogus"), Ok("bogus".to_owned()));
        // GrpcService { envoy_grpc { cluster_name: "c1" } }
        assert_eq!(
            cluster_of(&[0x0a, 4, 0x0a, 2, b'c', b'1']),
            Ok("c1".to_owned())
        );
        // An empty proto (Envoy: "unset oneof"), one with only a timeout, one whose
        // envoy_grpc has no cluster; `h1` is valid wire format (an unknown field 13).
        assert_eq!(cluster_of(b""), Err(Status::BadArgument));
        assert_eq!(cluster_of(&[0x1a, 0]), Err(Status::BadArgument));
        assert_eq!(cluster_of(&[0x0a, 0]), Err(Status::BadArgument));
        assert_eq!(cluster_of(b"h1"), Err(Status::BadArgument));
    }

    #[test]
    fn tokens_follow_envoys_numbering() {
        let mut g = GrpcCalls::default();
        assert_eq!(g.next_token(Kind::Call), 5);
        assert_eq!(g.next_token(Kind::Call), 9);
        assert_eq!(g.next_token(Kind::Stream), 6);
        assert_eq!(g.next_token(Kind::Stream), 10);
        assert_eq!(Kind::of(9), Some(Kind::Call));
        assert_eq!(Kind::of(10), Some(Kind::Stream));
        assert_eq!(Kind::of(8), None);
    }

    #[tokio::test]
    async fn a_stream_lives_until_both_sides_closed() {
        let mut g = GrpcCalls::default();
        let t = g.next_token(Kind::Stream);
        let task = tokio::spawn(std::future::pending::<()>());
        let (tx, mut rx) = mpsc::unbounded_channel();
        g.insert(t, 1, task.abort_handle(), tx, Arc::default());
        g.closed_remotely(t);
        assert!(g.contains(t), "the filter has not closed its side");
        assert!(g.close_local(t));
        assert!(matches!(rx.recv().await, Some(Outbound::Close)));
        assert!(!g.contains(t));
        g.set_status(1, 7, "no".into());
        g.clear_message(1);
        assert_eq!(g.status(1), (7, String::new()));
        assert_eq!(g.status(2), (0, String::new()));
    }
}
