//! The ends of a body passed on without the worker ([`Passed`]).

use super::*;

/// The ends of a request body passed on to the upstream ([`Passed`]): its end starts the
/// route timeout (the mark dropped); a broken body is Envoy's `400`, as a pumped body's.
pub(super) struct RequestEnd {
    pub(super) _end: EndMark,
}

impl PassedEnd for RequestEnd {
    fn broken(self, _error: hyper::Error) -> BoxError {
        Aborted::error(Abort::Local(host_reply(400, "Bad Request\n")))
    }
}

/// The ends of a response body passed on to the client ([`Passed`]): its end ends the
/// request's lifecycle (`proxy_on_log` ...), as a pumped body's end does.
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
