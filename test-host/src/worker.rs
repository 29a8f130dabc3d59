//! Worker threads: each owns one [`Vm`] on its own OS thread and runs jobs sent over a channel,
//! so synchronous wasmtime/WASI calls never run inside an async task. A trap fails the job, is
//! logged at error level, and the VM is dropped with its contexts; the next request re-creates
//! it from the module (Envoy's `FAIL_RELOAD`). Ticks are delivered between jobs.

use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::abi::{Action, Level, MetricType};
use crate::error::Error;
use crate::state::callout::{Completion, Poster};
use crate::state::headers::HeaderList;
use crate::state::{Direction, LocalReply, Shared, StreamInfo};
use crate::vm::{Compiled, Vm};

mod handle;

pub(crate) use handle::WorkerHandle;

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// An HTTP context on a worker: its id and the VM generation it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ctx {
    pub(crate) id: u32,
    generation: u64,
}

/// What a headers/body/trailers callback decided, read right after it returned.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) action: Action,
    pub(crate) local_reply: Option<LocalReply>,
    pub(crate) reset: bool,
    /// The map after the callback (headers or trailers; empty for bodies).
    pub(crate) headers: HeaderList,
    /// Body bytes to forward now (body callbacks).
    pub(crate) body: Option<Vec<u8>>,
    /// Set when the filter paused without replying: fires when it resumes, resets or replies.
    pub(crate) waiter: Option<oneshot::Receiver<()>>,
    /// The module exports this direction's body callback: the body may change size, so the
    /// message's head waits for the first forward to choose its framing.
    pub(crate) body_callback: bool,
    /// The module exports this direction's trailers callback.
    pub(crate) trailers_callback: bool,
}

/// The thread-side owner of a VM.
pub(crate) struct Worker {
    index: usize,
    compiled: Arc<Compiled>,
    shared: Arc<Shared>,
    vm: Option<Vm>,
    generation: u64,
    /// This worker's own channel, weakly: where its VM's call completions are posted.
    tx: Weak<mpsc::Sender<Job>>,
}

/// A poster of completions to the worker behind `tx`, for the VM of `generation` (a
/// completion reaching a reloaded VM is dropped).
fn poster(tx: Weak<mpsc::Sender<Job>>, generation: u64) -> Poster {
    Poster::new(move |completion| {
        if let Some(tx) = tx.upgrade() {
            let _ = tx.send(Box::new(move |w: &mut Worker| {
                w.complete(generation, completion);
            }));
        }
    })
}

impl Worker {
    /// Hands a finished call to the VM that made it (dropped if that VM was reloaded since).
    fn complete(&mut self, generation: u64, completion: Completion) {
        if generation != self.generation {
            return;
        }
        match self.with_vm(|vm| vm.complete(completion)) {
            Ok(()) | Err(Error::Trap { .. } | Error::VmUnavailable) => {}
            Err(e) => self
                .shared
                .log(Level::Warn, format!("worker {}: {e}", self.index)),
        }
    }

    /// A trap failed the VM (Envoy's `FAIL_RELOAD`): it is dropped now with its contexts, and
    /// re-created by the next call that needs it (the next request), as Envoy does. Its HTTP
    /// calls in flight still go out, as Envoy's do, with no callback.
    fn fail(&mut self, cause: &Error) {
        if let Some(vm) = self.vm.as_mut() {
            vm.detach_callouts();
        }
        self.shared.log(
            Level::Error,
            format!(
                "worker {}: {cause}; the VM is re-created at the next request",
                self.index
            ),
        );
        self.vm = None;
        self.generation += 1;
    }

    /// Re-creates a failed VM, counted in Envoy's `wasm.PLUGIN.vm_reload_success` /
    /// `vm_reload_failure`.
    fn reload(&mut self) {
        let poster = poster(self.tx.clone(), self.generation);
        let outcome = match Vm::new(&self.compiled, &self.shared, poster) {
            Ok(vm) => {
                self.vm = Some(vm);
                "success"
            }
            Err(e) => {
                self.shared.log(
                    Level::Error,
                    format!("worker {}: cannot reload the VM: {e}", self.index),
                );
                "failure"
            }
        };
        let name = format!("wasm.{}.vm_reload_{outcome}", self.shared.plugin.name);
        let metrics = &self.shared.metrics;
        metrics.increment(metrics.define(MetricType::Counter, &name), 1);
    }

    fn with_vm<R>(&mut self, f: impl FnOnce(&mut Vm) -> Result<R, Error>) -> Result<R, Error> {
        if self.vm.is_none() {
            self.reload();
        }
        let vm = self.vm.as_mut().ok_or(Error::VmUnavailable)?;
        match f(vm) {
            Err(e @ Error::Trap { .. }) => {
                self.fail(&e);
                Err(e)
            }
            r => r,
        }
    }

    fn with_ctx<R>(
        &mut self,
        ctx: Ctx,
        f: impl FnOnce(&mut Vm, u32) -> Result<R, Error>,
    ) -> Result<R, Error> {
        if ctx.generation != self.generation {
            return Err(Error::ContextLost(ctx.id));
        }
        self.with_vm(|vm| f(vm, ctx.id))
    }

    /// Creates an HTTP context.
    pub(crate) fn create(&mut self, info: StreamInfo) -> Result<Ctx, Error> {
        let id = self.with_vm(|vm| vm.create_http_context(info))?;
        Ok(Ctx {
            id,
            generation: self.generation,
        })
    }

    fn outcome(
        vm: &mut Vm,
        id: u32,
        direction: Direction,
        action: Action,
        body: Option<Vec<u8>>,
        trailers: bool,
    ) -> Result<Outcome, Error> {
        let stream = vm.stream_mut(id)?;
        let local_reply = stream.local_reply.take();
        let resumed = match direction {
            Direction::Request => stream.request_resumed,
            Direction::Response => stream.response_resumed,
        };
        let waiter = (action == Action::Pause
            && local_reply.is_none()
            && !stream.reset
            && !resumed
            && body.is_none())
        .then(|| {
            let (tx, rx) = oneshot::channel();
            stream.waiter = Some(tx);
            rx
        });
        let headers = match (direction, trailers) {
            (Direction::Request, false) => stream.request_headers.clone(),
            (Direction::Request, true) => stream.request_trailers.clone(),
            (Direction::Response, false) => stream.response_headers.clone(),
            (Direction::Response, true) => stream.response_trailers.clone(),
        };
        Ok(Outcome {
            action: if resumed { Action::Continue } else { action },
            local_reply,
            reset: stream.reset,
            headers,
            body,
            waiter,
            body_callback: vm.has_body_callback(direction),
            trailers_callback: vm.has_trailers_callback(direction),
        })
    }

    /// Runs the headers callback and reads its outcome.
    pub(crate) fn headers(
        &mut self,
        ctx: Ctx,
        direction: Direction,
        headers: HeaderList,
        end_of_stream: bool,
    ) -> Result<Outcome, Error> {
        self.with_ctx(ctx, |vm, id| {
            let action = vm.headers(id, direction, headers, end_of_stream)?;
            Self::outcome(vm, id, direction, action, None, false)
        })
    }

    /// Re-reads the state of a paused stream after its waiter fired.
    pub(crate) fn resumed(&mut self, ctx: Ctx, direction: Direction) -> Result<Outcome, Error> {
        self.with_ctx(ctx, |vm, id| {
            Self::outcome(vm, id, direction, Action::Pause, None, false)
        })
    }

    /// Runs a body callback.
    pub(crate) fn body(
        &mut self,
        ctx: Ctx,
        direction: Direction,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Outcome, Error> {
        self.with_ctx(ctx, |vm, id| {
            let (action, forward) = vm.body(id, direction, chunk, end_of_stream)?;
            if end_of_stream && forward.is_none() {
                return Self::held_body(vm, id, direction);
            }
            let mut outcome = Self::outcome(vm, id, direction, action, Some(Vec::new()), false)?;
            outcome.body = forward;
            outcome.headers = HeaderList::new();
            Ok(outcome)
        })
    }

    /// A body the filter paused at its end (Envoy's `StopIterationAndBuffer` on the last call):
    /// held, with a waiter, until the filter resumes the stream (the outcome then carries the
    /// whole body), replies or resets.
    fn held_body(vm: &mut Vm, id: u32, direction: Direction) -> Result<Outcome, Error> {
        let mut outcome = Self::outcome(vm, id, direction, Action::Pause, None, false)?;
        outcome.headers = HeaderList::new();
        if outcome.waiter.is_none() && outcome.local_reply.is_none() && !outcome.reset {
            outcome.body = Some(std::mem::take(vm.stream_mut(id)?.body_mut(direction)));
        }
        Ok(outcome)
    }

    /// Re-reads a held body's stream after its waiter fired ([`Worker::body`]).
    pub(crate) fn held(&mut self, ctx: Ctx, direction: Direction) -> Result<Outcome, Error> {
        self.with_ctx(ctx, |vm, id| Self::held_body(vm, id, direction))
    }

    /// Runs a trailers callback.
    pub(crate) fn trailers(
        &mut self,
        ctx: Ctx,
        direction: Direction,
        trailers: HeaderList,
    ) -> Result<Outcome, Error> {
        self.with_ctx(ctx, |vm, id| {
            let action = vm.trailers(id, direction, trailers)?;
            Self::outcome(vm, id, direction, action, Some(Vec::new()), true)
        })
    }

    /// Records Envoy's response code details of a context and, for a local reply sent without
    /// the response callbacks, the headers the client gets (for `response.code`).
    pub(crate) fn replied(
        &mut self,
        ctx: Ctx,
        headers: Option<HeaderList>,
        details: String,
    ) -> Result<(), Error> {
        self.with_ctx(ctx, |vm, id| {
            let stream = vm.stream_mut(id)?;
            if let Some(headers) = headers {
                stream.response_headers = headers;
            }
            stream.code_details = Some(details);
            Ok(())
        })
    }

    /// `proxy_on_log` only.
    pub(crate) fn log(&mut self, ctx: Ctx) -> Result<(), Error> {
        self.with_ctx(ctx, |vm, id| vm.log(id))
    }

    /// `proxy_on_done` + `proxy_on_delete`.
    pub(crate) fn done(&mut self, ctx: Ctx) -> Result<(), Error> {
        self.with_ctx(ctx, |vm, id| vm.done(id))
    }

    /// `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`: the end of a request.
    pub(crate) fn finish(&mut self, ctx: Ctx) {
        let r = self.log(ctx).and_then(|()| self.done(ctx));
        match r {
            Ok(()) | Err(Error::ContextLost(_) | Error::Trap { .. } | Error::VmUnavailable) => {}
            Err(e) => self
                .shared
                .log(Level::Warn, format!("worker {}: {e}", self.index)),
        }
    }

    /// A copy of a context's header map.
    pub(crate) fn map(&mut self, ctx: Ctx, direction: Direction) -> Result<HeaderList, Error> {
        self.with_ctx(ctx, |vm, id| {
            let s = vm.stream(id).ok_or(Error::UnknownContext(id))?;
            Ok(match direction {
                Direction::Request => s.request_headers.clone(),
                Direction::Response => s.response_headers.clone(),
            })
        })
    }

    /// `proxy_on_tick` now.
    /// Applies a new plugin configuration to this worker's VM ([`Vm::reconfigure`]).
    pub(crate) fn reconfigure(&mut self, configuration: Arc<Vec<u8>>) -> Result<(), Error> {
        self.with_vm(|vm| vm.reconfigure(configuration))
    }

    pub(crate) fn tick(&mut self) -> Result<(), Error> {
        self.with_vm(Vm::tick)
    }

    /// The main thread's part of a new configuration, as Envoy applies one: a fresh base VM
    /// starts and configures with it first (a refusal stops there), then this worker's VM
    /// starts a new root context with it ([`Worker::reconfigure`]).
    pub(crate) fn reconfigure_main(&mut self, configuration: Arc<Vec<u8>>) -> Result<(), Error> {
        base_vm(&self.compiled, &self.shared, configuration.clone())?;
        self.reconfigure(configuration)
    }

    /// `proxy_on_tick` on root context `root`.
    fn tick_root(&mut self, root: u32) -> Result<(), Error> {
        self.with_vm(|vm| vm.tick_root(root))
    }

    fn tick_periods(&self) -> Vec<(u32, Duration)> {
        self.vm.as_ref().map(Vm::tick_periods).unwrap_or_default()
    }

    /// The host stops: `proxy_on_done` and `proxy_on_delete` on every root context left
    /// (a second call does nothing).
    pub(crate) fn stop(&mut self) {
        if let Some(vm) = self.vm.as_mut()
            && let Err(e) = vm.shutdown()
        {
            self.shared
                .log(Level::Warn, format!("worker {}: {e}", self.index));
        }
    }
}

/// A VM started and configured, then dropped without another callback: Envoy's base VM on
/// the main thread, which it keeps only to clone from (it never ticks, is never notified and
/// gets no `proxy_on_done`).
fn base_vm(
    compiled: &Compiled,
    shared: &Arc<Shared>,
    configuration: Arc<Vec<u8>>,
) -> Result<(), Error> {
    Vm::with_configuration(compiled, shared, Poster::new(|_| {}), configuration).map(drop)
}

/// The worker's loop: jobs in order; between them, each root context's ticks at its own
/// period (a root's first tick comes one period after it set it); when every handle is gone,
/// the roots end ([`Worker::stop`]) and the thread exits.
fn run(worker: &mut Worker, rx: &mpsc::Receiver<Job>) {
    // Root id -> (period, next tick).
    let mut ticks: Vec<(u32, Duration, Instant)> = Vec::new();
    loop {
        let now = Instant::now();
        ticks = worker
            .tick_periods()
            .into_iter()
            .map(|(root, period)| match ticks.iter().find(|t| t.0 == root) {
                Some(&(_, p, at)) if p == period => (root, p, at),
                _ => (root, period, now + period),
            })
            .collect();
        let job = match ticks.iter().map(|t| t.2).min() {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match job {
            Ok(job) => job(worker),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for tick in &mut ticks {
                    if tick.2 <= now {
                        tick.2 = now + tick.1;
                        let _ = worker.tick_root(tick.0);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    worker.stop();
}
