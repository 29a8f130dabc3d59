//! The proxy-wasm contexts: thin glue between the host and the pure modules.
//!
//! One [`Root`] per VM (Envoy runs one VM per worker thread) parses the
//! configuration once; each request gets a [`Request`] context holding an
//! `Rc` of it. Counts live in host-wide metrics and the start time in shared
//! data, so `/status` is exact across workers.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

use crate::config::Config;
use crate::jwt::{NONCE_LEN, Signer, push_u64};
use crate::policy::{
    Decision, Format, Forward, Headers, Reply, Token, connection_names, decide, lossy, path_only,
    status_page,
};
use crate::status::Figures;

/// Shared-data key holding the proxy's start time (u64 nanoseconds, little endian).
pub const STARTED_AT_KEY: &str = "jwt_proxy.started_at";
/// Counter: requests forwarded (Envoy shows it as `wasmcustom.jwt_proxy.requests_processed`).
pub const PROCESSED_METRIC: &str = "jwt_proxy.requests_processed";
/// Counter: requests forwarded with a token.
pub const SIGNED_METRIC: &str = "jwt_proxy.requests_signed";

/// Bytes of host randomness fetched per `random_get` call: 64 nonces.
const RANDOM_BATCH: usize = NONCE_LEN * 64;

/// What every request context of one VM shares.
struct Shared {
    config: Config,
    signer: Signer,
    processed: u32,
    signed: u32,
    random: RefCell<RandomPool>,
}

/// Host randomness (WASI `random_get`, the host's cryptographic source),
/// fetched in batches: one hostcall per 64 tokens instead of one per token.
/// Every `jti` is still 128 bits taken straight from the host's source, in
/// order, each byte used once; the pool is per VM and starts empty, so VMs
/// never share bytes.
#[derive(Default)]
struct RandomPool {
    bytes: Vec<u8>,
    used: usize,
}

impl RandomPool {
    fn nonce(&mut self) -> Result<[u8; NONCE_LEN], getrandom::Error> {
        if self.used + NONCE_LEN > self.bytes.len() {
            // Never hand out bytes a failed refill left behind.
            self.bytes.clear();
            self.used = 0;
            let mut fresh = vec![0u8; RANDOM_BATCH];
            getrandom::fill(&mut fresh)?;
            self.bytes = fresh;
        }
        let mut nonce = [0u8; NONCE_LEN];
        for (n, b) in nonce.iter_mut().zip(&mut self.bytes[self.used..]) {
            *n = std::mem::take(b);
        }
        self.used += NONCE_LEN;
        Ok(nonce)
    }
}

/// The root context: configuration, metrics and the start time.
#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, duration_nanos)
}

/// A duration in nanoseconds, saturating; in u64 arithmetic (`as_nanos` is
/// u128, whose division pulls in a kilobyte of Wasm).
fn duration_nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // The first VM to start records the proxy's start time; the others
        // (one per worker, and reloaded VMs) keep it.
        if let (None, _) = self.get_shared_data(STARTED_AT_KEY) {
            let now = nanos(self.get_current_time()).to_le_bytes();
            if let Err(e) = self.set_shared_data(STARTED_AT_KEY, Some(&now), None) {
                warn!("could not record the start time: {e:?}");
            }
        }
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = if plugin_configuration_size == 0 {
            Vec::new()
        } else {
            self.get_plugin_configuration().unwrap_or_default()
        };
        let config = match Config::parse(&bytes, |name| std::env::var(name).ok()) {
            Ok(config) => config,
            Err(e) => {
                error!("jwt-proxy refuses to start: {e}");
                return false;
            }
        };
        let signer = match Signer::new(&config) {
            Ok(signer) => signer,
            Err(e) => {
                error!("jwt-proxy refuses to start: field `secret`: {e}");
                return false;
            }
        };
        let (processed, signed) = match (
            hostcalls::define_metric(MetricType::Counter, PROCESSED_METRIC),
            hostcalls::define_metric(MetricType::Counter, SIGNED_METRIC),
        ) {
            (Ok(p), Ok(s)) => (p, s),
            (p, s) => {
                error!("jwt-proxy refuses to start: could not define metrics: {p:?} {s:?}");
                return false;
            }
        };
        info!("jwt-proxy configured: {config}");
        self.shared = Some(Rc::new(Shared {
            config,
            signer,
            processed,
            signed,
            random: RefCell::default(),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = Rc::clone(self.shared.as_ref()?);
        Some(Box::new(Request {
            shared,
            started: SystemTime::UNIX_EPOCH,
            method: String::new(),
            path: String::new(),
            jti: None,
            status: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's context.
struct Request {
    shared: Rc<Shared>,
    started: SystemTime,
    method: String,
    /// The request path without its query string.
    path: String,
    jti: Option<String>,
    /// The response status, once the response headers have been seen.
    status: Option<u32>,
}

impl Context for Request {}

impl Request {
    /// Sends a local reply; the request is never forwarded.
    fn reply(&self, reply: Reply) -> Action {
        self.send_http_response(reply.status, reply.headers, reply.body.as_deref());
        Action::Pause
    }

    /// Answers the status path with the host-wide figures.
    fn status_reply(&self, format: Format) -> Action {
        let s = &self.shared;
        let started_at_nanos = match self.get_shared_data(STARTED_AT_KEY) {
            (Some(b), _) => b.try_into().map_or(0, u64::from_le_bytes),
            (None, _) => 0,
        };
        let figures = Figures {
            started_at_nanos,
            now_nanos: nanos(self.get_current_time()),
            requests_processed: hostcalls::get_metric(s.processed).unwrap_or(0),
            requests_signed: hostcalls::get_metric(s.signed).unwrap_or(0),
            kid: s.config.key_id.clone(),
        };
        self.reply(status_page(&figures, format))
    }

    /// Answers the JWKS path with the document made at configuration (the
    /// same reply to `GET` and `HEAD`: the host drops a `HEAD` reply's body).
    fn jwks_reply(&self) -> Action {
        let Some(jwks) = &self.shared.config.jwks else {
            return self.reply(Reply::refuse(404, "no JWKS"));
        };
        self.send_http_response(200, jwks.headers(), Some(jwks.body.as_bytes()));
        Action::Pause
    }

    /// Signs the request for `user` and sets the token header, replacing
    /// every value the client sent (one hostcall).
    fn sign(&mut self, user: &str) -> Action {
        let nonce = self.shared.random.borrow_mut().nonce();
        let nonce = match nonce {
            Ok(nonce) => nonce,
            Err(e) => {
                error!(
                    "no randomness for a jti ({e}); refusing {} {}",
                    self.method, self.path
                );
                return self.reply(Reply::sign_failed());
            }
        };
        let iat = nanos(self.started) / 1_000_000_000;
        match self.shared.signer.sign(iat, &nonce, user) {
            Ok(signed) => {
                self.set_http_request_header(&self.shared.config.header, Some(&signed.token));
                self.jti = Some(signed.jti);
                Action::Continue
            }
            Err(e) => {
                error!("could not sign {} {}: {e}", self.method, self.path);
                self.reply(Reply::sign_failed())
            }
        }
    }

    /// Lets a request through as `forward` says, counting it.
    #[inline]
    fn forward(&mut self, forward: Forward) -> Action {
        if let Some(hops) = forward.max_forwards {
            self.set_http_request_header("max-forwards", Some(&hops.to_string()));
        }
        let action = match forward.token {
            Token::Sign { user } => self.sign(&user),
            Token::Strip => {
                self.set_http_request_header(&self.shared.config.header, None);
                Action::Continue
            }
        };
        if let (Action::Continue, true) = (&action, forward.counted) {
            let s = &self.shared;
            let _ = hostcalls::increment_metric(s.processed, 1);
            if self.jti.is_some() {
                let _ = hostcalls::increment_metric(s.signed, 1);
            }
        }
        action
    }
}

/// The policy reads request headers straight from the host, on demand.
impl Headers for Request {
    fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.get_http_request_header_bytes(name)
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.started = self.get_current_time();
        // Every header is read as bytes: the SDK's text getters panic on a
        // value that is not UTF-8.
        let text = |name| lossy(self.get_http_request_header_bytes(name).unwrap_or_default());
        let (method, path) = (text(":method"), text(":path"));
        self.method = method;
        // The query string is dropped here, once.
        self.path = path_only(path);

        match decide(&self.shared.config, &self.method, &self.path, &*self) {
            Decision::Forward(forward) => self.forward(forward),
            Decision::Status(format) => self.status_reply(format),
            Decision::Jwks => self.jwks_reply(),
            Decision::Reply(reply) => self.reply(reply),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.status = self
            .get_http_response_header_bytes(":status")
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
        // Hop-by-hop headers (RFC 2616 section 13.5.1): Envoy drops
        // `Connection`, `Keep-Alive`, `Proxy-Connection`, `Upgrade` and
        // `Transfer-Encoding` itself, and envoy.yaml removes `TE` and
        // `Trailer` natively (measured with Envoy 1.40). On responses Envoy
        // keeps the headers the upstream named in `Connection`: only the
        // filter knows them, so it removes them here. The test host strips
        // the same set.
        if let Some(connection) = self.get_http_response_header_bytes("connection") {
            for name in connection_names(&connection) {
                self.set_http_response_header(&name, None);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if !self.shared.config.log_requests {
            return;
        }
        // The status seen in the response headers; a reply that never passed
        // through them (a reset, ...) asks the host.
        let status = self.status.map(u64::from).or_else(|| {
            self.get_property(vec!["response", "code"])
                .and_then(|b| b.try_into().ok().map(u64::from_le_bytes))
        });
        // A request the host refused before its headers reached the filter
        // (an `Upgrade`, `OPTIONS *`) has no method, path or start time.
        let (method, path, elapsed) = if self.method.is_empty() {
            ("-", "-", None)
        } else {
            let elapsed = self
                .get_current_time()
                .duration_since(self.started)
                .unwrap_or(Duration::ZERO);
            (self.method.as_str(), self.path.as_str(), Some(elapsed))
        };
        let signed = self
            .jti
            .as_deref()
            .map(|jti| (jti, self.shared.config.key_id.as_deref()));
        let line = request_line(method, path, status, signed, elapsed);
        // Straight to the host: the `log` facade would format the line again.
        let _ = hostcalls::log(LogLevel::Info, &line);
    }
}

/// The per-request log line, `METHOD PATH STATUS jti=JTI [kid=KID] 1.234ms`
/// (`signed`: the token's `jti` and `kid`); this runs once per request.
fn request_line(
    method: &str,
    path: &str,
    status: Option<u64>,
    signed: Option<(&str, Option<&str>)>,
    elapsed: Option<Duration>,
) -> String {
    let (jti, kid) = signed.unwrap_or(("-", None));
    let mut line = String::with_capacity(method.len() + path.len() + jti.len() + 32);
    line.push_str(method);
    line.push(' ');
    line.push_str(path);
    line.push(' ');
    match status {
        Some(code) => push_u64(&mut line, code),
        None => line.push('-'),
    }
    line.push_str(" jti=");
    line.push_str(jti);
    if let Some(kid) = kid {
        line.push_str(" kid=");
        line.push_str(kid);
    }
    line.push(' ');
    let Some(elapsed) = elapsed else {
        line.push('-');
        return line;
    };
    // Milliseconds with three decimals, rounded to the microsecond.
    let micros = duration_nanos(elapsed).saturating_add(500) / 1000;
    push_u64(&mut line, micros / 1000);
    line.push('.');
    let frac = micros % 1000;
    for digit in [frac / 100, frac / 10 % 10, frac % 10] {
        line.push(char::from(b'0' + digit as u8));
    }
    line.push_str("ms");
    line
}
