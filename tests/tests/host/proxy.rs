//! The proxy's HTTP behaviour: hop-by-hop headers, HTTP/1.0, keep-alive, upstream failures,
//! bodies, shutdown.

use super::*;

// ---- proxy behaviour ----

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded_either_way() {
    let echo = scripted();
    let host = host(&echo).await;
    let req = get(
        "/hop",
        &[
            ("connection", "x-hop, keep-alive"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ],
    );
    let reply = send(host.local_addr(), req).await;
    let seen = echo.last();
    for h in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
    ] {
        assert_eq!(seen.one(h), None, "{h} was forwarded");
    }
    assert_ne!(seen.one("connection").as_deref(), Some("x-hop, keep-alive"));
    assert_eq!(seen.one("x-kept").as_deref(), Some("1"));
    assert_eq!(reply.header("x-up-hop"), None);
    assert_eq!(reply.header("keep-alive"), None);
    assert_eq!(reply.header("x-echo").as_deref(), Some("1"));
}

#[tokio::test]
async fn http10_request_is_served_and_closed() {
    let echo = scripted();
    let host = host(&echo).await;
    let out = util::raw(
        host.local_addr(),
        "GET /old HTTP/1.0\r\nHost: proxy.test\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    assert!(echo.last().one("x-fixture-context").is_some());
    assert_eq!(echo.last().path, "/old");
    assert_eq!(echo.last().version, 1, "HTTP/1.1 upstream");
}

#[tokio::test]
async fn keep_alive_is_per_link() {
    let echo = scripted();
    let host = host(&echo).await;
    let mut sender = http1(host.local_addr()).await;
    for i in 0..3 {
        let resp = sender
            .send_request(get(&format!("/k{i}"), &[]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        sender.ready().await.unwrap();
    }
    assert_eq!(echo.seen().len(), 3);
    assert_eq!(echo.connections(), 1);
}

#[tokio::test]
async fn upstream_down_is_503() {
    let refusing = jwt_proxy_tests::HeldPort::new();
    let host = HostBuilder::new(fixture())
        .upstream(refusing.addr())
        .start()
        .await
        .unwrap();
    let reply = send(host.local_addr(), get("/", &[])).await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("connection failure"), "{}", reply.body);
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let echo = scripted();
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr())
        .upstream_timeout(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let reply = send(host.local_addr(), get("/slow", &[])).await;
    assert_eq!(reply.status, 504);
}

#[tokio::test]
async fn upstream_closing_before_any_byte_is_503() {
    // Envoy: "upstream connect error or disconnect/reset before headers" is 503 when no byte
    // of response arrived (a broken or garbled response stays 502).
    let echo = scripted();
    let host = host(&echo).await;
    assert_eq!(
        send(host.local_addr(), get("/reset", &[])).await.status,
        503
    );
    assert_eq!(send(host.local_addr(), get("/fine", &[])).await.status, 200);
}

#[tokio::test]
async fn upstream_may_be_a_hostname() {
    let echo = scripted();
    let host = HostBuilder::new(fixture())
        .upstream(format!("localhost:{}", echo.addr().port()))
        .start()
        .await
        .unwrap();
    assert_eq!(send(host.local_addr(), get("/n", &[])).await.status, 200);
}

#[tokio::test]
async fn request_body_callbacks_see_and_rewrite_each_chunk() {
    let echo = scripted();
    let host = host(&echo).await;
    let req = Request::post("/upper")
        .header("host", "proxy.test")
        .header("x-fixture-op", "body-upper")
        .body(Full::new(Bytes::from_static(b"hello body")))
        .unwrap();
    let reply = send(host.local_addr(), req).await;
    assert_eq!(reply.body, "HELLO BODY");
    assert_eq!(echo.last().body, b"HELLO BODY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_post_streams_through() {
    use futures_like::ChunkStream;
    // The echo upstream streams the body back as it reads it.
    let echo = util::echo();
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr())
        .start()
        .await
        .unwrap();
    const MIB: usize = 1024 * 1024;
    let total = 100 * MIB;
    let mut sender = http1(host.local_addr()).await;
    let req = Request::post("/large")
        .header("host", "proxy.test")
        .body(ChunkStream {
            left: total,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        })
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Counted as it streams back, never held whole.
    let mut body = resp.into_body();
    let mut echoed = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(data.iter().all(|&b| b == b'x'));
            echoed += data.len();
        }
    }
    // What the upstream received, byte for byte, is what it echoed.
    assert_eq!(echoed, total);
    assert_eq!(echo.last().uri, "/large");
}

/// Worker round trips ([`Host::worker_round_trips`]) of `posts` POSTs one after the other
/// through `wasm`, each with a body of `size` bytes streamed in 16 KiB chunks and echoed
/// back whole; the host is stopped after them, so every request's end has run. Stopping
/// costs one job on the worker and one on the main thread, not counted here.
async fn round_trips(wasm: std::path::PathBuf, config: String, posts: u64, size: usize) -> u64 {
    use futures_like::ChunkStream;
    let echo = util::echo();
    let mut host = HostBuilder::new(wasm)
        .plugin_config(config.into_bytes())
        .upstream(echo.addr())
        .workers(1)
        .start()
        .await
        .unwrap();
    let before = host.worker_round_trips();
    for _ in 0..posts {
        let mut sender = http1(host.local_addr()).await;
        let req = Request::post("/round-trips")
            .header("host", "proxy.test")
            .body(ChunkStream {
                left: size,
                chunk: Bytes::from(vec![b'x'; 16 * 1024]),
            })
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body.len(), size);
    }
    host.stop().await;
    host.worker_round_trips() - before - 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_through_a_headers_only_filter_costs_three_worker_round_trips() {
    let jwt = || jwt_proxy_tests::wasm("jwt_filter");
    let config = jwt_proxy_tests::default_config;
    // Request headers, response headers, log + done: the bodies never visit the worker,
    // whatever their size.
    assert_eq!(round_trips(jwt(), config(), 3, 10).await, 3 * 3);
    assert_eq!(round_trips(jwt(), config(), 2, 1 << 20).await, 2 * 3);
    // A module that exports the body callbacks still gets them, both ways: request headers,
    // the body's data then HTTP/1's empty end-of-stream call, response headers, the same two
    // body calls, log + done.
    assert_eq!(round_trips(fixture(), String::new(), 3, 10).await, 3 * 7);
}

/// An HTTP/1.1 client connection to `addr`, its connection driven by a task.
async fn http1<B>(addr: std::net::SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}
