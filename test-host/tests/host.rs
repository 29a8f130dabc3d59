//! Integration tests: ABI conformance against `abi-fixture` (one test per host-function
//! family), the direct API, and the proxy over real HTTP on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

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

// ---- loading and lifecycle ----

/// A module importing `env.proxy_bogus` (hand-assembled wasm).
const BOGUS_IMPORT: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x02, 0x13, 0x01, 0x03, b'e', b'n', b'v', 0x0b, b'p', b'r', b'o', b'x', b'y', b'_', b'b', b'o',
    b'g', b'u', b's', 0x00, 0x00, // import env.proxy_bogus
];

#[test]
fn unknown_import_is_reported_by_name() {
    let err = HostBuilder::new(BOGUS_IMPORT).instantiate().err().unwrap();
    assert!(matches!(err, Error::UnknownImport { .. }), "{err}");
    assert!(err.to_string().contains("env.proxy_bogus"), "{err}");
}

#[test]
fn every_sdk_import_links() {
    // The fixture is built with the SDK; loading it links every import it has.
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    assert!(
        plugin
            .logs()
            .iter()
            .any(|r| r.message.contains("configured with 0 bytes"))
    );
}

#[test]
fn rejected_configuration_refuses_to_start_with_the_filter_reason() {
    let err = HostBuilder::new(fixture())
        .plugin_config("reject")
        .instantiate()
        .err()
        .unwrap();
    assert!(matches!(err, Error::ConfigureFailed { .. }), "{err}");
    assert!(err.to_string().contains("field `mode` is invalid"), "{err}");
}

#[test]
fn failed_vm_start_refuses_to_start() {
    let err = HostBuilder::new(fixture())
        .vm_config("fail")
        .instantiate()
        .err()
        .unwrap();
    assert!(matches!(err, Error::VmStartFailed { .. }), "{err}");
}

#[tokio::test]
async fn proxy_refuses_to_start_on_rejected_configuration() {
    let echo = Echo::start().await;
    let err = HostBuilder::new(fixture())
        .plugin_config("reject")
        .upstream(echo.addr)
        .workers(2)
        .start()
        .await;
    assert!(matches!(err, Err(Error::ConfigureFailed { .. })));
}

// ---- direct API ----

#[test]
fn direct_api_runs_callbacks_and_reads_back_state() {
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    let ctx = plugin.create_http_context().unwrap();
    let v = plugin
        .on_request_headers(
            ctx,
            &[
                (":method", "GET"),
                (":path", "/a?b"),
                ("x-fixture-op", "headers"),
                ("X-Replace", "1"),
                ("x-replace", "2"),
                ("x-remove", "r"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(v.action, Action::Continue);
    assert_eq!(v.local_reply, None);
    assert_eq!(v.headers.get_str("x-added"), Some("1"));
    assert_eq!(v.headers.get_all("x-replace"), vec![b"new".as_slice()]);
    assert_eq!(v.headers.get("x-remove"), None);
    assert_eq!(v.headers.get_str("x-seen-path"), Some("/a?b"));
    assert_eq!(v.headers.get_str("x-missing-is-none"), Some("true"));
    assert_eq!(plugin.request_headers(ctx).unwrap(), v.headers);
    let r = plugin
        .on_response_headers(ctx, &[(":status", "201")], true)
        .unwrap();
    assert_eq!(r.headers.get_str("x-fixture-response"), Some("1"));
    assert_eq!(r.headers.get_str("x-response-code"), Some("201"));
    plugin.on_log(ctx).unwrap();
    plugin.on_done(ctx).unwrap();
    assert!(
        plugin
            .logs()
            .iter()
            .any(|l| l.level == Level::Info && l.message.contains("status=201"))
    );
    assert!(matches!(plugin.on_log(ctx), Err(Error::UnknownContext(_))));
    assert_eq!(plugin.metric("fixture_requests_total"), Some(1));
}

#[test]
fn direct_api_local_reply() {
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    let ctx = plugin.create_http_context().unwrap();
    let v = plugin
        .on_request_headers(ctx, &[("x-fixture-op", "local")], true)
        .unwrap();
    assert_eq!(v.action, Action::Pause);
    let reply = v.local_reply.unwrap();
    assert_eq!(reply.status, 418);
    assert_eq!(reply.body, b"teapot");
    assert_eq!(reply.headers.get_str("x-local"), Some("1"));
}

#[test]
fn direct_api_body_buffers_are_readable_and_writable() {
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    let ctx = plugin.create_http_context().unwrap();
    plugin
        .on_request_headers(
            ctx,
            &[("x-fixture-op", "body-upper"), ("content-length", "6")],
            false,
        )
        .unwrap();
    let v = plugin.on_request_body(ctx, b"abc", false).unwrap();
    assert_eq!(v.body.as_deref(), Some(b"ABC".as_slice()));
    let v = plugin.on_request_body(ctx, b"def", true).unwrap();
    assert_eq!(v.body.as_deref(), Some(b"DEF".as_slice()));
    assert_eq!(
        plugin.request_headers(ctx).unwrap().get("content-length"),
        None
    );
}

#[test]
fn direct_api_trap_reloads_the_vm() {
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    let ctx = plugin.create_http_context().unwrap();
    let err = plugin
        .on_request_headers(ctx, &[("x-fixture-op", "panic")], true)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Trap { .. }), "{err}");
    assert!(matches!(plugin.on_log(ctx), Err(Error::ContextLost(_))));
    let ctx = plugin.create_http_context().unwrap();
    assert!(plugin.on_request_headers(ctx, &[], true).is_ok());
}

// ---- ABI families through the proxy ----

#[tokio::test]
async fn header_map_functions() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let req = get(
        "/h?q=1",
        &[
            ("x-fixture-op", "headers"),
            ("x-replace", "a"),
            ("X-Replace", "b"),
            ("x-remove", "gone"),
        ],
    );
    let reply = send(host.local_addr(), req).await;
    assert_eq!(reply.status, 200);
    let seen = echo.last();
    assert_eq!(seen.header("x-added").as_deref(), Some("1"));
    assert_eq!(seen.headers.get_all("x-replace").iter().count(), 1);
    assert_eq!(seen.header("x-replace").as_deref(), Some("new"));
    assert_eq!(seen.header("x-remove"), None);
    assert_eq!(seen.header("x-seen-path").as_deref(), Some("/h?q=1"));
    assert_eq!(seen.header("host").as_deref(), Some("proxy.test"));
    assert_eq!(seen.path, "/h?q=1");
    assert_eq!(reply.header("x-fixture-response").as_deref(), Some("1"));
    assert_eq!(reply.header("x-response-code").as_deref(), Some("200"));
    assert_eq!(reply.header("x-echo").as_deref(), Some("1"));
}

#[tokio::test]
async fn local_response_is_sent_and_never_forwarded() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let reply = send(host.local_addr(), op("local")).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.body, "teapot");
    assert_eq!(reply.header("x-local").as_deref(), Some("1"));
    // Envoy runs the response callbacks on local replies too.
    assert_eq!(reply.header("x-fixture-response").as_deref(), Some("1"));
    assert!(echo.seen().is_empty());
}

#[tokio::test]
async fn shared_data_missing_key_is_not_found() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let reply = send(host.local_addr(), op("shared-missing")).await;
    assert_eq!(field(&reply.body, "value"), "None");
    assert_eq!(field(&reply.body, "cas"), "None");
}

#[tokio::test]
async fn shared_data_cas_mismatch() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let reply = send(host.local_addr(), op("shared-cas")).await;
    let b = &reply.body;
    assert_eq!(field(b, "first"), "Ok(())");
    assert_eq!(field(b, "cas_nonzero"), "true");
    assert_eq!(field(b, "stale"), "Err(CasMismatch)");
    assert_eq!(field(b, "fresh"), "Ok(())");
    assert_eq!(field(b, "again"), "Err(CasMismatch)");
    assert_eq!(field(b, "value"), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_data_and_metrics_are_exact_across_workers() {
    let echo = Echo::start().await;
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr)
        .workers(3)
        .start()
        .await
        .unwrap();
    let addr = host.local_addr();
    let tasks: Vec<_> = (0..30)
        .map(|_| tokio::spawn(async move { send(addr, op("shared-counter")).await.status }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(host.shared_data("hits"), Some(b"30".to_vec()));
    assert_eq!(host.metric("fixture_requests_total"), Some(30));
}

#[tokio::test]
async fn metrics_counter_gauge_histogram_and_unknown_id() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let reply = send(host.local_addr(), op("metrics")).await;
    let b = &reply.body;
    assert_eq!(field(b, "inc"), "Ok(())");
    assert_eq!(field(b, "negative_counter_increment"), "Err(BadArgument)");
    assert_eq!(field(b, "counter"), "Ok(3)");
    assert_eq!(field(b, "gauge"), "Ok(6)");
    assert_eq!(field(b, "histogram_record"), "Ok(())");
    assert_eq!(field(b, "histogram_get"), "Err(BadArgument)");
    assert_eq!(field(b, "unknown_get"), "Err(NotFound)");
    assert_eq!(field(b, "unknown_increment"), "Err(NotFound)");
    assert_eq!(field(b, "unknown_record"), "Err(NotFound)");
    assert_eq!(host.metric("fixture_ops"), Some(3));
    assert_eq!(host.metric("fixture_gauge"), Some(6));
    assert_eq!(host.histogram("fixture_histogram"), Some(vec![42]));
    assert_eq!(host.metric("no_such_metric"), None);
}

#[tokio::test]
async fn properties() {
    let echo = Echo::start().await;
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr)
        .plugin_name("jwt")
        .root_id("root-1")
        .start()
        .await
        .unwrap();
    let reply = send(
        host.local_addr(),
        get("/p/x?y=1", &[("x-fixture-op", "properties")]),
    )
    .await;
    let b = &reply.body;
    assert_eq!(field(b, "request.path"), "/p/x?y=1");
    assert_eq!(field(b, "request.url_path"), "/p/x");
    assert_eq!(field(b, "request.query"), "y=1");
    assert_eq!(field(b, "request.host"), "proxy.test");
    assert_eq!(field(b, "request.method"), "GET");
    assert_eq!(field(b, "request.scheme"), "http");
    assert_eq!(field(b, "request.protocol"), "HTTP/1.1");
    assert_eq!(field(b, "request.id").len(), 36);
    assert!(field(b, "source.address").starts_with("127.0.0.1:"));
    assert_eq!(field(b, "plugin_name"), "jwt");
    assert_eq!(field(b, "plugin_root_id"), "root-1");
    assert_eq!(field(b, "no.such.property"), "<none>");
    assert_eq!(field(b, "fixture.mark"), "set");
    // response.code (8-byte little-endian) in the response callback, for the local reply.
    assert_eq!(reply.header("x-response-code").as_deref(), Some("200"));
    // proxy_on_log runs once the response is sent.
    util::eventually(|| {
        host.logs()
            .iter()
            .any(|l| l.message.contains("op=properties status=200"))
    })
    .await;
}

#[tokio::test]
async fn wasi_random_clock_environ_and_stdio() {
    let echo = Echo::start().await;
    let pinned = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let start = |seed| {
        HostBuilder::new(fixture())
            .upstream(echo.addr)
            .clock(Clock::Pinned(pinned))
            .random(Random::Seeded(seed))
            .env("FIXTURE_ENV", "hello")
            .start()
    };
    let (a, b, c) = (
        start(7).await.unwrap(),
        start(7).await.unwrap(),
        start(8).await.unwrap(),
    );
    let ra = send(a.local_addr(), op("wasi")).await.body;
    let rb = send(b.local_addr(), op("wasi")).await.body;
    let rc = send(c.local_addr(), op("wasi")).await.body;
    assert_eq!(field(&ra, "random").len(), 32);
    assert_eq!(field(&ra, "random"), field(&rb, "random"));
    assert_ne!(field(&ra, "random"), field(&rc, "random"));
    assert_eq!(field(&ra, "wasi_wall_secs"), "1700000000");
    assert_eq!(field(&ra, "proxy_time_secs"), "1700000000");
    assert_eq!(field(&ra, "monotonic_ok"), "true");
    assert_eq!(field(&ra, "env"), "hello");
    let logs = a.logs();
    assert!(logs.iter().any(|l| l.source == LogSource::Stdout
        && l.level == Level::Info
        && l.message == "fixture stdout line"));
    assert!(logs.iter().any(|l| l.source == LogSource::Stderr
        && l.level == Level::Error
        && l.message == "fixture stderr line"));
}

#[tokio::test]
async fn wasi_os_random_differs_between_hosts() {
    let echo = Echo::start().await;
    let a = host(&echo).await;
    let b = host(&echo).await;
    let ra = send(a.local_addr(), op("wasi")).await.body;
    let rb = send(b.local_addr(), op("wasi")).await.body;
    assert_ne!(field(&ra, "random"), field(&rb, "random"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let wall: u64 = field(&ra, "wasi_wall_secs").parse().unwrap();
    assert!(wall.abs_diff(now) < 60);
}

#[tokio::test]
async fn log_levels_are_filtered_and_reported() {
    let echo = Echo::start().await;
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr)
        .log_level(Level::Warn)
        .start()
        .await
        .unwrap();
    let reply = send(host.local_addr(), op("log")).await;
    assert_eq!(field(&reply.body, "log_level"), "3");
    let levels: Vec<Level> = host
        .logs()
        .into_iter()
        .filter(|l| l.source == LogSource::Filter && l.message.starts_with("fixture level"))
        .map(|l| l.level)
        .collect();
    assert_eq!(levels, vec![Level::Warn, Level::Error, Level::Critical]);
}

#[tokio::test]
async fn bad_guest_pointer_traps_503_and_the_host_keeps_serving() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let reply = send(host.local_addr(), op("bad-pointer")).await;
    assert_eq!(reply.status, 503);
    assert!(echo.seen().is_empty());
    assert!(host.logs().iter().any(|l| l.level == Level::Error
        && l.source == LogSource::Host
        && l.message.contains("outside guest memory")));
    let reply = send(host.local_addr(), get("/after", &[])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(echo.last().path, "/after");
}

#[tokio::test]
async fn guest_panic_is_503_logged_and_the_vm_is_reloaded() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    assert_eq!(send(host.local_addr(), op("panic")).await.status, 503);
    let logs = host.logs();
    assert!(
        logs.iter()
            .any(|l| l.level == Level::Critical && l.message.contains("fixture panic"))
    );
    assert!(
        logs.iter()
            .any(|l| l.level == Level::Error && l.message.contains("reloading the VM"))
    );
    assert_eq!(send(host.local_addr(), get("/next", &[])).await.status, 200);
    assert!(
        echo.seen()
            .iter()
            .all(|s| s.header("x-fixture-op").is_none())
    );
}

#[tokio::test]
async fn paused_request_is_held_until_the_filter_resumes_it() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let reply = send(host.local_addr(), op("pause")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(echo.last().header("x-fixture-op").as_deref(), Some("pause"));
}

#[tokio::test]
async fn paused_request_that_is_never_resumed_gets_500_and_is_not_forwarded() {
    let echo = Echo::start().await;
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr)
        .resume_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    assert_eq!(
        send(host.local_addr(), op("pause-forever")).await.status,
        500
    );
    assert!(echo.seen().is_empty());
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    assert!(
        util::try_send(host.local_addr(), op("reset"))
            .await
            .is_err()
    );
    assert!(echo.seen().is_empty());
}

// ---- proxy behaviour ----

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded_either_way() {
    let echo = Echo::start().await;
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
        assert_eq!(seen.header(h), None, "{h} was forwarded");
    }
    assert_ne!(
        seen.header("connection").as_deref(),
        Some("x-hop, keep-alive")
    );
    assert_eq!(seen.header("x-kept").as_deref(), Some("1"));
    assert_eq!(reply.header("x-up-hop"), None);
    assert_eq!(reply.header("keep-alive"), None);
    assert_eq!(reply.header("x-echo").as_deref(), Some("1"));
}

#[tokio::test]
async fn http10_request_is_served_and_closed() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let out = util::raw(
        host.local_addr(),
        "GET /old HTTP/1.0\r\nHost: proxy.test\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    assert!(echo.last().header("x-fixture-context").is_some());
    assert_eq!(echo.last().path, "/old");
    assert_eq!(echo.last().version, http::Version::HTTP_11);
}

#[tokio::test]
async fn keep_alive_is_per_link() {
    let echo = Echo::start().await;
    let host = host(&echo).await;
    let stream = tokio::net::TcpStream::connect(host.local_addr())
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
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
    assert_eq!(
        echo.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn upstream_down_is_503() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let host = HostBuilder::new(fixture())
        .upstream(addr)
        .start()
        .await
        .unwrap();
    let reply = send(host.local_addr(), get("/", &[])).await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("connection failure"), "{}", reply.body);
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let echo = Echo::start().await;
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr)
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
    let echo = Echo::start().await;
    let host = host(&echo).await;
    assert_eq!(
        send(host.local_addr(), get("/reset", &[])).await.status,
        503
    );
    assert_eq!(send(host.local_addr(), get("/fine", &[])).await.status, 200);
}

#[tokio::test]
async fn upstream_may_be_a_hostname() {
    let echo = Echo::start().await;
    let host = HostBuilder::new(fixture())
        .upstream(format!("localhost:{}", echo.addr.port()))
        .start()
        .await
        .unwrap();
    assert_eq!(send(host.local_addr(), get("/n", &[])).await.status, 200);
}

#[tokio::test]
async fn request_body_callbacks_see_and_rewrite_each_chunk() {
    let echo = Echo::start().await;
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
    let echo = Echo::start().await;
    let host = host(&echo).await;
    const MIB: usize = 1024 * 1024;
    let total = 100 * MIB;
    let stream = tokio::net::TcpStream::connect(host.local_addr())
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/count")
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
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, total.to_string().as_bytes());
    assert_eq!(echo.last().body_len, total);
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
