//! The test host on its own: ABI conformance against `abi-fixture` (one test per
//! host-function family), the direct API, and the proxy over real HTTP on 127.0.0.1
//! (moved here from `test-host/tests/host` to share `jwt_proxy_tests`' helpers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod abi;
mod lifecycle;
mod proxy;
mod util;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jwt_proxy_tests::scripted::Scripted;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use test_host::{Action, Clock, Error, Host, HostBuilder, Level, LogSource, Random};
use util::{field, fixture, get, op, scripted, send, wait};

async fn host(echo: &Scripted) -> Host {
    HostBuilder::new(fixture())
        .upstream(echo.addr())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish_and_stops_accepting() {
    let echo = scripted();
    let host = host(&echo).await;
    let addr = host.local_addr();
    // `/slow` is answered once the upstream is released.
    let in_flight = tokio::spawn(send(addr, get("/slow", &[])));
    wait("the upstream saw /slow", || {
        (!echo.seen().is_empty()).then_some(())
    });
    let shutdown = tokio::spawn(host.shutdown());
    // Stops accepting while the request is still in flight.
    wait("the listener closed", || {
        (!jwt_proxy_tests::listening(addr)).then_some(())
    });
    assert!(!in_flight.is_finished());
    echo.release();
    assert_eq!(in_flight.await.unwrap().status, 200);
    shutdown.await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
