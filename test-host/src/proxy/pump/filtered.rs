//! [`Filtered`]: a body whose frames come from a [`Pump`], driven by whoever reads it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::{Pump, Stop};
use crate::proxy::body::BoxError;

/// What one step of a [`Filtered`] body gives: the pump back, and its next frame.
type Stepped = (Pump, Result<Option<Frame<Bytes>>, Stop>);
/// One step of a [`Filtered`] body: the pump, run to its next frame.
type Step = Pin<Box<dyn Future<Output = Stepped> + Send + Sync>>;

/// The pump's next step, to be polled.
fn step(mut pump: Pump) -> Step {
    Box::pin(async move {
        let next = pump.next_frame().await;
        (pump, next)
    })
}

/// A body through the filter: the [`Pump`], driven by whoever reads the body (hyper's client
/// for a request, hyper's server for a response), no task and no channel between. `end` is
/// dropped when the body ends, fails or is dropped (the response's `Finish`: `proxy_on_log` ...;
/// the request's end mark: the route timeout starts). Like [`crate::proxy::body::Passed`], it
/// reads one step ahead: once a frame is handed over, the next callback starts, so the worker
/// runs it while the reader writes that frame.
pub(crate) struct Filtered<E> {
    pump: Option<Pump>,
    step: Option<Step>,
    /// The step read ahead, finished before the reader asked for it.
    ahead: Option<Stepped>,
    end: Option<E>,
}

impl<E: Send + Sync + Unpin + 'static> Filtered<E> {
    pub(crate) fn new(pump: Pump, end: E) -> Self {
        Self {
            pump: Some(pump),
            step: None,
            ahead: None,
            end: Some(end),
        }
    }

    /// Starts the pump's next step (unless a frame is already there), polled once.
    fn read_ahead(&mut self, cx: &mut Context<'_>) {
        let Some(pump) = self.pump.take() else {
            return;
        };
        if !pump.out.is_empty() {
            self.pump = Some(pump);
            return;
        }
        let mut step = step(pump);
        match step.as_mut().poll(cx) {
            Poll::Pending => self.step = Some(step),
            Poll::Ready(stepped) => self.ahead = Some(stepped),
        }
    }
}

impl<E: Send + Sync + Unpin + 'static> Body for Filtered<E> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let (pump, next) = match this.ahead.take() {
            Some(stepped) => stepped,
            None => {
                if this.step.is_none() {
                    let Some(mut pump) = this.pump.take() else {
                        return Poll::Ready(None);
                    };
                    // A frame the pump already has (the first forward, run by the exchange)
                    // needs no step.
                    if let Some(frame) = pump.out.pop_front() {
                        this.pump = Some(pump);
                        this.read_ahead(cx);
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    this.step = Some(step(pump));
                }
                let Some(step) = this.step.as_mut() else {
                    return Poll::Ready(None);
                };
                let stepped = ready!(step.as_mut().poll(cx));
                this.step = None;
                stepped
            }
        };
        match next {
            Ok(Some(frame)) => {
                this.pump = Some(pump);
                this.read_ahead(cx);
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(None) => {
                drop(pump);
                this.end = None;
                Poll::Ready(None)
            }
            Err(stop) => {
                let error = pump.error(stop);
                drop(pump);
                this.end = None;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pump.is_none() && self.step.is_none() && self.ahead.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
