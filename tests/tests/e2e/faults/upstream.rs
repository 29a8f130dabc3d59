//! The upstream misbehaves: refuses, resets, stalls, answers garbage; or
//! the client does: uploads aborted halfway.

use std::net::SocketAddr;
use std::time::Duration;

use jwt_proxy_tests::load::{open_fds, rss_kib};
use jwt_proxy_tests::proxy::Setup;
use jwt_proxy_tests::raw::{bare, exchange, post};
use jwt_proxy_tests::scripted::Scripted;
use jwt_proxy_tests::{EnvoyBuilder, HeldPort, wait_until};
use tokio::io::AsyncWriteExt;

use super::{assert_all_signed, assert_serves, failing_post, faulty, script, setup};

#[test]
fn upstream_resets_garbage_and_stalls_fail_one_request_each() {
    let upstream = faulty();
    let mut problems = Vec::new();
    for proxy in setup(upstream.addr()).both() {
        let name = proxy.name();
        let before = upstream.seen().len();
        assert_serves(&proxy, "start");
        // Envoy's answers (SPEC 2.5; the test host follows Envoy, SPEC 5).
        // `/stall` is the upstream too slow: 504 (was also
        // `upstream_too_slow_is_504`, Envoy only). The status tells the
        // route timeout (1 s) from the other failures; the 10 s bound only
        // catches a hang, with room for a loaded machine.
        for (path, expected) in [
            ("/reset-silent", 503),
            ("/reset-head", 502),
            ("/garbage", 502),
            ("/stall", 504),
        ] {
            if name == "test-host" && path == "/reset-silent" {
                continue; // regression_test_host_answered_502_to_a_reset_before_any_byte
            }
            let (out, took) = failing_post(&proxy, path);
            eprintln!("{name} {path}: {out:?} in {took:?}");
            match out {
                Ok((status, body)) => {
                    if status != expected || body.len() >= 256 {
                        problems.push(format!(
                            "{name} {path}: expected {expected} with a short body, got {status} {body:?}"
                        ));
                    }
                }
                Err(e) => problems.push(format!("{name} {path}: no answer: {e}")),
            }
            if took >= Duration::from_secs(10) {
                problems.push(format!("{name} {path}: took {took:?}"));
            }
            assert_serves(&proxy, path);
        }

        // Reset after the head: the client already has its 200 and cannot be
        // told otherwise; it must see the body cut short, and soon.
        let (out, took) = failing_post(&proxy, "/reset-body");
        eprintln!("{name} /reset-body: {out:?} in {took:?}");
        if let Ok((200, body)) = &out
            && body.len() >= 1000
        {
            problems.push(format!("{name}: a reset body arrived whole"));
        }
        if took >= Duration::from_secs(10) {
            problems.push(format!("{name} /reset-body: took {took:?}"));
        }
        assert_serves(&proxy, "/reset-body");

        // 6 good and 5 faulty requests reached the upstream, each signed once.
        let seen = upstream.seen()[before..].to_vec();
        let expected = if name == "envoy" { 11 } else { 9 };
        assert_eq!(seen.len(), expected, "{name}: {seen:?}");
        assert_all_signed(name, &seen);
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn upstream_refusing_is_503_and_serving_resumes_when_it_returns() {
    for which in ["envoy", "test-host"] {
        let refusing = HeldPort::new();
        let addr = refusing.addr();
        // The route's default timeout, not the faults' 1 s: the connect
        // retries' backoffs (up to 2.75 s, retry::) may outlast 1 s, and
        // then either host answers the route timeout's 504.
        let setup = Setup::new(addr);
        let proxy = if which == "envoy" {
            setup.envoy()
        } else {
            setup.host()
        };
        for i in 0..3 {
            let (out, took) = failing_post(&proxy, &format!("/refused/{i}"));
            let (status, body) = out.unwrap_or_else(|e| panic!("{which}: no answer: {e}"));
            assert_eq!(status, 503, "{which}: {body}");
            assert!(body.len() < 256, "{which}: {body:?}");
            // Answered after the connect retries (retry::), not left to hang
            // (was `upstream_down_is_503_within_a_second`, Envoy's;
            // `upstream_down_is_503_on_both` checked the 503). The 503 is not
            // the route timeout's 504; the bound only catches a hang, with
            // room for a loaded machine.
            assert!(took < Duration::from_secs(10), "{which}: took {took:?}");
        }
        // Still serving what needs no upstream.
        let resp = exchange(proxy.addr(), &bare("GET", "/status", &[]));
        assert_eq!(resp.status, 200, "{which}");
        // The upstream comes back on the same port: served again, signed.
        let upstream = Scripted::serving(refusing.listen(128), script);
        let what = format!("{which}: served once the upstream returned");
        wait_until(Duration::from_secs(10), what, || {
            (exchange(proxy.addr(), &post("/back", &[], b"{}")).status == 200).then_some(())
        });
        let seen = upstream.seen();
        assert!(!seen.is_empty());
        assert_all_signed(which, &seen);
    }
}

/// Opens `n` uploads announcing 1 MiB, sends 64 KiB of each and aborts it:
/// even ones with a FIN, odd ones with a RST.
fn abort_uploads(addr: SocketAddr, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..n {
            tasks.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST /upload/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    1 << 20
                );
                s.write_all(head.as_bytes()).await.unwrap();
                let _ = s.write_all(&vec![b'x'; 64 << 10]).await;
                // Holds the upload open a moment before aborting it, as a
                // client that gives up would (not a wait for an event).
                tokio::time::sleep(Duration::from_millis(20)).await;
                if i % 2 == 1 {
                    let _ = s.set_zero_linger();
                }
                drop(s);
            }));
            if tasks.len() >= 20 {
                for t in tasks.drain(..) {
                    t.await.unwrap();
                }
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn aborted_uploads_leak_nothing_and_serving_goes_on() {
    const WARM: usize = 40;
    const ABORTS: usize = 200;
    let upstream = faulty();
    let envoy = EnvoyBuilder::new(upstream.addr()).start();
    let stat = |name: &str| envoy.stat(name).unwrap_or(0);
    let idle = |stat: &dyn Fn(&str) -> u64| {
        stat("http.jwt_proxy.downstream_cx_active") == 0
            && stat("http.jwt_proxy.downstream_rq_active") == 0
            && stat("cluster.upstream.upstream_rq_active") == 0
    };

    abort_uploads(envoy.addr(), WARM);
    wait_until(
        Duration::from_secs(10),
        "Envoy idle after the warm-up aborts",
        || idle(&stat).then_some(()),
    );
    let (rss_warm, fds_warm) = (rss_kib(envoy.pid()), open_fds(envoy.pid()));
    let cx_before = stat("http.jwt_proxy.downstream_cx_total");

    abort_uploads(envoy.addr(), ABORTS);
    wait_until(
        Duration::from_secs(10),
        "Envoy idle after the aborts",
        || idle(&stat).then_some(()),
    );
    let (rss_end, fds_end) = (rss_kib(envoy.pid()), open_fds(envoy.pid()));
    let cx_total = stat("http.jwt_proxy.downstream_cx_total") - cx_before;
    eprintln!(
        "envoy: {ABORTS} aborted uploads ({cx_total} connections); RSS {rss_warm} -> {rss_end} KiB; fds {fds_warm} -> {fds_end}; \
         upstream_cx_active {}; downstream_rq_rx_reset {}",
        stat("cluster.upstream.upstream_cx_active"),
        stat("http.jwt_proxy.downstream_rq_rx_reset"),
    );
    assert_eq!(
        cx_total, ABORTS as u64,
        "every aborted upload was a connection"
    );
    // 10 %: the route's retry policy (retry::) has the router keep a copy of
    // each body (up to 1 MiB) until the response starts, which moved Envoy's
    // allocator up by a step of 3.4 to 6.8 MiB in some runs (5 % was 4.7);
    // over 1,600 aborts it stayed flat after the step: not a leak.
    assert!(
        rss_end * 100 <= rss_warm * 110,
        "Envoy RSS grew from {rss_warm} to {rss_end} KiB over {ABORTS} aborted uploads"
    );
    assert!(fds_end <= fds_warm + 4, "fds {fds_warm} -> {fds_end}");
    let resp = exchange(envoy.addr(), &post("/after", &[], b"{}"));
    assert_eq!(resp.status, 200);
    // Each upload's head was signed and forwarded before it aborted.
    assert_all_signed("envoy", &upstream.seen());

    // The test host: the same aborts, still serving, nothing unsigned.
    let before = upstream.seen().len();
    let host = setup(upstream.addr()).host();
    abort_uploads(host.addr(), ABORTS);
    assert_serves(&host, "aborted uploads");
    assert_all_signed("test-host", &upstream.seen()[before..]);
}
