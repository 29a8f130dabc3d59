//! Bodies and plain responses: the boxed body every response carries, a body passed on as it
//! is ([`Passed`]; a body through the filter is `pump::Filtered`), a body that holds its request
//! "in flight" for the idle timeout, and the host's own short answers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::edge::InFlight;
use crate::state::LocalReply;
use crate::state::headers::HeaderList;

/// Any error a body may end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every request and response the proxy makes.
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body of `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// An empty body.
pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A plain response the host makes itself (not through the filter).
pub(crate) fn plain(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// `response`, with `connection: close` when `close` (hyper then closes after it).
pub(crate) fn closing(mut response: Response<ProxyBody>, close: bool) -> Response<ProxyBody> {
    if close {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A local reply the host makes (upstream failures, refused requests); it still runs through
/// the filter's response callbacks.
pub(crate) fn host_reply(status: u16, body: &str) -> LocalReply {
    LocalReply {
        status,
        details: String::new(),
        headers: HeaderList::new(),
        body: body.as_bytes().to_vec(),
        grpc_status: None,
    }
}

/// The ends of a [`Passed`] body, as its exchange hears them: dropped when the body ends
/// (whole, broken, or no longer read).
pub(crate) trait PassedEnd: Send + Sync + Unpin + 'static {
    /// The body broke (a bad chunk, a reset): what the reader gets instead of the rest.
    fn broken(self, error: hyper::Error) -> BoxError;
}

/// A body no callback can see (its direction's body callback is not exported and the filter
/// did not pause), passed on frame by frame as hyper's `gateway.rs` passes one: hyper's own
/// `Bytes`, no copy, no trip to the worker, read only when the other side reads it (a request
/// body only once the upstream connection exists). One frame is read ahead, so the peer's
/// connection reads the next while this one is written (hyper reads a body only when asked).
/// Trailers end an HTTP/1 body unsent, as Envoy's codec drops them (`enable_trailers` off).
pub(crate) struct Passed<E> {
    body: Incoming,
    drop_trailers: bool,
    end: Option<E>,
    ahead: Option<Result<Frame<Bytes>, hyper::Error>>,
}

impl<E: PassedEnd> Passed<E> {
    pub(crate) fn new(body: Incoming, drop_trailers: bool, end: E) -> Self {
        Self {
            body,
            drop_trailers,
            end: Some(end),
            ahead: None,
        }
    }

    /// The next frame of the body; `None` at its end (dropped trailers included).
    fn pull(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() && self.drop_trailers => {
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

impl<E: PassedEnd> Body for Passed<E> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let next = match this.ahead.take() {
            Some(next) => Some(next),
            None => match this.pull(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            },
        };
        match next {
            None => {
                this.end = None;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                let error = match this.end.take() {
                    Some(end) => end.broken(e),
                    None => Box::new(e),
                };
                Poll::Ready(Some(Err(error)))
            }
            Some(Ok(frame)) => {
                if this.body.is_end_stream() {
                    this.end = None;
                } else if let Poll::Ready(after) = this.pull(cx) {
                    match after {
                        None => this.end = None,
                        Some(after) => this.ahead = Some(after),
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_none() && (self.end.is_none() || self.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A response body that holds its request in flight until it is done (for the idle timeout).
pub(crate) struct Counted {
    body: ProxyBody,
    _in_flight: InFlight,
}

impl Counted {
    pub(crate) fn new(body: ProxyBody, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
