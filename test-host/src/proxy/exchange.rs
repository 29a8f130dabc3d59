//! [`Exchange`]: the value that owns one request's lifecycle. It holds the HTTP context from
//! `proxy_on_context_create` to `proxy_on_delete` (run by [`Finish`] however the request ends)
//! and walks the request through the filter's request callbacks, the upstream and the
//! response callbacks; every early end (a local reply, a reset, a failure) is an answer.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};

use crate::abi::Level;
use crate::error::Error;
use crate::proxy::Proxy;
use crate::proxy::body::{
    BoxError, Passed, PassedEnd, ProxyBody, closing, empty, host_reply, plain,
};
use crate::proxy::pump::{Abort, Aborted, Filtered, Pump, PumpMode, declared_length};
use crate::proxy::upstream::UpstreamError;
use crate::proxy::{hop, reply};
use crate::state::headers::HeaderList;
use crate::state::{Direction, LocalReply, StreamInfo};
use crate::worker::{Ctx, Outcome, WorkerHandle};

mod passed;
mod replies;
mod route;

use passed::{RequestEnd, ResponseEnd};
pub(crate) use replies::filter_failed;
use replies::{reply_response, status_of, upstream_failed};
use route::{EndMark, Ended};

/// The filter reset the stream: hyper closes the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("the filter reset the stream")]
pub(crate) struct StreamReset;

/// What the client gets: a response, or a reset.
pub(crate) type Answer = Result<Response<ProxyBody>, StreamReset>;

/// Runs `proxy_on_log` / `proxy_on_done` / `proxy_on_delete` when the request is over, however
/// it ends.
pub(crate) struct Finish {
    worker: WorkerHandle,
    ctx: Ctx,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let ctx = self.ctx;
        self.worker.post(move |w| w.finish(ctx));
    }
}

/// The request as it arrived, before the filter sees it.
pub(crate) struct Inbound {
    pub(crate) parts: http::request::Parts,
    pub(crate) body: Incoming,
    /// Names the request's `Connection` headers list.
    pub(crate) named: Vec<String>,
    pub(crate) peer: SocketAddr,
}

/// One request's lifecycle (see the module docs).
pub(crate) struct Exchange {
    proxy: Arc<Proxy>,
    worker: WorkerHandle,
    ctx: Ctx,
    finish: Finish,
    /// The `Via` the proxy's own replies carry (the route's `response_headers_to_add`,
    /// `%PROTOCOL% jwt-proxy`, if absent); none where no route matched.
    via: Option<String>,
    /// A gRPC request: local replies are gRPC trailers-only replies ([`reply`]).
    grpc: bool,
}

impl Exchange {
    /// Creates the HTTP context (for a request the connection manager answers itself). `Err`
    /// is the answer when the filter failed.
    pub(crate) async fn create(
        proxy: &Arc<Proxy>,
        worker: &WorkerHandle,
        info: StreamInfo,
    ) -> Result<Self, Response<ProxyBody>> {
        let via = hop::via(&info.protocol);
        let ctx = worker
            .call(move |wk| wk.create(info))
            .await
            .and_then(|r| r)
            .map_err(|e| filter_failed(proxy, &e, Some(&via), false))?;
        Ok(Self::new(proxy, worker, ctx, via))
    }

    /// Creates the HTTP context and runs `proxy_on_request_headers`, in one job. `Err` is the
    /// answer when the filter failed.
    pub(crate) async fn start(
        proxy: &Arc<Proxy>,
        worker: &WorkerHandle,
        info: StreamInfo,
        headers: HeaderList,
        end_of_stream: bool,
    ) -> Result<(Self, Outcome), Response<ProxyBody>> {
        let via = hop::via(&info.protocol);
        let grpc = reply::is_grpc(&headers);
        let (ctx, outcome) = worker
            .call(move |wk| {
                let ctx = wk.create(info)?;
                let outcome = wk.headers(ctx, Direction::Request, headers, end_of_stream)?;
                Ok::<_, Error>((ctx, outcome))
            })
            .await
            .and_then(|r| r)
            .map_err(|e| filter_failed(proxy, &e, Some(&via), grpc))?;
        let mut exchange = Self::new(proxy, worker, ctx, via);
        exchange.grpc = grpc;
        Ok((exchange, outcome))
    }

    fn new(proxy: &Arc<Proxy>, worker: &WorkerHandle, ctx: Ctx, via: String) -> Self {
        Self {
            proxy: proxy.clone(),
            worker: worker.clone(),
            ctx,
            finish: Finish {
                worker: worker.clone(),
                ctx,
            },
            via: Some(via),
            grpc: false,
        }
    }

    /// For a request no route matches (`OPTIONS *`, `CONNECT`): Envoy's router answers it
    /// without the route's response headers.
    pub(crate) fn unrouted(mut self) -> Self {
        self.via = None;
        self
    }

    /// After the request headers callback: a local reply, a reset, or the upstream exchange.
    pub(crate) async fn run(self, inbound: Inbound, outcome: Outcome) -> Answer {
        let paused = outcome.waiter.is_some();
        let outcome = match self.wait_resumed(Direction::Request, outcome).await {
            Ok(o) => o,
            Err(resp) => return Ok(resp),
        };
        if outcome.reset {
            return Err(StreamReset);
        }
        if let Some(reply) = outcome.local_reply {
            // Envoy closes an HTTP/1 connection after a local reply with status 400 (a
            // messaging error, its `onLocalReply`) or one sent before the request's end (from
            // the headers callback, a body still to come; after a pause it may have read the
            // body meanwhile), and says so with `connection: close`.
            let close = inbound.parts.version != Version::HTTP_2
                && (reply.status == 400 || (!paused && !inbound.body.is_end_stream()));
            return Ok(closing(self.local_response(reply).await, close));
        }
        if inbound.parts.method == Method::CONNECT {
            // The router has no route for CONNECT: 404, and the connection closes.
            return Ok(closing(
                self.unrouted().local_response(host_reply(404, "")).await,
                true,
            ));
        }
        let http1 = inbound.parts.version != Version::HTTP_2;
        let start = BodyStart {
            paused,
            reframe: paused || outcome.body_callback,
            // Over HTTP/2 the trailers go through their callback when it is exported.
            pass: !paused && !outcome.body_callback && (http1 || !outcome.trailers_callback),
        };
        self.forward(inbound, &outcome.headers, start).await
    }

    /// The upstream request's head, from the headers as the filter left them.
    fn upstream_head(
        &self,
        inbound: &Inbound,
        headers: &HeaderList,
    ) -> Result<Request<()>, http::Error> {
        let proxy = &self.proxy;
        let method = headers
            .get(":method")
            .and_then(|m| Method::from_bytes(m).ok())
            .unwrap_or(inbound.parts.method.clone());
        let protocol = hop::protocol(inbound.parts.version);
        let mut builder = Request::builder().method(method).version(Version::HTTP_11);
        if let Some(h) = builder.headers_mut() {
            *h = hop::upstream_headers(
                &proxy.shared,
                headers,
                &inbound.named,
                protocol,
                inbound.peer,
            );
        }
        let path = headers.get_str(":path").unwrap_or("/");
        proxy
            .client
            .uri(path)
            .and_then(|uri| builder.uri(uri).body(()))
    }

    /// The upstream request's body: none, the client's passed on, or the client's through the
    /// request body callbacks ([`Filtered`]); where the head waits for the filter's first
    /// forward, this runs the pump up to it and frames `head`. `Err` when the filter stopped
    /// the exchange meanwhile (nothing was sent).
    async fn upstream_body(
        &self,
        body: Incoming,
        head: &mut Request<()>,
        headers: &HeaderList,
        (start, http1): (BodyStart, bool),
        ended: &Ended,
    ) -> Result<ProxyBody, Abort> {
        if body.is_end_stream() {
            drop(ended.mark());
            return Ok(empty());
        }
        if start.pass {
            let end = RequestEnd { _end: ended.mark() };
            return Ok(Passed::new(body, http1, end).boxed());
        }
        let mode = PumpMode {
            http1,
            coalesce: start.paused,
            declared: declared_length(headers),
            reframe: start.reframe,
        };
        let link = (self.worker.clone(), self.ctx);
        let mut pump = Pump::new(self.proxy.clone(), link, Direction::Request, body, mode);
        if start.reframe {
            let framing = pump.prime().await;
            if let Some(abort) = pump.take_abort() {
                return Err(abort);
            }
            framing.apply(head.headers_mut());
        }
        Ok(Filtered::new(pump, ended.mark()).boxed())
    }

    /// Sends the request, as the filter left its headers, to the upstream and answers with its
    /// response, or with the host's reply when it fails.
    async fn forward(self, inbound: Inbound, headers: &HeaderList, start: BodyStart) -> Answer {
        let proxy = self.proxy.clone();
        // Envoy closes an HTTP/1 connection it answers before the request's end.
        let http1 = inbound.parts.version != Version::HTTP_2;
        let mut head = match self.upstream_head(&inbound, headers) {
            Ok(head) => head,
            Err(e) => {
                proxy.log(
                    Level::Error,
                    format!("the filter produced an invalid request: {e}"),
                );
                return Ok(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "invalid request after filter\n",
                ));
            }
        };
        let ended = Ended::default();
        let body = self
            .upstream_body(inbound.body, &mut head, headers, (start, http1), &ended)
            .await;
        let body = match body {
            Ok(body) => body,
            Err(abort) => return self.aborted(abort, http1).await,
        };
        // Like Envoy's route timeout: counted from the end of the request body.
        let sent = proxy.client.send(head.map(|()| body));
        match route::within(sent, &ended, proxy.config.upstream_timeout).await {
            Some(Ok(r)) => self.respond(r).await,
            // The request body stopped the exchange (it failed hyper's client with [`Aborted`]).
            Some(Err(UpstreamError::Aborted(abort))) => self.aborted(abort, http1).await,
            Some(Err(e)) => Ok(self.local_response(upstream_failed(&proxy, Some(e))).await),
            None => Ok(self.local_response(upstream_failed(&proxy, None)).await),
        }
    }

    /// The answer when the request body stopped the exchange.
    async fn aborted(self, abort: Abort, http1: bool) -> Answer {
        match abort {
            Abort::Local(reply) => Ok(closing(self.local_response(reply).await, http1)),
            Abort::Reset => Err(StreamReset),
            Abort::Failed(e) => Ok(closing(self.failed(&e), http1)),
        }
    }

    /// Waits while the filter keeps the stream paused; `Err` is the response to send instead.
    async fn wait_resumed(
        &self,
        direction: Direction,
        mut outcome: Outcome,
    ) -> Result<Outcome, Response<ProxyBody>> {
        let proxy = &self.proxy;
        let ctx = self.ctx;
        let deadline = tokio::time::Instant::now() + proxy.config.resume_timeout;
        while let Some(waiter) = outcome.waiter.take() {
            if tokio::time::timeout_at(deadline, waiter).await.is_err() {
                proxy.log(
                    Level::Error,
                    format!(
                        "the filter paused context {} and did not resume it within {:?}",
                        ctx.id, proxy.config.resume_timeout
                    ),
                );
                return Err(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "filter did not resume the stream\n",
                ));
            }
            outcome = self
                .worker
                .call(move |wk| wk.resumed(ctx, direction))
                .await
                .and_then(|r| r)
                .map_err(|e| self.failed(&e))?;
        }
        Ok(outcome)
    }

    /// Sends a local reply (the filter's, or the host's) through the filter's response-headers
    /// and body callbacks, rendered as Envoy renders it ([`reply`]), and never to the upstream.
    pub(crate) async fn local_response(self, reply: LocalReply) -> Response<ProxyBody> {
        let (headers, body) = reply::render(&reply, self.via.as_deref(), self.grpc);
        let details = reply.details;
        let ctx = self.ctx;
        let seen = self
            .worker
            .call(move |wk| {
                let _ = wk.replied(ctx, None, details);
                let eos = body.is_empty();
                let Ok(outcome) = wk.headers(ctx, Direction::Response, headers.clone(), eos) else {
                    return (headers, body);
                };
                if eos {
                    return (outcome.headers, body);
                }
                let body = match wk.body(ctx, Direction::Response, &body, true) {
                    Ok(Outcome { body: Some(b), .. }) => b,
                    _ => body,
                };
                (outcome.headers, body)
            })
            .await;
        let (headers, body) = seen.unwrap_or_default();
        let response = reply_response(&self.proxy, headers, body);
        drop(self);
        response
    }

    /// The `503` when the filter trapped or its VM is gone: Envoy's empty local reply, without
    /// further callbacks (the context is gone with its VM).
    fn failed(&self, e: &Error) -> Response<ProxyBody> {
        filter_failed(&self.proxy, e, self.via.as_deref(), self.grpc)
    }

    /// Runs the response callbacks on the upstream's response and streams it to the client.
    async fn respond(self, upstream: Response<Incoming>) -> Answer {
        let (parts, body) = upstream.into_parts();
        let named_before = hop::named(&parts.headers);
        let headers = hop::response_map(&parts);
        let end_of_stream = body.is_end_stream();
        let ctx = self.ctx;
        let outcome = match self
            .worker
            .call(move |wk| {
                let _ = wk.replied(ctx, None, "via_upstream".to_owned());
                wk.headers(ctx, Direction::Response, headers, end_of_stream)
            })
            .await
            .and_then(|r| r)
        {
            Ok(o) => o,
            Err(e) => return Ok(self.failed(&e)),
        };
        let paused = outcome.waiter.is_some();
        let reframe = paused || outcome.body_callback;
        // The upstream speaks HTTP/1.1: its trailers are dropped, no trailers callback runs.
        let pass = !paused && !outcome.body_callback;
        let outcome = match self.wait_resumed(Direction::Response, outcome).await {
            Ok(o) => o,
            Err(resp) => return Ok(resp),
        };
        if outcome.reset {
            return Err(StreamReset);
        }
        let shared = &self.proxy.shared;
        if let Some(reply) = outcome.local_reply {
            // Replaces the upstream response; not run through the callbacks a second time.
            let (headers, body) = reply::render(&reply, self.via.as_deref(), self.grpc);
            let seen = headers.clone();
            let _ = self
                .worker
                .call(move |wk| wk.replied(ctx, Some(seen), reply.details))
                .await;
            return Ok(reply_response(&self.proxy, headers, body));
        }
        let headers = outcome.headers;
        let mut named = named_before;
        named.extend(hop::connection_tokens(
            headers.get_all("connection").into_iter(),
        ));
        let status = status_of(&headers).unwrap_or(parts.status);
        let mut map = hop::to_header_map(shared, &headers, &named);
        reply::finalize(&mut map);
        let client_body = if end_of_stream {
            drop(self);
            empty()
        } else if pass {
            let end = ResponseEnd {
                proxy: self.proxy.clone(),
                _finish: self.finish,
            };
            Passed::new(body, true, end).boxed()
        } else {
            let link = (self.worker.clone(), self.ctx);
            let mode = PumpMode {
                http1: true,
                coalesce: paused,
                declared: declared_length(&headers),
                reframe,
            };
            let mut pump = Pump::new(self.proxy.clone(), link, Direction::Response, body, mode);
            // The head waits for the first forward's framing (a stop meanwhile fails the body).
            pump.prime().await.apply(&mut map);
            Filtered::new(pump, self.finish).boxed()
        };
        let mut response = Response::new(client_body);
        *response.status_mut() = status;
        *response.headers_mut() = map;
        Ok(response)
    }
}

/// How a forwarded request's body follows its head.
#[derive(Clone, Copy)]
struct BodyStart {
    /// The filter paused in the headers: what arrived meanwhile is one body call.
    paused: bool,
    /// The head waits for the filter's first forward to choose its framing: the body may change
    /// size (a body callback is exported, or the filter paused and may have set the buffer).
    reframe: bool,
    /// No callback can see the body: it is passed on as it is ([`Passed`]), never to the
    /// worker.
    pass: bool,
}
