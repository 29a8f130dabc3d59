//! The client side of a connection before hyper sees it: what Envoy's HTTP/1 codec and
//! connection manager refuse or time out (SPEC section 7), so the test host answers a
//! misbehaving client as Envoy 1.40 does.
//!
//! [`Guarded`] wraps the client's TCP stream. It hands hyper one request head at a time, only
//! once the whole head has arrived and passed [`check_request`] (one httparse pass finds
//! its end and feeds the checks); it follows each body's framing
//! (`Content-Length` or chunked) to find where the next head starts. A refused head never
//! reaches hyper: the guard writes Envoy's answer itself (after any response still in flight),
//! closes the connection and lingers briefly so the answer is not lost to a reset. The same
//! guard enforces the request-head timeout (408) and the idle timeout. A connection that opens
//! with the HTTP/2 preface passes through untouched (hyper's HTTP/2 server frames it).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pub(crate) use activity::{Activity, InFlight};
use chunk::{Chunk, Fed};
pub(crate) use head::MAX_HEAD;
use head::{Framing, MAX_HEADERS, Refusal, check_request};

mod activity;
mod chunk;
pub(crate) mod head;

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a refused connection keeps reading before it closes (Envoy's
/// `delayed_close_timeout` is 1 s): unread bytes would turn the close into a reset.
const LINGER: Duration = Duration::from_secs(1);

/// The most a read puts straight into hyper's buffer: [`ReadBuf::initialize_unfilled_to`]
/// zeroes that much first (the crate has no `unsafe`), so not all of hyper's room.
const DIRECT_READ: usize = 128 << 10;

/// The limits a client connection lives under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A request head must be complete this long after its first byte.
    pub(crate) request_headers_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub(crate) idle_timeout: Duration,
    /// Client connections open at once; past it a new one is closed at once.
    pub(crate) max_connections: usize,
}

impl Default for Limits {
    /// Envoy's values in `envoy/envoy.yaml`.
    fn default() -> Self {
        Self {
            request_headers_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// What the guard is reading.
#[derive(Debug)]
enum Mode {
    /// The first bytes: HTTP/2 preface or not.
    Sniff,
    /// A request head (waiting for all of it).
    Head,
    /// `Content-Length` body bytes left.
    Body(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// Everything, unchecked (HTTP/2, or a body hyper will refuse).
    Through,
    /// Answering a refused head: `written` bytes of `answer` sent.
    Refuse { answer: Vec<u8>, written: usize },
    /// Done: hyper reads end of stream.
    Closed,
}

/// The client's stream as hyper reads it (see the module docs).
pub(crate) struct Guarded {
    io: Option<TcpStream>,
    mode: Mode,
    /// Bytes read from the client, not yet handed to hyper.
    buf: Vec<u8>,
    /// How many of `buf`'s first bytes hyper may have.
    released: usize,
    head_started: Option<Instant>,
    last_read: Instant,
    last_flush: Instant,
    timer: Pin<Box<Sleep>>,
    limits: Limits,
    activity: Arc<Activity>,
    refused: Option<Refusal>,
    read_waker: Option<Waker>,
}

impl Guarded {
    pub(crate) fn new(io: TcpStream, limits: Limits, activity: Arc<Activity>) -> Self {
        let now = Instant::now();
        Self {
            io: Some(io),
            mode: Mode::Sniff,
            buf: Vec::new(),
            released: 0,
            head_started: None,
            last_read: now,
            last_flush: now,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            limits,
            activity,
            refused: None,
            read_waker: None,
        }
    }

    fn refuse(&mut self, why: Refusal) {
        self.refused = Some(why);
        self.buf.clear();
        self.released = 0;
        self.mode = Mode::Refuse {
            answer: why.response(),
            written: 0,
        };
    }

    /// Moves the framing on over the unreleased bytes; `false` when it needs more bytes.
    fn advance(&mut self) -> bool {
        let mode = std::mem::replace(&mut self.mode, Mode::Closed);
        match self.step(mode) {
            Ok((mode, progressed)) => {
                self.mode = mode;
                progressed
            }
            Err(why) => {
                self.refuse(why);
                true
            }
        }
    }

    /// One step of [`Guarded::advance`]: the next mode, and whether anything moved.
    fn step(&mut self, mode: Mode) -> Result<(Mode, bool), Refusal> {
        let pending = &self.buf[self.released..];
        Ok(match mode {
            Mode::Sniff if pending.is_empty() => (Mode::Sniff, false),
            Mode::Sniff => {
                let n = pending.len().min(H2_PREFACE.len());
                if pending[..n] != H2_PREFACE[..n] {
                    (Mode::Head, true)
                } else if n == H2_PREFACE.len() {
                    (Mode::Through, true)
                } else {
                    self.head_started.get_or_insert_with(Instant::now);
                    (Mode::Sniff, false)
                }
            }
            Mode::Head if pending.is_empty() => (Mode::Head, false),
            Mode::Head => {
                self.head_started.get_or_insert_with(Instant::now);
                // One parse finds the head's end and gives the checks their fields.
                let mut scratch = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut scratch);
                let (len, framing) = match req.parse(pending) {
                    Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => {
                        (len, check_request(&req)?)
                    }
                    Ok(httparse::Status::Partial) if pending.len() <= MAX_HEAD => {
                        return Ok((Mode::Head, false));
                    }
                    Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
                    Err(_) => return Err(Refusal::BadRequest),
                };
                self.released += len;
                self.head_started = None;
                let next = match framing {
                    Framing::Empty => Mode::Head,
                    Framing::Length(n) => Mode::Body(n),
                    Framing::Chunked => Mode::Chunked(Chunk::start()),
                };
                (next, true)
            }
            Mode::Body(0) => (Mode::Head, true),
            Mode::Body(left) => {
                let take = left.min(pending.len() as u64);
                self.released += take as usize;
                (Mode::Body(left - take), take > 0)
            }
            Mode::Chunked(mut chunk) => match chunk.feed(pending) {
                Fed::More => {
                    let progressed = !pending.is_empty();
                    self.released = self.buf.len();
                    (Mode::Chunked(chunk), progressed)
                }
                Fed::End(n) => {
                    self.released += n;
                    (Mode::Head, true)
                }
                Fed::Broken => (Mode::Through, true),
            },
            Mode::Through => {
                let progressed = !pending.is_empty();
                self.released = self.buf.len();
                (Mode::Through, progressed)
            }
            mode @ (Mode::Refuse { .. } | Mode::Closed) => (mode, false),
        })
    }

    /// How many bytes the next read may put straight into a reader's buffer of `room`
    /// bytes: `Some` for body bytes or unchecked bytes when nothing is buffered.
    fn direct(&self, room: usize) -> Option<usize> {
        if !self.buf.is_empty() || room == 0 {
            return None;
        }
        let limit = match self.mode {
            Mode::Body(left) if left > 0 => usize::try_from(left).unwrap_or(usize::MAX),
            Mode::Through => usize::MAX,
            _ => return None,
        };
        Some(limit.min(room).min(DIRECT_READ))
    }

    /// Writes the refusal once no response is in flight; `Ready` when it is out.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.activity.idle_since(cx.waker()) {
            // Hyper flushes the last response after its body ends.
            Some(done) if self.last_flush >= done => {}
            _ => {
                self.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(());
        };
        if let Mode::Refuse { answer, written } = &mut self.mode {
            while *written < answer.len() {
                match Pin::new(&mut *io).poll_write(cx, &answer[*written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(n)) => *written += n,
                    Poll::Pending => return Poll::Pending,
                }
            }
            if Pin::new(&mut *io).poll_shutdown(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.mode = Mode::Closed;
        Poll::Ready(())
    }

    /// Arms the timer for the next deadline; `true` when a deadline has passed (the mode has
    /// changed).
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = match (&self.mode, self.head_started) {
            (Mode::Sniff | Mode::Head, Some(started)) => {
                Some((started + self.limits.request_headers_timeout, true))
            }
            (Mode::Sniff | Mode::Head | Mode::Through, None) => self
                .activity
                .idle_since(cx.waker())
                .map(|done| (done.max(self.last_read) + self.limits.idle_timeout, false)),
            _ => None,
        };
        let Some((at, head)) = deadline else {
            return false;
        };
        if Instant::now() < at {
            self.timer.as_mut().reset(at);
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
        if head {
            self.refuse(Refusal::Timeout);
        } else {
            self.mode = Mode::Closed;
        }
        true
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.released > 0 {
                let n = this.released.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.drain(..n);
                this.released -= n;
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Closed => return Poll::Ready(Ok(())),
                Mode::Refuse { .. } => {
                    if this.poll_answer(cx).is_pending() {
                        return Poll::Pending;
                    }
                    continue;
                }
                _ => {}
            }
            if this.advance() {
                continue;
            }
            let direct = this.direct(out.remaining());
            let Some(io) = this.io.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            // Body bytes with nothing buffered go straight into hyper's buffer: no copy
            // here, and reads as large as the socket has (the upstream then gets large
            // writes). Other bytes (a head, a chunked body) go to `buf`, to be checked.
            let read = match direct {
                Some(limit) => {
                    let mut rb = ReadBuf::new(out.initialize_unfilled_to(limit));
                    let read = Pin::new(io)
                        .poll_read(cx, &mut rb)
                        .map_ok(|()| rb.filled().len());
                    if let Poll::Ready(Ok(n)) = read {
                        out.advance(n);
                    }
                    read
                }
                None => {
                    let mut chunk = [0u8; 16 << 10];
                    let mut rb = ReadBuf::new(&mut chunk);
                    let read = Pin::new(io).poll_read(cx, &mut rb);
                    this.buf.extend_from_slice(rb.filled());
                    read.map_ok(|()| rb.filled().len())
                }
            };
            match read {
                Poll::Ready(Ok(0)) => {
                    // End of stream: whatever is left goes to hyper, which judges it.
                    this.released = this.buf.len();
                    if this.released == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    this.mode = Mode::Through;
                }
                Poll::Ready(Ok(n)) => {
                    this.last_read = Instant::now();
                    if direct.is_some() {
                        if let Mode::Body(left) = &mut this.mode {
                            *left -= n as u64;
                        }
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if this.poll_deadlines(cx) {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    /// Vectored, so hyper queues a body's frames for one `writev` instead of copying them
    /// into one buffer.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        };
        if r.is_ready() {
            self.last_flush = Instant::now();
            if let Some(w) = self.read_waker.take() {
                w.wake();
            }
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl Drop for Guarded {
    /// A refused connection reads on for a moment before it closes, so what the client still
    /// sends does not turn the close into a reset that destroys the answer.
    fn drop(&mut self) {
        let (Some(mut io), Some(_)) = (self.io.take(), self.refused) else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut sink = [0u8; 4096];
                let _ = tokio::time::timeout(LINGER, async {
                    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
            });
        }
    }
}
