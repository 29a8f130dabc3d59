//! Integration tests: ABI conformance against `abi-fixture` (one test per host-function
//! family), the direct API, and the proxy over real HTTP on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod abi;
mod lifecycle;
mod proxy;
mod util;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use test_host::{Action, Clock, Error, Host, HostBuilder, Level, LogSource, Random};
use util::{Echo, field, fixture, get, op, send};

async fn host(echo: &Echo) -> Host {
    HostBuilder::new(fixture())
        .upstream(echo.addr)
        .start()
        .await
        .unwrap()
}

mod futures_like {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::{Body, Frame};

    /// A body of `left` bytes made of repeated chunks, generated on the fly (chunked encoding).
    pub struct ChunkStream {
        pub left: usize,
        pub chunk: Bytes,
    }

    impl Body for ChunkStream {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let n = self.left.min(self.chunk.len());
            self.left -= n;
            Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
        }
    }
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_stops_accepting() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let addr = host.local_addr();
    // `/slow` answers 3 s after the upstream has seen it.
    let in_flight = tokio::spawn(send(addr, get("/slow", &[])));
    while echo.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    host.shutdown().await;
    assert_eq!(in_flight.await.unwrap().status, 200);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
