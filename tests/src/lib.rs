//! Helpers for the end-to-end tests: the echo upstream with a record of what
//! reached it, a scriptable upstream for the answers a real server would not
//! give ([`scripted`]), the real Envoy binary on free loopback ports, both
//! proxies set up alike ([`proxy::Setup`]), a raw HTTP/1.x client for exact
//! wire-level checks, one way to wait ([`wait_until`]), and token
//! verification with the `jsonwebtoken` crate (an implementation independent
//! of the filter's).
//!
//! Everything binds `127.0.0.1:0`; every guard stops its process on drop, so
//! tests run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod envoy;
pub mod grpc;
pub mod h2;
pub mod load;
pub mod proxy;
pub mod raw;
pub mod scripted;
pub mod verifier;

pub use envoy::{Envoy, EnvoyBuilder, envoy_bin};

use std::fmt::Display;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echo_upstream::EchoServer;
use hyper::HeaderMap;
use serde_json::Value;

/// The task's HS512 key (SPEC section 1), used as UTF-8 bytes by default.
pub const SECRET: &str = "a9ddbcaba8c0ac1a0a812dc0c2f08514b23f2db0a68343cb8199ebb38a6d91e4ebfb378e22ad39c2d01d0b4ec9c34aa91056862ddace3fbbd6852ee60c36acbf";

/// The default plugin configuration of the tests.
pub fn default_config() -> String {
    format!(r#"{{"secret":"{SECRET}"}}"#)
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A wasm module built by `make wasm fixtures`; fails (never skips) when missing.
pub fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/wasm32-wasip1/release"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build it with `make wasm fixtures` (or `cargo build --release --target wasm32-wasip1 -p <crate>`)",
        path.display()
    );
    path
}

/// What the upstream received: one entry per request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The proxy's address on the upstream connection (tells connections apart).
    pub peer: SocketAddr,
    /// Request method.
    pub method: String,
    /// Request target.
    pub uri: String,
    /// HTTP version, e.g. `HTTP/1.1`.
    pub version: String,
    /// The request headers as received.
    pub headers: HeaderMap,
}

impl Seen {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The one value of header `name`, if any.
    pub fn one(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} arrived {} times upstream",
            all.len()
        );
        all.into_iter().next()
    }
}

/// The echo upstream, in-process on a runtime of its own (so tests can use
/// blocking clients), recording every request it receives.
pub struct Upstream {
    server: Option<EchoServer>,
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Starts one on `127.0.0.1:0`.
    pub fn start() -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let server = runtime
            .block_on(EchoServer::start(Some(Arc::new(
                move |peer, parts: &hyper::http::request::Parts| {
                    record.lock().unwrap().push(Seen {
                        peer,
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        version: format!("{:?}", parts.version),
                        headers: parts.headers.clone(),
                    });
                },
            ))))
            .unwrap();
        Upstream {
            addr: server.addr(),
            server: Some(server),
            runtime: Some(runtime),
            seen,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("nothing reached the upstream")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            let _guard = rt.enter();
            drop(self.server.take());
            rt.shutdown_background();
        }
    }
}

/// A loopback port held by a socket that is bound but not listening: a
/// connect to it is refused (reset) for as long as the value lives, and no
/// other process can take the port meanwhile. [`HeldPort::listen`] turns the
/// same socket into a listener, on the same port.
pub struct HeldPort {
    socket: socket2::Socket,
    addr: SocketAddr,
}

impl HeldPort {
    /// Binds a fresh socket to `127.0.0.1:0`.
    pub fn new() -> HeldPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        HeldPort { socket, addr }
    }

    /// The address that refuses connections.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening on the held port with an accept queue of `backlog`.
    pub fn listen(self, backlog: i32) -> std::net::TcpListener {
        self.socket.listen(backlog).unwrap();
        self.socket.into()
    }
}

impl Default for HeldPort {
    fn default() -> Self {
        HeldPort::new()
    }
}

/// Verifies an HS512 token with the `jsonwebtoken` crate and returns its
/// claims (no registered-claim validation: the caller checks them). The
/// token's header must say `HS512` and `JWT`; see [`verify_with`] for the
/// asymmetric algorithms.
pub fn verify(token: &str, key: &[u8]) -> Value {
    verify_with(token, &VerifyKey::Secret(key))
}

/// What a token is verified with.
pub enum VerifyKey<'a> {
    /// An HS512 key.
    Secret(&'a [u8]),
    /// A JWKS document (`{"keys":[...]}`), as the proxy serves it: the key
    /// is the JWK whose `kid` is the token's.
    Jwks(&'a str),
    /// An SPKI PEM public key (`openssl pkey -pubout`) of the token's `alg`
    /// (EdDSA or ES256).
    PublicPem(&'a str),
}

/// Verifies a token with the `jsonwebtoken` crate, reading its header's
/// `alg` and `kid`, and returns its claims (no registered-claim
/// validation). A JWK must carry the token's `alg`; a secret takes HS512
/// tokens only.
pub fn verify_with(token: &str, key: &VerifyKey) -> Value {
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
    let header = decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let decoding = match key {
        VerifyKey::Secret(secret) => {
            assert_eq!(header.alg, Algorithm::HS512);
            DecodingKey::from_secret(secret)
        }
        VerifyKey::Jwks(text) => {
            let set: JwkSet =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JWKS ({e}): {text}"));
            let kid = header.kid.as_deref().expect("the token has no kid");
            let jwk = set
                .find(kid)
                .unwrap_or_else(|| panic!("no key {kid:?} in {text}"));
            let jwk_alg = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
            assert_eq!(jwk_alg, Some(format!("{:?}", header.alg)), "{text}");
            DecodingKey::from_jwk(jwk).unwrap()
        }
        VerifyKey::PublicPem(pem) => match header.alg {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            other => panic!("a public key cannot verify {other:?}"),
        },
    };
    let mut v = Validation::new(header.alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    decode::<Value>(token, &decoding, &v)
        .unwrap_or_else(|e| panic!("token does not verify: {e}"))
        .claims
}

/// Polls `probe` every 20 ms until it returns `Some`, and returns that; fails
/// the test naming `what` when `timeout` passes first. The one way the tests
/// wait for something to happen (a log line, a listener, a counter).
pub fn wait_until<T>(
    timeout: Duration,
    what: impl Display,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        // The wait helper's poll interval.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Seconds since the epoch now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Whether something accepts TCP connections at `addr`.
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
