//! Calls a VM makes to clusters (HTTP callouts; gRPC builds on the same parts): the calls in
//! flight, keyed by token, with the context that made each; how a finished call gets back to
//! the VM's worker thread ([`Poster`] posts a [`Completion`], which the worker hands to its
//! VM); and the response a callback is reading. Leaf: no guest memory, no wasmtime.
//!
//! The I/O runs on tokio (`crate::callout`), never on the worker thread; the VM only ever sees
//! a completion between two jobs, as Envoy delivers a callout's result on the worker's event
//! loop.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::AbortHandle;

use crate::state::headers::HeaderList;

/// A finished HTTP callout's response, as the filter reads it in `on_http_call_response`.
#[derive(Debug, Default, Clone)]
pub(crate) struct HttpResponse {
    /// `:status` first, then the response headers (map type 6).
    pub(crate) headers: HeaderList,
    /// The body (buffer type 4).
    pub(crate) body: Vec<u8>,
    /// The trailers (map type 7).
    pub(crate) trailers: HeaderList,
}

/// A call's result, on its way back to the VM that made it.
#[derive(Debug)]
pub(crate) enum Completion {
    /// An HTTP callout ended: `None` when it failed without a response.
    Http {
        /// The token `proxy_http_call` returned.
        token: u32,
        /// What the cluster answered (or what Envoy would have answered for it).
        response: Option<HttpResponse>,
    },
    /// A gRPC call or stream of this VM got `event` (`crate::callout::grpc`).
    Grpc {
        /// The token `proxy_grpc_call` / `proxy_grpc_stream` returned.
        token: u32,
        /// What arrived.
        event: crate::state::grpc::GrpcEvent,
    },
    /// A value was enqueued on a shared queue this VM's root context `root` registered
    /// (`proxy_on_queue_ready`).
    QueueReady {
        /// The registering root context.
        root: u32,
        /// The queue's id.
        queue: u32,
    },
}

/// Posts a [`Completion`] to the worker that owns the VM (a weak link: it never keeps a
/// stopped worker alive, and a completion for a reloaded VM is dropped).
#[derive(Clone)]
pub(crate) struct Poster(Arc<dyn Fn(Completion) + Send + Sync>);

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Poster")
    }
}

impl Poster {
    /// A poster that calls `f` (from any thread).
    pub(crate) fn new(f: impl Fn(Completion) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Sends `completion` to the VM's worker.
    pub(crate) fn post(&self, completion: Completion) {
        (self.0)(completion);
    }
}

/// A call in flight.
#[derive(Debug)]
struct Pending {
    /// The context that made it (an HTTP context, or a root context).
    context: u32,
    /// Cancels its I/O.
    abort: AbortHandle,
}

/// One VM's calls: tokens, the calls in flight, the response being delivered.
#[derive(Debug, Default)]
pub(crate) struct Callouts {
    poster: Option<Poster>,
    /// The last token given (Envoy's first HTTP call token is 4).
    next_token: u32,
    pending: HashMap<u32, Pending>,
    /// The response of the `on_http_call_response` running now (only then readable).
    pub(crate) current: Option<HttpResponse>,
}

impl Callouts {
    /// Where completions go (set once per VM, before its first callback).
    pub(crate) fn set_poster(&mut self, poster: Poster) {
        self.poster = Some(poster);
    }

    /// The poster, if this VM has a worker to post to.
    pub(crate) fn poster(&self) -> Option<&Poster> {
        self.poster.as_ref()
    }

    /// A fresh token, numbered as Envoy numbers HTTP calls per VM: 4, 8, 12, ... (the low two
    /// bits are the callout type, 0 for HTTP; gRPC calls and streams use 1 and 2).
    pub(crate) fn next_token(&mut self) -> u32 {
        loop {
            self.next_token = self.next_token.wrapping_add(4);
            if self.next_token != 0 && !self.pending.contains_key(&self.next_token) {
                return self.next_token;
            }
        }
    }

    /// Records a call in flight for `context`.
    pub(crate) fn insert(&mut self, token: u32, context: u32, abort: AbortHandle) {
        self.pending.insert(token, Pending { context, abort });
    }

    /// Takes a finished call: the context that made it, if it is still pending (a call
    /// cancelled with its context is not).
    pub(crate) fn finish(&mut self, token: u32) -> Option<u32> {
        self.pending.remove(&token).map(|p| p.context)
    }

    /// Cancels every call `context` made (its HTTP context ended: Envoy cancels them and
    /// delivers no callback).
    pub(crate) fn cancel_context(&mut self, context: u32) {
        self.pending.retain(|_, p| {
            let keep = p.context != context;
            if !keep {
                p.abort.abort();
            }
            keep
        });
    }

    /// Lets every call in flight finish on its own: none is aborted when this VM goes, and
    /// none is delivered (its completion reaches no VM). Envoy still sends a call dispatched
    /// just before its VM failed (measured, `conformance::callout`).
    pub(crate) fn detach(&mut self) {
        self.pending.clear();
    }

    /// Calls in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

impl Drop for Callouts {
    fn drop(&mut self) {
        for p in self.pending.values() {
            p.abort.abort();
        }
    }
}

/// Where an HTTP callout goes, once `proxy_http_call`'s checks passed.
pub(crate) struct HttpCallPlan {
    pub(crate) cluster: crate::state::clusters::Cluster,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) poster: Poster,
    pub(crate) token: u32,
}

impl crate::state::HostState {
    /// `proxy_http_call`'s checks, as Envoy's `httpCall` makes them: an unknown cluster, or
    /// headers without `:path`, `:method` or `:authority`, are `BadArgument`. `Ok` gives the
    /// cluster, the runtime, the poster and a fresh token; the caller starts the I/O and
    /// records it with [`Callouts::insert`].
    pub(crate) fn plan_http_call(
        &mut self,
        cluster: &str,
        headers: &HeaderList,
    ) -> Result<HttpCallPlan, crate::abi::Status> {
        use crate::abi::Status;
        let clusters = &self.shared.clusters;
        let Some(runtime) = clusters.runtime().cloned() else {
            self.warn(format!(
                "proxy_http_call to \"{cluster}\": the direct Plugin API has no network; answering BadArgument, as Envoy does for an unknown cluster"
            ));
            return Err(Status::BadArgument);
        };
        let Some(found) = clusters.get(cluster).cloned() else {
            return Err(Status::BadArgument);
        };
        if [":path", ":method", ":authority"]
            .iter()
            .any(|name| headers.get(name).is_none())
        {
            return Err(Status::BadArgument);
        }
        let Some(poster) = self.callouts.poster().cloned() else {
            return Err(Status::InternalFailure);
        };
        let token = self.callouts.next_token();
        Ok(HttpCallPlan {
            cluster: found,
            runtime,
            poster,
            token,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancelling_a_context_aborts_only_its_calls() {
        let mut c = Callouts::default();
        let (a, b) = (c.next_token(), c.next_token());
        assert_eq!((a, b), (4, 8));
        let ta = tokio::spawn(std::future::pending::<()>());
        let tb = tokio::spawn(std::future::pending::<()>());
        c.insert(a, 7, ta.abort_handle());
        c.insert(b, 8, tb.abort_handle());
        c.cancel_context(7);
        assert!(ta.await.unwrap_err().is_cancelled());
        assert_eq!(c.finish(a), None);
        assert_eq!(c.finish(b), Some(8));
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn detached_calls_outlive_their_vm_and_are_not_delivered() {
        let mut c = Callouts::default();
        let token = c.next_token();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move { rx.await.is_ok() });
        c.insert(token, 7, task.abort_handle());
        c.detach();
        assert_eq!(c.finish(token), None);
        drop(c);
        tx.send(()).unwrap();
        assert!(task.await.unwrap(), "the call ran to its end");
    }
}
