//! The scriptable upstream: an HTTP/1.1 server whose answer to each request
//! is chosen by a script from the request head: echo it, send fixed bytes,
//! stall, reset, send part of a response and stop, or hold the answer until
//! the test releases it. Records every request head, as soon as it is read
//! and again with its body, and counts the connections accepted. In-process on a
//! runtime of its own (so tests can use blocking clients), on `127.0.0.1`,
//! stopped on drop.
//!
//! [`crate::Upstream`] (the product's echo server, recording [`crate::Seen`])
//! is the upstream for well-behaved traffic; this one is for the answers a
//! real server would not give.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request as the scripted upstream read it.
#[derive(Debug, Clone)]
pub struct Head {
    /// Request method.
    pub method: String,
    /// Request target, query included.
    pub path: String,
    /// The minor HTTP version: `HTTP/1.<version>`.
    pub version: u8,
    /// Header lines as received, in order.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` or chunked framing; trailers dropped).
    pub body: Vec<u8>,
}

impl Head {
    /// Every value of header `name` (any letter case).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The one value of header `name`, if any.
    pub fn one(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} arrived {} times", all.len());
        all.into_iter().next()
    }

    /// The target without its query.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

/// What the scripted upstream does with one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// 200 with the request's body and content type.
    Echo,
    /// These bytes; the connection stays open for the next request.
    Bytes(&'static [u8]),
    /// These bytes, then close the connection (FIN).
    Close(&'static [u8]),
    /// Never answer: hold the connection until the proxy closes it.
    Stall,
    /// Reset the connection (RST) without a byte.
    Reset,
    /// These bytes, 50 ms, then reset the connection.
    ResetAfter(&'static [u8]),
    /// Hold the answer until [`Scripted::release`], then send these bytes;
    /// the connection stays open.
    Held(&'static [u8]),
    /// `first` at once, `rest` once [`Scripted::release`] is called; the
    /// connection stays open.
    Part {
        /// Sent at once.
        first: &'static [u8],
        /// Sent once released.
        rest: &'static [u8],
    },
}

type Script = dyn Fn(&Head) -> Reply + Send + Sync;

/// The running upstream.
pub struct Scripted {
    addr: SocketAddr,
    records: Records,
    /// How many times [`Scripted::release`] was called.
    release: tokio::sync::watch::Sender<u64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Scripted {
    /// Starts one on `127.0.0.1:0` answering each request with `script(head)`.
    pub fn start(script: impl Fn(&Head) -> Reply + Send + Sync + 'static) -> Scripted {
        Self::serving(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    /// The same on a listener the test already holds (e.g. from
    /// [`crate::HeldPort::listen`], so the port was never free).
    pub fn serving(
        listener: std::net::TcpListener,
        script: impl Fn(&Head) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        Self::paced(listener, Duration::ZERO, script)
    }

    /// The same, accepting at most one connection per `pace`: with a short
    /// accept queue, a burst of connects overflows it on any machine,
    /// however fast the proxy and however idle the CPU.
    pub fn paced(
        listener: std::net::TcpListener,
        pace: Duration,
        script: impl Fn(&Head) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        let addr = listener.local_addr().unwrap();
        let records = Records::default();
        let record = records.clone();
        let script: Arc<Script> = Arc::new(script);
        let (release, released) = tokio::sync::watch::channel(0);
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *record.connections.lock().unwrap() += 1;
                let on = Served {
                    script: Arc::clone(&script),
                    record: record.clone(),
                    released: released.clone(),
                };
                tokio::spawn(serve(stream, on));
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
        });
        Scripted {
            addr,
            records,
            release,
            runtime: Some(runtime),
        }
    }

    /// One that answers every request with `bytes`.
    pub fn answering(bytes: &'static [u8]) -> Scripted {
        Self::start(move |_| Reply::Bytes(bytes))
    }

    /// One that never answers.
    pub fn stalling() -> Scripted {
        Self::start(|_| Reply::Stall)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, with its body.
    pub fn seen(&self) -> Vec<Head> {
        self.records.seen.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Head {
        self.seen().pop().expect("nothing reached the upstream")
    }

    /// Every request head received so far, recorded before its body was read (`body` empty).
    pub fn arrived(&self) -> Vec<Head> {
        self.records.arrived.lock().unwrap().clone()
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        *self.records.connections.lock().unwrap()
    }

    /// Sends the held answers ([`Reply::Held`], [`Reply::Part`]) of the
    /// requests read so far; later ones wait for the next release.
    pub fn release(&self) {
        self.release.send_modify(|n| *n += 1);
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Where the requests read are recorded: heads on arrival, and whole.
#[derive(Clone, Default)]
struct Records {
    seen: Arc<Mutex<Vec<Head>>>,
    arrived: Arc<Mutex<Vec<Head>>>,
    connections: Arc<Mutex<usize>>,
}

/// What each connection's task shares with the server.
struct Served {
    script: Arc<Script>,
    record: Records,
    released: tokio::sync::watch::Receiver<u64>,
}

/// Reads one request (head and `Content-Length` body) from `stream`, with
/// `buf` holding what was read past the previous one; its head goes to
/// `arrived` before the body is read.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    arrived: &Mutex<Vec<Head>>,
) -> Option<Head> {
    let mut chunk = [0u8; 8192];
    let (mut head, head_len, body_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let head = Head {
                method: req.method.unwrap_or("").to_owned(),
                path: req.path.unwrap_or("").to_owned(),
                version: req.version.unwrap_or(1),
                headers,
                body: Vec::new(),
            };
            let body_len = head
                .all("content-length")
                .first()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            break (head, len, body_len);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    arrived.lock().unwrap().push(head.clone());
    buf.drain(..head_len);
    let chunked = head
        .all("transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        head.body = read_chunked(stream, buf).await?;
        return Some(head);
    }
    while buf.len() < body_len {
        if !read_more(stream, buf).await {
            return None;
        }
    }
    head.body = buf.drain(..body_len).collect();
    Some(head)
}

/// Reads more of `stream` into `buf`; false at its end or on an error.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Reads a chunked body (from `buf`, then `stream`), trailers skipped.
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let (used, size) = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => break (used, size as usize),
                Ok(httparse::Status::Partial) if read_more(stream, buf).await => {}
                _ => return None,
            }
        };
        if size == 0 {
            buf.drain(..used);
            // Trailers (none or some), up to the empty line.
            loop {
                if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                    let line_empty = end == 0;
                    buf.drain(..end + 2);
                    if line_empty {
                        return Some(body);
                    }
                } else if !read_more(stream, buf).await {
                    return None;
                }
            }
        }
        while buf.len() < used + size + 2 {
            if !read_more(stream, buf).await {
                return None;
            }
        }
        body.extend_from_slice(&buf[used..used + size]);
        buf.drain(..used + size + 2);
    }
}

async fn serve(mut stream: TcpStream, on: Served) {
    let Served {
        script,
        record,
        mut released,
    } = on;
    let mut buf = Vec::new();
    let reset = |s: TcpStream| {
        let _ = s.set_zero_linger();
        drop(s);
    };
    loop {
        // Releases before the request is recorded do not count for it.
        let held = *released.borrow();
        let Some(head) = read_request(&mut stream, &mut buf, &record.arrived).await else {
            return;
        };
        let reply = script(&head);
        record.seen.lock().unwrap().push(head.clone());
        let sent = match reply {
            Reply::Echo => {
                let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n", head.body.len());
                if let Some(ct) = head.all("content-type").first() {
                    out.push_str(&format!("Content-Type: {ct}\r\n"));
                }
                out.push_str("\r\n");
                let mut out = out.into_bytes();
                out.extend_from_slice(&head.body);
                stream.write_all(&out).await
            }
            Reply::Bytes(bytes) => stream.write_all(bytes).await,
            Reply::Close(bytes) => {
                let _ = stream.write_all(bytes).await;
                return;
            }
            Reply::Stall => {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Reply::Reset => return reset(stream),
            Reply::ResetAfter(bytes) => {
                let _ = stream.write_all(bytes).await;
                let _ = stream.flush().await;
                // Holds the connection a moment so the bytes reach the proxy
                // before the reset (not a wait for an event).
                tokio::time::sleep(Duration::from_millis(50)).await;
                return reset(stream);
            }
            Reply::Held(bytes) => {
                let _ = released.wait_for(|n| *n > held).await;
                stream.write_all(bytes).await
            }
            Reply::Part { first, rest } => {
                let _ = stream.write_all(first).await;
                let _ = stream.flush().await;
                let _ = released.wait_for(|n| *n > held).await;
                stream.write_all(rest).await
            }
        };
        if sent.is_err() {
            return;
        }
    }
}
