//! ABI conformance against `abi-fixture`, one test per host-function family, through the proxy.

use super::*;

// ---- ABI families through the proxy ----

#[tokio::test]
async fn header_map_functions() {
    let echo = scripted();
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
    assert_eq!(seen.one("x-added").as_deref(), Some("1"));
    assert_eq!(seen.all("x-replace").len(), 1);
    assert_eq!(seen.one("x-replace").as_deref(), Some("new"));
    assert_eq!(seen.one("x-remove"), None);
    assert_eq!(seen.one("x-seen-path").as_deref(), Some("/h?q=1"));
    assert_eq!(seen.one("host").as_deref(), Some("proxy.test"));
    assert_eq!(seen.path, "/h?q=1");
    // An upstream header reaches the client (`/h` answers with `x-echo: 1`).
    assert_eq!(reply.header("x-fixture-response").as_deref(), Some("1"));
    assert_eq!(reply.header("x-response-code").as_deref(), Some("200"));
    assert_eq!(reply.header("x-echo").as_deref(), Some("1"));
}

#[tokio::test]
async fn local_response_is_sent_and_never_forwarded() {
    let echo = scripted();
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
    let echo = scripted();
    let host = host(&echo).await;
    let reply = send(host.local_addr(), op("shared-missing")).await;
    assert_eq!(field(&reply.body, "value"), "None");
    assert_eq!(field(&reply.body, "cas"), "None");
}

#[tokio::test]
async fn shared_data_cas_mismatch() {
    let echo = scripted();
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
    let echo = scripted();
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr())
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
    let echo = scripted();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties() {
    let echo = scripted();
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr())
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
    wait("proxy_on_log ran", || {
        host.logs()
            .iter()
            .any(|l| l.message.contains("op=properties status=200"))
            .then_some(())
    });
}

#[tokio::test]
async fn wasi_random_clock_environ_and_stdio() {
    let echo = scripted();
    let pinned = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let start = |seed| {
        HostBuilder::new(fixture())
            .upstream(echo.addr())
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
    let echo = scripted();
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
    let echo = scripted();
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr())
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
    let echo = scripted();
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
    let echo = scripted();
    let host = host(&echo).await;
    assert_eq!(send(host.local_addr(), op("panic")).await.status, 503);
    let logs = host.logs();
    assert!(
        logs.iter()
            .any(|l| l.level == Level::Critical && l.message.contains("fixture panic"))
    );
    assert!(
        logs.iter()
            .any(|l| l.level == Level::Error && l.message.contains("re-created at the next"))
    );
    // Re-created by the next request (Envoy's FAIL_RELOAD), not at once.
    assert_eq!(host.metric("wasm.test-host.vm_reload_success"), None);
    assert_eq!(send(host.local_addr(), get("/next", &[])).await.status, 200);
    assert_eq!(host.metric("wasm.test-host.vm_reload_success"), Some(1));
    assert!(echo.seen().iter().all(|s| s.one("x-fixture-op").is_none()));
}

#[tokio::test]
async fn paused_request_is_held_until_the_filter_resumes_it() {
    let echo = scripted();
    let host = host(&echo).await;
    let reply = send(host.local_addr(), op("pause")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(echo.last().one("x-fixture-op").as_deref(), Some("pause"));
}

#[tokio::test]
async fn paused_request_that_is_never_resumed_gets_500_and_is_not_forwarded() {
    let echo = scripted();
    let host = HostBuilder::new(fixture())
        .upstream(echo.addr())
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

#[tokio::test(flavor = "multi_thread")]
async fn a_body_held_at_its_end_and_never_resumed_gets_500_and_is_not_forwarded() {
    let echo = scripted();
    // `conf-body`'s `call` mode holds the body until its call to `release` answers: never.
    let release = std::thread::spawn(Scripted::stalling).join().unwrap();
    let host = HostBuilder::new(jwt_proxy_tests::wasm("conf_body"))
        .upstream(echo.addr())
        .cluster("release", release.addr().to_string())
        .resume_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let req = Request::post("/held")
        .header("host", "proxy.test")
        .header("x-req", "call")
        .body(Full::new(Bytes::from_static(b"held")))
        .unwrap();
    let reply = send(host.local_addr(), req).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "filter did not resume the stream\n")
    );
    wait("the filter's call to release", || {
        (release.arrived().len() == 1).then_some(())
    });
    assert!(echo.seen().is_empty());
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let echo = scripted();
    let host = host(&echo).await;
    assert!(
        util::try_send(host.local_addr(), op("reset"))
            .await
            .is_err()
    );
    assert!(echo.seen().is_empty());
}
