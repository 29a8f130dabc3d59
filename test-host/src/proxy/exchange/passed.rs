//! The ends of a body passed on without the worker ([`Passed`]).

use super::*;

/// The ends of a request body passed on to the upstream ([`Passed`]): its end starts the
/// route timeout (`done` dropped), a broken body is Envoy's `400`, as the pump reports it.
pub(super) struct RequestEnd {
    pub(super) _done: oneshot::Sender<()>,
    pub(super) abort: oneshot::Sender<Abort>,
}

impl PassedEnd for RequestEnd {
    fn broken(self, error: hyper::Error) -> BoxError {
        let _ = self
            .abort
            .send(Abort::Local(host_reply(400, "Bad Request\n")));
        Box::new(error)
    }
}

/// The ends of a response body passed on to the client ([`Passed`]): its end ends the
/// request's lifecycle (`proxy_on_log` ...), as the response pump does.
pub(super) struct ResponseEnd {
    pub(super) proxy: Arc<Proxy>,
    pub(super) _finish: Finish,
}

impl PassedEnd for ResponseEnd {
    fn broken(self, error: hyper::Error) -> BoxError {
        self.proxy
            .log(Level::Warn, format!("upstream body error: {error}"));
        Box::new(error)
    }
}
