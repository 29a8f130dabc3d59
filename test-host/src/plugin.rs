//! [`Plugin`]: one VM driven without HTTP, callback by callback, for tests.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::abi::Action;
use crate::error::Error;
use crate::host::{histogram, metric};
use crate::state::headers::HeaderList;
use crate::state::log::LogRecord;
use crate::state::{Direction, LocalReply, Shared, StreamInfo};
use crate::worker::{self, Ctx, Outcome, WorkerHandle};

/// An HTTP context created with [`Plugin::create_http_context`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpContextId(pub(crate) Ctx);

impl HttpContextId {
    /// The context id the filter sees.
    #[must_use]
    pub fn id(self) -> u32 {
        self.0.id
    }
}

/// What a callback decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Continue or Pause (as returned, or Continue if the filter resumed the stream itself).
    pub action: Action,
    /// The local reply the filter sent during the callback, if any.
    pub local_reply: Option<LocalReply>,
    /// Whether the filter closed (reset) the stream.
    pub reset: bool,
    /// The header (or trailer) map after the callback; empty for body callbacks.
    pub headers: HeaderList,
    /// For body callbacks: the bytes the host would forward now (`None` while buffering, and
    /// while the filter holds the body it paused at its end).
    pub body: Option<Vec<u8>>,
}

impl From<Outcome> for Verdict {
    fn from(o: Outcome) -> Self {
        Self {
            action: o.action,
            local_reply: o.local_reply,
            reset: o.reset,
            headers: o.headers,
            body: o.body,
        }
    }
}

/// A plugin loaded into one VM, driven without HTTP. Each method runs on the VM's thread and
/// blocks until the callback returns (so it is usable from sync and async tests alike). A trap
/// returns [`Error::Trap`] and reloads the VM, as the proxy does.
pub struct Plugin {
    pub(crate) worker: WorkerHandle,
    pub(crate) shared: Arc<Shared>,
}

fn pairs(headers: &[(&str, &str)]) -> HeaderList {
    HeaderList::from_pairs(headers.iter().copied())
}

impl Plugin {
    /// Creates an HTTP context (`proxy_on_context_create(id, root)`), as for a new HTTP/1.1
    /// request from `127.0.0.1`.
    ///
    /// # Errors
    /// A trap in `proxy_on_context_create`, or the worker being gone.
    pub fn create_http_context(&self) -> Result<HttpContextId, Error> {
        let info = StreamInfo {
            protocol: "HTTP/1.1".to_owned(),
            request_id: "00000000-0000-4000-8000-000000000000".to_owned(),
            source: Some(SocketAddr::from(([127, 0, 0, 1], 40000))),
            destination: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        };
        self.worker
            .call_blocking(move |w| w.create(info))?
            .map(HttpContextId)
    }

    /// `proxy_on_request_headers` with `headers` (include `:method`, `:path`, `:authority`,
    /// `:scheme` as Envoy does).
    ///
    /// # Errors
    /// A trap (the VM is reloaded and the context lost), or an unknown context.
    pub fn on_request_headers(
        &self,
        ctx: HttpContextId,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Verdict, Error> {
        let h = pairs(headers);
        self.worker
            .call_blocking(move |w| w.headers(ctx.0, Direction::Request, h, end_of_stream))?
            .map(Verdict::from)
    }

    /// `proxy_on_request_body` with `chunk` appended to the buffered body.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_request_body(
        &self,
        ctx: HttpContextId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Verdict, Error> {
        let c = chunk.to_vec();
        self.worker
            .call_blocking(move |w| w.body(ctx.0, Direction::Request, &c, end_of_stream))?
            .map(Verdict::from)
    }

    /// `proxy_on_request_trailers`.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_request_trailers(
        &self,
        ctx: HttpContextId,
        trailers: &[(&str, &str)],
    ) -> Result<Verdict, Error> {
        let t = pairs(trailers);
        self.worker
            .call_blocking(move |w| w.trailers(ctx.0, Direction::Request, t))?
            .map(Verdict::from)
    }

    /// `proxy_on_response_headers` with `headers` (include `:status`).
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_response_headers(
        &self,
        ctx: HttpContextId,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Verdict, Error> {
        let h = pairs(headers);
        self.worker
            .call_blocking(move |w| w.headers(ctx.0, Direction::Response, h, end_of_stream))?
            .map(Verdict::from)
    }

    /// `proxy_on_response_body` with `chunk` appended to the buffered body.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_response_body(
        &self,
        ctx: HttpContextId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Verdict, Error> {
        let c = chunk.to_vec();
        self.worker
            .call_blocking(move |w| w.body(ctx.0, Direction::Response, &c, end_of_stream))?
            .map(Verdict::from)
    }

    /// `proxy_on_log`.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_log(&self, ctx: HttpContextId) -> Result<(), Error> {
        self.worker.call_blocking(move |w| w.log(ctx.0))?
    }

    /// `proxy_on_done` then `proxy_on_delete`; the context is gone afterwards.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn on_done(&self, ctx: HttpContextId) -> Result<(), Error> {
        self.worker.call_blocking(move |w| w.done(ctx.0))?
    }

    /// The request header map as it is now.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn request_headers(&self, ctx: HttpContextId) -> Result<HeaderList, Error> {
        self.worker
            .call_blocking(move |w| w.map(ctx.0, Direction::Request))?
    }

    /// The response header map as it is now.
    ///
    /// # Errors
    /// As [`Plugin::on_request_headers`].
    pub fn response_headers(&self, ctx: HttpContextId) -> Result<HeaderList, Error> {
        self.worker
            .call_blocking(move |w| w.map(ctx.0, Direction::Response))?
    }

    /// `proxy_on_tick` now.
    ///
    /// # Errors
    /// A trap, or the worker being gone.
    pub fn tick(&self) -> Result<(), Error> {
        self.worker.call_blocking(worker::Worker::tick)?
    }

    /// Log records so far, oldest first.
    #[must_use]
    pub fn logs(&self) -> Vec<LogRecord> {
        self.shared.logs.records()
    }

    /// A counter's or gauge's value (a histogram's sample count), by name.
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<u64> {
        metric(&self.shared, name)
    }

    /// A histogram's samples, by name.
    #[must_use]
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        histogram(&self.shared, name)
    }

    /// A shared-data value, by key.
    #[must_use]
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.data.get(key.as_bytes()).map(|(v, _)| v)
    }
}
