//! Delivering a finished call to the VM: `proxy_on_http_call_response` on the root context of
//! the context that made the call (Envoy's calls belong to the root; the SDKs find the caller
//! by token), with the response readable only while it runs (as in Envoy).

use super::{Vm, len32};
use crate::error::Error;
use crate::state::callout::Completion;

impl Vm {
    /// The VM failed: its HTTP calls in flight are sent and answered all the same, and their
    /// answers dropped ([`crate::state::callout::Callouts::detach`]).
    pub(crate) fn detach_callouts(&mut self) {
        self.store.data_mut().callouts.detach();
    }

    /// Delivers `completion` to the root of the context that made the call; one whose context
    /// is gone (cancelled with it) is dropped.
    ///
    /// # Errors
    /// A trap in the callback.
    pub(crate) fn complete(&mut self, completion: Completion) -> Result<(), Error> {
        match completion {
            Completion::QueueReady { root, queue } => self.queue_ready(root, queue),
            Completion::Grpc { token, event } => self.grpc_event(token, event),
            Completion::Http { token, response } => {
                let data = self.store.data_mut();
                let Some(context) = data.callouts.finish(token) else {
                    return Ok(());
                };
                if !data.roots.contains(&context) && !data.streams.contains_key(&context) {
                    return Ok(());
                }
                // The call belongs to the caller's root context, as in Envoy: the callback
                // runs there and gets the root's id, whichever context dispatched it.
                let root = data.root_of(context);
                let response = response.unwrap_or_default();
                let sizes = (
                    len32(response.headers.len()),
                    len32(response.body.len()),
                    len32(response.trailers.len()),
                );
                data.callouts.current = Some(response);
                let f = self.cb.http_call_response.clone();
                let r = self.call(
                    root,
                    "proxy_on_http_call_response",
                    &f,
                    (root, token, sizes.0, sizes.1, sizes.2),
                );
                let data = self.store.data_mut();
                data.callouts.current = None;
                data.effective_context = data.root;
                r.map(drop)
            }
        }
    }
}
