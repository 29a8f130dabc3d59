//! A small blocking HTTP/1.x client that writes exactly the bytes it is given
//! and parses exactly what comes back: for header letter case, duplicate
//! headers, HTTP/1.0 and connection reuse, which a full client hides.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Status code.
    pub status: u16,
    /// Headers in wire order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl Response {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// How long any read may wait.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

impl Conn {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// When the connection fails.
    pub fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes `bytes` as they are.
    ///
    /// # Errors
    /// When the write fails.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Waits until the bytes received so far end with `tail` (kept for
    /// [`Conn::read_response`]): that much of a response has arrived.
    ///
    /// # Errors
    /// When the connection closes or times out first.
    pub fn received(&mut self, tail: &[u8]) -> std::io::Result<()> {
        while !self.buf.ends_with(tail) {
            if self.fill()? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
        }
        Ok(())
    }

    /// Reads one response (`head`: it answers a HEAD request, so no body).
    ///
    /// # Errors
    /// When the connection closes or times out before a whole response.
    pub fn read_response(&mut self, head: bool) -> std::io::Result<Response> {
        let eof = || {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed mid-response",
            )
        };
        let (mut resp, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let resp = Response {
                        version: format!("HTTP/1.{}", parsed.version.unwrap_or(1)),
                        status: parsed.code.unwrap_or(0),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_ascii_lowercase(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        body: Vec::new(),
                    };
                    break (resp, len);
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill()? == 0 {
                        return Err(eof());
                    }
                }
                Err(e) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            }
        };
        self.buf.drain(..head_len);
        if head || resp.status / 100 == 1 || resp.status == 204 || resp.status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if self.fill()? == 0 {
                        return Err(eof());
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // Trailers (none expected) end with an empty line.
                    loop {
                        if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                            let empty = i == 0;
                            self.buf.drain(..i + 2);
                            if empty {
                                return Ok(resp);
                            }
                        } else if self.fill()? == 0 {
                            return Err(eof());
                        }
                    }
                }
                while self.buf.len() < size + 2 {
                    if self.fill()? == 0 {
                        return Err(eof());
                    }
                }
                resp.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        }
        if let Some(len) = resp
            .header("content-length")
            .and_then(|l| l.trim().parse::<usize>().ok())
        {
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(eof());
                }
            }
            resp.body = self.buf.drain(..len).collect();
            return Ok(resp);
        }
        // Delimited by the end of the connection.
        while self.fill()? > 0 {}
        resp.body = std::mem::take(&mut self.buf);
        Ok(resp)
    }

    /// Whether the peer has closed (or reset) the connection (waits up to
    /// `wait` for it).
    pub fn closed_by_peer(&mut self, wait: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(wait));
        let closed = match self.fill() {
            Ok(n) => n == 0,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
        };
        let _ = self.stream.set_read_timeout(Some(READ_TIMEOUT));
        closed
    }
}

/// Sends `request` on a new connection and reads one response.
///
/// # Panics
/// When the exchange fails; tests want the failure.
#[allow(clippy::unwrap_used, clippy::panic)]
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut conn = Conn::connect(addr).unwrap();
    conn.send(request).unwrap();
    let head = request.starts_with(b"HEAD ");
    conn.read_response(head)
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(request)))
}

/// `GET path` with `Connection: close`; `None` when nothing answers.
pub fn blocking_get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut conn = Conn::connect(addr).ok()?;
    conn.send(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let resp = conn.read_response(false).ok()?;
    Some((resp.status, resp.body))
}

/// A POST with `body` and the given extra header lines (each `Name: value`).
pub fn post(path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A request without a body.
pub fn bare(method: &str, path: &str, headers: &[&str]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}
