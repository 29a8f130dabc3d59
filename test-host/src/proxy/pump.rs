//! Body pumps: a body streams frame by frame through the filter's body (or trailers) callbacks
//! into a bounded channel, so memory stays constant. The request pump feeds the upstream
//! request; the response pump feeds the client and ends the request's lifecycle when done.

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

/// Why a pump stopped before the end of its body.
enum Stop {
    /// The body itself broke (a bad chunk, a reset).
    Body(hyper::Error),
    /// The filter trapped or its VM is gone.
    Filter(Error),
    /// The filter reset the stream or replied locally.
    Filtered(Outcome),
    /// Nobody reads the channel any more.
    Gone,
}

/// One stream's body through the filter, into `tx`.
struct Pump {
    worker: WorkerHandle,
    ctx: Ctx,
    direction: Direction,
    body: Incoming,
    tx: FrameSender,
}

impl Pump {
    /// The body through the filter until its end.
    async fn run(&mut self, proxy: &Proxy) -> Result<(), Stop> {
        let mut ended = false;
        while !ended {
            let frame = match self.body.frame().await {
                None => Frame::data(Bytes::new()),
                Some(Ok(f)) => f,
                Some(Err(e)) => return Err(Stop::Body(e)),
            };
            let (ctx, direction, w) = (self.ctx, self.direction, &self.worker);
            let outcome = match frame.into_data() {
                Ok(chunk) => {
                    let eos = chunk.is_empty() || self.body.is_end_stream();
                    ended = eos;
                    w.call(move |wk| wk.body(ctx, direction, &chunk, eos)).await
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        ended = true;
                        let list = HeaderList::from_pairs(
                            trailers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
                        );
                        w.call(move |wk| wk.trailers(ctx, direction, list)).await
                    }
                    Err(_) => continue,
                },
            };
            let outcome = outcome.and_then(|r| r).map_err(Stop::Filter)?;
            if outcome.reset || outcome.local_reply.is_some() {
                return Err(Stop::Filtered(outcome));
            }
            let frame = match outcome.body {
                Some(data) if !data.is_empty() => Frame::data(Bytes::from(data)),
                Some(_) | None if outcome.headers.is_empty() => continue,
                _ if direction == Direction::Request => {
                    Frame::trailers(raw_header_map(&outcome.headers))
                }
                _ => Frame::trailers(to_header_map(&proxy.shared, &outcome.headers, &[])),
            };
            if self.tx.send(Ok(frame)).await.is_err() {
                return Err(Stop::Gone);
            }
        }
        Ok(())
    }
}

/// Streams the client's body to the upstream through the request body callbacks; `done` fires
/// at its end, `abort` says why it stopped the exchange instead.
pub(crate) async fn pump_request(
    proxy: Arc<Proxy>,
    (worker, ctx): (WorkerHandle, Ctx),
    body: Incoming,
    tx: FrameSender,
    done: oneshot::Sender<()>,
    abort: oneshot::Sender<Abort>,
) {
    let mut pump = Pump {
        worker,
        ctx,
        direction: Direction::Request,
        body,
        tx,
    };
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
    (worker, ctx): (WorkerHandle, Ctx),
    body: Incoming,
    tx: FrameSender,
    finish: F,
) {
    let mut pump = Pump {
        worker,
        ctx,
        direction: Direction::Response,
        body,
        tx,
    };
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
    };
    let _ = pump.tx.send(Err(error)).await;
    drop(finish);
}
