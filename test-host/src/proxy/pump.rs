//! Body pumps: a body streams frame by frame through the filter's body (or trailers)
//! callbacks. A [`Pump`] is a value, not a task: whoever reads the body drives it ([`Filtered`],
//! the body hyper's client writes upstream or hyper's server writes to the client), so it reads
//! the peer's body only as fast as the other side takes it (memory stays constant), and a request
//! body is read only once the upstream connection exists. Where the head waits for the first
//! forward (its framing, [`Framing`]), the exchange runs the pump itself up to that forward
//! ([`Pump::prime`]) before it hands it to the body.
//!
//! The callbacks come as Envoy 1.40 makes them: an HTTP/1 body (content-length or chunked) is
//! its data, then an empty end-of-stream call, its trailers dropped; an HTTP/2 body ends on its
//! last data (or its trailers); what arrived while the filter paused in the headers is one
//! call. The framing of what goes on is decided at the first forward when the module exports
//! the direction's body callback or paused in the headers; otherwise the body cannot change
//! size and the head goes at once, as Envoy's router sends it. A body the filter pauses at its
//! end is held, as Envoy holds it, until the filter resumes the stream or answers it
//! ([`Pump::held`]). When a request pump stops the exchange (a local reply, a reset, a filter
//! failure, a broken body), its body fails with [`Aborted`], which the exchange finds in the
//! upstream client's error.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};

use crate::abi::Level;
use crate::error::Error;
use crate::proxy::Proxy;
use crate::proxy::body::{BoxError, host_reply};
use crate::proxy::hop::{raw_header_map, to_header_map};
use crate::state::headers::HeaderList;
use crate::state::{Direction, LocalReply};
use crate::worker::{Ctx, Outcome, WorkerHandle};

mod filtered;

pub(crate) use filtered::Filtered;

/// Why a request body stopped the exchange.
pub(crate) enum Abort {
    Local(LocalReply),
    Reset,
    Failed(Error),
}

/// The error a request body fails with when it stops the exchange: hyper's client hands it back
/// as the source of its own error, and the exchange takes the [`Abort`] out
/// ([`Aborted::find`]).
#[derive(thiserror::Error)]
#[error("the request was stopped while its body was sent")]
pub(crate) struct Aborted(Mutex<Option<Abort>>);

impl std::fmt::Debug for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aborted")
    }
}

impl Aborted {
    pub(crate) fn error(abort: Abort) -> BoxError {
        Box::new(Self(Mutex::new(Some(abort))))
    }

    /// The [`Abort`] among `error`'s sources, if one is there (taken: found once).
    pub(crate) fn find(error: &(dyn std::error::Error + 'static)) -> Option<Abort> {
        let mut source = Some(error);
        while let Some(e) = source {
            if let Some(aborted) = e.downcast_ref::<Self>() {
                return aborted
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
            }
            source = e.source();
        }
        None
    }
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

impl Framing {
    /// Applies the framing to the head of the message it belongs to.
    pub(crate) fn apply(self, headers: &mut http::HeaderMap) {
        match self {
            Self::Length(n) => {
                headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
            }
            Self::Chunked => {
                headers.remove(http::header::CONTENT_LENGTH);
            }
            Self::Keep => {}
        }
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
    /// The head waits for the first forward's framing ([`Pump::prime`]); otherwise the body
    /// keeps its size ([`Framing::Keep`]).
    pub(crate) reframe: bool,
}

/// One stream's body through the filter: the frames to forward, one callback (one worker
/// round trip) at a time ([`Pump::next_frame`]).
pub(crate) struct Pump {
    proxy: Arc<Proxy>,
    worker: WorkerHandle,
    ctx: Ctx,
    direction: Direction,
    body: Incoming,
    mode: PumpMode,
    /// Bytes received from the peer, and forwarded, so far.
    received: u64,
    forwarded: u64,
    /// The head keeps `declared`: the forwarded total must match it.
    strict: bool,
    /// The data that completes `declared`, forwarded once the next call kept the length (a
    /// reader of a body with a length stops reading at that length, so the pump reaches the
    /// body's last callback before it hands the last bytes on).
    held: Option<Frame<Bytes>>,
    /// Frames the filter forwarded that the reader has not taken yet (at most two).
    out: VecDeque<Frame<Bytes>>,
    /// The last callback ran (end of stream).
    ended: bool,
    /// The framing decided at the first forward, when the head waits for it.
    framing: Option<Framing>,
    /// Why the pump stopped while the exchange ran it: the reader gets it after `out`.
    stopped: Option<Stop>,
}

/// How long a coalescing read waits for more of what already arrived.
const COALESCE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

impl Pump {
    pub(crate) fn new(
        proxy: Arc<Proxy>,
        (worker, ctx): (WorkerHandle, Ctx),
        direction: Direction,
        body: Incoming,
        mode: PumpMode,
    ) -> Self {
        // A head that did not wait keeps its length: the bytes that complete it wait for the
        // next callback too, so a reader that stops at the length (hyper's client does) still
        // lets the pump reach the body's end (trailers after a content-length body).
        let strict = !mode.reframe && mode.declared.is_some();
        Self {
            proxy,
            worker,
            ctx,
            direction,
            body,
            mode,
            received: 0,
            forwarded: 0,
            strict,
            held: None,
            out: VecDeque::with_capacity(2),
            ended: false,
            framing: None,
            stopped: None,
        }
    }

    /// Runs the body through the filter up to its first forward (or its end, or a stop), for a
    /// head that waits for its framing; the frames stay in the pump for its reader.
    pub(crate) async fn prime(&mut self) -> Framing {
        while self.mode.reframe && self.framing.is_none() && !self.ended {
            if let Err(stop) = self.advance().await {
                self.stopped = Some(stop);
                break;
            }
        }
        self.framing.unwrap_or(Framing::Keep)
    }

    /// Why a request pump stopped the exchange while the exchange ran it ([`Pump::prime`]):
    /// then nothing is sent upstream. A length the filter broke is left to the body (the head
    /// is sent, the body fails, as when it happens later).
    pub(crate) fn take_abort(&mut self) -> Option<Abort> {
        match request_abort(self.stopped.take()?) {
            Ok(abort) => Some(abort),
            Err(why) => {
                self.stopped = Some(Stop::Length(why));
                None
            }
        }
    }

    /// The next frame to forward; `None` at the end of the body.
    async fn next_frame(&mut self) -> Result<Option<Frame<Bytes>>, Stop> {
        loop {
            if let Some(frame) = self.out.pop_front() {
                return Ok(Some(frame));
            }
            if let Some(stop) = self.stopped.take() {
                return Err(stop);
            }
            if self.ended {
                return Ok(None);
            }
            self.advance().await?;
        }
    }

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
        if !self.mode.reframe || self.framing.is_some() {
            return;
        }
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
        self.framing = Some(framing);
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
    async fn held(&self, mut outcome: Outcome) -> Result<Outcome, Stop> {
        let proxy = &self.proxy;
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

    /// One body callback (one worker round trip); what it forwards joins `out`.
    async fn advance(&mut self) -> Result<(), Stop> {
        let input = self.next().await?;
        let (ctx, direction, w) = (self.ctx, self.direction, &self.worker);
        let outcome = match input {
            Input::Data(chunk, eos) => {
                self.ended = eos;
                self.received += chunk.len() as u64;
                w.call(move |wk| wk.body(ctx, direction, &chunk, eos)).await
            }
            Input::Trailers(list) => {
                self.ended = true;
                w.call(move |wk| wk.trailers(ctx, direction, list)).await
            }
        };
        let outcome = outcome.and_then(|r| r).map_err(Stop::Filter)?;
        let outcome = self.held(outcome).await?;
        if outcome.reset || outcome.local_reply.is_some() {
            return Err(Stop::Filtered(outcome));
        }
        let ended = self.ended;
        let data = outcome.body.filter(|d| !d.is_empty());
        self.forwarded += data.as_ref().map_or(0, |d| d.len() as u64);
        if data.is_some() || ended {
            self.decide(ended);
        }
        self.check_length(ended).map_err(Stop::Length)?;
        // The head kept its length: the bytes that complete it wait for the next call, so a
        // filter that lengthens the body at its end stops a short message, never a whole one.
        if let Some(held) = self.held.take() {
            self.out.push_back(held);
        }
        let frame = match data {
            Some(data) if self.strict && !ended && Some(self.forwarded) == self.mode.declared => {
                self.held = Some(Frame::data(Bytes::from(data)));
                return Ok(());
            }
            Some(data) => Frame::data(Bytes::from(data)),
            None if outcome.headers.is_empty() => return Ok(()),
            None if direction == Direction::Request => {
                Frame::trailers(raw_header_map(&outcome.headers))
            }
            None => Frame::trailers(to_header_map(&self.proxy.shared, &outcome.headers, &[])),
        };
        self.out.push_back(frame);
        Ok(())
    }

    /// What the reader of a stopped body gets, logged as the stop deserves.
    fn error(&self, stop: Stop) -> BoxError {
        let proxy = &self.proxy;
        let stop = match self.direction {
            Direction::Request => match request_abort(stop) {
                Ok(abort) => return Aborted::error(abort),
                Err(why) => Stop::Length(why),
            },
            Direction::Response => stop,
        };
        match stop {
            // The head left with its length: the message is reset; a request's answer is the
            // client's (a 503 for a reset before the upstream's headers).
            Stop::Length(why) => {
                proxy.log(Level::Error, why.clone());
                why.into()
            }
            Stop::Body(e) => {
                proxy.log(Level::Warn, format!("upstream body error: {e}"));
                Box::new(e)
            }
            Stop::Filter(e) => {
                proxy.log(Level::Error, format!("response failed: {e}"));
                "filter failed".into()
            }
            Stop::Filtered(_) => "response stopped by the filter".into(),
        }
    }
}

/// How a request pump's stop ends the exchange; `Err` for a length the filter broke after the
/// head left (the upstream request is reset instead).
fn request_abort(stop: Stop) -> Result<Abort, String> {
    Ok(match stop {
        // The client's body is malformed (bad chunk, ...): Envoy answers 400 itself and resets
        // the upstream request.
        Stop::Body(_) => Abort::Local(host_reply(400, "Bad Request\n")),
        Stop::Filter(e) => Abort::Failed(e),
        Stop::Filtered(outcome) => match outcome.local_reply {
            Some(r) => Abort::Local(r),
            None => Abort::Reset,
        },
        Stop::Length(why) => return Err(why),
    })
}
