//! Body pumps: a body streams frame by frame through the filter's body (or trailers) callbacks
//! into a bounded channel, so memory stays constant. The request pump feeds the upstream
//! request; the response pump feeds the client and ends the request's lifecycle when done.
//!
//! The callbacks come as Envoy 1.40 makes them: an HTTP/1 body (content-length or chunked) is
//! its data, then an empty end-of-stream call, its trailers dropped; an HTTP/2 body ends on its
//! last data (or its trailers); what arrived while the filter paused in the headers is one
//! call. The framing of what goes on is decided at the first forward ([`Framing`]) when the
//! module exports the direction's body callback or paused in the headers; otherwise the body
//! cannot change size and the head goes at once, as Envoy's router sends it. A body the filter
//! pauses at its end is held, as Envoy holds it, until the filter resumes the stream or answers
//! it ([`Pump::held`]).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Frame, Incoming};
use tokio::sync::oneshot;

use crate::abi::Level;
use crate::error::Error;
use crate::proxy::Proxy;
use crate::proxy::body::{FrameSender, host_reply};
use crate::proxy::hop::{raw_header_map, to_header_map};
use crate::state::headers::HeaderList;
use crate::state::{Direction, LocalReply};
use crate::worker::{Ctx, Outcome, WorkerHandle};

/// Why the request body pump stopped the exchange.
pub(crate) enum Abort {
    Local(LocalReply),
    Reset,
    Failed(Error),
}

/// How a forwarded message's body is framed, decided at the pump's first forward (the head of
/// the message waits for it): a filter may change the body's size, and a message's framing
/// never lies (Envoy keeps the stale `content-length`; the test host does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// As the headers say (the size is unchanged so far, or the body is chunked anyway).
    Keep,
    /// The whole body is known and its size changed: `content-length` becomes this.
    Length(u64),
    /// The size changed before the end: no `content-length` (chunked on HTTP/1.1).
    Chunked,
}

/// Applies `framing` (when the pump decided one) to the head of the message it belongs to.
pub(crate) async fn framed(headers: &mut http::HeaderMap, framing: oneshot::Receiver<Framing>) {
    match framing.await {
        Ok(Framing::Length(n)) => {
            headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
        }
        Ok(Framing::Chunked) => {
            headers.remove(http::header::CONTENT_LENGTH);
        }
        Ok(Framing::Keep) | Err(_) => {}
    }
}

/// The `content-length` a header map declares, if one valid value.
pub(crate) fn declared_length(headers: &HeaderList) -> Option<u64> {
    headers
        .get_str("content-length")
        .and_then(|v| v.trim().parse().ok())
}

/// Why a pump stopped before the end of its body.
enum Stop {
    /// The body itself broke (a bad chunk, a reset).
    Body(hyper::Error),
    /// The filter trapped or its VM is gone.
    Filter(Error),
    /// The filter reset the stream or replied locally.
    Filtered(Outcome),
    /// The filter changed the body's size after its `content-length` left.
    Length(String),
    /// Nobody reads the channel any more.
    Gone,
}

/// What the next body callback gets.
enum Input {
    Data(Vec<u8>, bool),
    Trailers(HeaderList),
}

/// How a pump reads and frames its body.
pub(crate) struct PumpMode {
    /// The body came over HTTP/1: Envoy's codec ends it with an empty end-of-stream call (never
    /// on the last data) and drops its trailers (`enable_trailers` is off).
    pub(crate) http1: bool,
    /// The filter paused in the headers: what arrived meanwhile is one call (Envoy buffers it).
    pub(crate) coalesce: bool,
    /// The `content-length` the head carries, as the filter left the headers.
    pub(crate) declared: Option<u64>,
    /// Where the framing decision goes (the head waits for it); `None` when the head did not
    /// wait (the body keeps its size: [`Framing::Keep`]).
    pub(crate) framing: Option<oneshot::Sender<Framing>>,
}

/// One stream's body through the filter, into `tx`.
struct Pump {
    worker: WorkerHandle,
    ctx: Ctx,
    direction: Direction,
    body: Incoming,
    tx: FrameSender,
    mode: PumpMode,
    /// Bytes received from the peer, and forwarded, so far.
    received: u64,
    forwarded: u64,
    /// The head keeps `declared`: the forwarded total must match it.
    strict: bool,
    /// The data that completes `declared`, sent once the next call kept the length.
    held: Option<Frame<Bytes>>,
}

/// How long a coalescing read waits for more of what already arrived.
const COALESCE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

impl Pump {
    /// The next body callback's input.
    async fn next(&mut self) -> Result<Input, Stop> {
        loop {
            let frame = match self.body.frame().await {
                None => return Ok(Input::Data(Vec::new(), true)),
                Some(Ok(f)) => f,
                Some(Err(e)) => return Err(Stop::Body(e)),
            };
            let chunk = match frame.into_data() {
                Ok(chunk) => chunk,
                Err(frame) => match frame.into_trailers() {
                    Ok(_) if self.mode.http1 => return Ok(Input::Data(Vec::new(), true)),
                    Ok(t) => {
                        let list = HeaderList::from_pairs(
                            t.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
                        );
                        return Ok(Input::Trailers(list));
                    }
                    Err(_) => continue,
                },
            };
            let mut data = chunk.to_vec();
            let mut eos = !self.mode.http1 && self.body.is_end_stream();
            if std::mem::take(&mut self.mode.coalesce) {
                eos = self.coalesce(&mut data).await?;
            }
            if data.is_empty() && !eos {
                continue;
            }
            return Ok(Input::Data(data, eos));
        }
    }

    /// Appends what is already there to `data`; whether the body ended in it.
    async fn coalesce(&mut self, data: &mut Vec<u8>) -> Result<bool, Stop> {
        for _ in 0..1024 {
            if self.body.is_end_stream() {
                return Ok(true);
            }
            let Ok(next) = tokio::time::timeout(COALESCE_WAIT, self.body.frame()).await else {
                return Ok(false);
            };
            match next {
                None => return Ok(true),
                Some(Err(e)) => return Err(Stop::Body(e)),
                Some(Ok(f)) => match f.into_data() {
                    Ok(chunk) => data.extend_from_slice(&chunk),
                    // Trailers after a pause: over HTTP/1 they are dropped (the end); over
                    // HTTP/2 the callback order is kept by ending the coalescing here.
                    Err(_) => return Ok(self.mode.http1),
                },
            }
        }
        Ok(false)
    }

    /// Decides the framing at the first forward (`ended`: the whole body went through).
    fn decide(&mut self, ended: bool) {
        let Some(tx) = self.mode.framing.take() else {
            return;
        };
        let framing = match self.mode.declared {
            None => Framing::Keep,
            Some(n) if ended && self.forwarded == n => Framing::Keep,
            Some(_) if ended => Framing::Length(self.forwarded),
            Some(_) if self.forwarded == self.received => {
                self.strict = true;
                Framing::Keep
            }
            Some(_) => Framing::Chunked,
        };
        let _ = tx.send(framing);
    }

    /// With the head's `content-length` kept, the forwarded total must match it.
    fn check_length(&self, ended: bool) -> Result<(), String> {
        let Some(n) = self.mode.declared.filter(|_| self.strict) else {
            return Ok(());
        };
        if self.forwarded > n || (ended && self.forwarded != n) {
            return Err(format!(
                "the filter changed the {} body's size after its content-length ({n}) was sent: \
                 {} bytes instead; the message is reset rather than sent with a false length",
                match self.direction {
                    Direction::Request => "request",
                    Direction::Response => "response",
                },
                self.forwarded
            ));
        }
        Ok(())
    }

    /// A body the filter paused at its end stays held until the filter resumes the stream (the
    /// outcome then carries the whole body), replies or resets, as in Envoy; the host answers
    /// 500 when the filter keeps it past the resume timeout, as for a paused head.
    async fn held(&self, proxy: &Proxy, mut outcome: Outcome) -> Result<Outcome, Stop> {
        let deadline = tokio::time::Instant::now() + proxy.config.resume_timeout;
        while let Some(waiter) = outcome.waiter.take() {
            let (ctx, direction) = (self.ctx, self.direction);
            if tokio::time::timeout_at(deadline, waiter).await.is_err() {
                proxy.log(
                    Level::Error,
                    format!(
                        "the filter held the body of context {} and did not resume it within {:?}",
                        ctx.id, proxy.config.resume_timeout
                    ),
                );
                outcome.local_reply = Some(host_reply(500, "filter did not resume the stream\n"));
                break;
            }
            outcome = self
                .worker
                .call(move |wk| wk.held(ctx, direction))
                .await
                .and_then(|r| r)
                .map_err(Stop::Filter)?;
        }
        Ok(outcome)
    }

    /// The body through the filter until its end.
    async fn run(&mut self, proxy: &Proxy) -> Result<(), Stop> {
        let mut ended = false;
        while !ended {
            let input = self.next().await?;
            let (ctx, direction, w) = (self.ctx, self.direction, &self.worker);
            let outcome = match input {
                Input::Data(chunk, eos) => {
                    ended = eos;
                    self.received += chunk.len() as u64;
                    w.call(move |wk| wk.body(ctx, direction, &chunk, eos)).await
                }
                Input::Trailers(list) => {
                    ended = true;
                    w.call(move |wk| wk.trailers(ctx, direction, list)).await
                }
            };
            let outcome = outcome.and_then(|r| r).map_err(Stop::Filter)?;
            let outcome = self.held(proxy, outcome).await?;
            if outcome.reset || outcome.local_reply.is_some() {
                return Err(Stop::Filtered(outcome));
            }
            let data = outcome.body.filter(|d| !d.is_empty());
            self.forwarded += data.as_ref().map_or(0, |d| d.len() as u64);
            if data.is_some() || ended {
                self.decide(ended);
            }
            self.check_length(ended).map_err(Stop::Length)?;
            // The head kept its length: the bytes that complete it wait for the next call, so a
            // filter that lengthens the body at its end stops a short message, never a whole one.
            if let Some(held) = self.held.take()
                && self.tx.send(Ok(held)).await.is_err()
            {
                return Err(Stop::Gone);
            }
            let frame = match data {
                Some(data)
                    if self.strict && !ended && Some(self.forwarded) == self.mode.declared =>
                {
                    self.held = Some(Frame::data(Bytes::from(data)));
                    continue;
                }
                Some(data) => Frame::data(Bytes::from(data)),
                None if outcome.headers.is_empty() => continue,
                None if direction == Direction::Request => {
                    Frame::trailers(raw_header_map(&outcome.headers))
                }
                None => Frame::trailers(to_header_map(&proxy.shared, &outcome.headers, &[])),
            };
            if self.tx.send(Ok(frame)).await.is_err() {
                return Err(Stop::Gone);
            }
        }
        Ok(())
    }

    fn new(
        (worker, ctx): (WorkerHandle, Ctx),
        direction: Direction,
        body: Incoming,
        tx: FrameSender,
        mode: PumpMode,
    ) -> Self {
        Self {
            worker,
            ctx,
            direction,
            body,
            tx,
            mode,
            received: 0,
            forwarded: 0,
            strict: false,
            held: None,
        }
    }
}

/// Streams the client's body to the upstream through the request body callbacks; `done` fires
/// at its end, `abort` says why it stopped the exchange instead.
pub(crate) async fn pump_request(
    proxy: Arc<Proxy>,
    link: (WorkerHandle, Ctx),
    (body, mode): (Incoming, PumpMode),
    tx: FrameSender,
    done: oneshot::Sender<()>,
    abort: oneshot::Sender<Abort>,
) {
    let mut pump = Pump::new(link, Direction::Request, body, tx, mode);
    let (why, error): (Abort, crate::proxy::body::BoxError) = match pump.run(&proxy).await {
        Ok(()) => {
            let _ = done.send(());
            return;
        }
        Err(Stop::Gone) => return,
        // The client's body is malformed (bad chunk, ...): Envoy answers 400 itself and resets
        // the upstream request.
        Err(Stop::Body(e)) => (Abort::Local(host_reply(400, "Bad Request\n")), Box::new(e)),
        Err(Stop::Filter(e)) => (Abort::Failed(e), "filter failed".into()),
        // The head left with its length: the upstream request is reset, its answer is the
        // client's (a 503 for a reset before the upstream's headers).
        Err(Stop::Length(why)) => {
            proxy.log(Level::Error, why.clone());
            let _ = pump.tx.send(Err(why.into())).await;
            return;
        }
        Err(Stop::Filtered(outcome)) => (
            match outcome.local_reply {
                Some(r) => Abort::Local(r),
                None => Abort::Reset,
            },
            "request stopped by the filter".into(),
        ),
    };
    // The exchange hears why before the upstream request's body fails.
    let _ = abort.send(why);
    let _ = pump.tx.send(Err(error)).await;
}

/// Streams the upstream's body to the client through the response body callbacks; `finish`
/// (the exchange's end: `proxy_on_log` ...) is dropped when this ends.
pub(crate) async fn pump_response<F: Send>(
    proxy: Arc<Proxy>,
    link: (WorkerHandle, Ctx),
    (body, mode): (Incoming, PumpMode),
    tx: FrameSender,
    finish: F,
) {
    let mut pump = Pump::new(link, Direction::Response, body, tx, mode);
    let error: crate::proxy::body::BoxError = match pump.run(&proxy).await {
        Ok(()) | Err(Stop::Gone) => return drop(finish),
        Err(Stop::Body(e)) => {
            proxy.log(Level::Warn, format!("upstream body error: {e}"));
            Box::new(e)
        }
        Err(Stop::Filter(e)) => {
            proxy.log(Level::Error, format!("response failed: {e}"));
            "filter failed".into()
        }
        Err(Stop::Filtered(_)) => "response stopped by the filter".into(),
        Err(Stop::Length(why)) => {
            proxy.log(Level::Error, why.clone());
            why.into()
        }
    };
    let _ = pump.tx.send(Err(error)).await;
    drop(finish);
}
