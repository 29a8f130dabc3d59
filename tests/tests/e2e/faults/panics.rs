//! A guest panic: the request it hits gets 503, requests in flight on
//! that VM fail closed, and serving resumes (within a second when idle; the
//! tests allow 10 s for a loaded machine).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::{Conn, bare, exchange, post};
use jwt_proxy_tests::scripted::{Head, Scripted};
use jwt_proxy_tests::{EnvoyBuilder, SECRET, verify, wait_until, wasm};

use super::{assert_serves, faulty, fixture_ok, tokens};

/// How one background request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// A complete response with this status.
    Status(u16),
    /// The connection was closed or reset before the response was complete.
    Reset,
    /// No answer within the client's read timeout: a hang.
    Hung,
}

/// Sends requests from two threads until `stop`, recording each path and
/// how it ended.
fn background_traffic(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<(String, Ended)>>> {
    (0..2)
        .map(|t| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut ended = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 5_000 {
                    let path = format!("/bg/{t}/{i}");
                    let req = if i % 2 == 0 {
                        post(&path, &[], b"{}")
                    } else {
                        bare("GET", &path, &[])
                    };
                    let outcome = Conn::connect(addr)
                        .and_then(|mut c| {
                            c.send(&req)?;
                            c.read_response(false)
                        })
                        .map_or_else(
                            |e| match e.kind() {
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                                    Ended::Hung
                                }
                                _ => Ended::Reset,
                            },
                            |r| Ended::Status(r.status),
                        );
                    ended.push((path, outcome));
                    i += 1;
                    // Paces the load (not a wait for an event).
                    std::thread::sleep(Duration::from_millis(5));
                }
                ended
            })
        })
        .collect()
}

/// Checks how background requests ended around `panics` guest panics: each
/// is a 200 or a 503, or a reset of a request that had already been
/// forwarded. A request on the failed VM fails closed at its next callback,
/// as in Envoy (proxy-wasm-cpp-host's `CHECK_FAIL_HTTP`): 503 if its response
/// has not started, else a reset. Two client threads: at most two requests
/// are in flight when a VM dies.
fn assert_failed_closed(name: &str, ended: &[(String, Ended)], seen: &[Head], panics: usize) {
    for (path, e) in ended {
        match e {
            Ended::Status(200 | 503) => {}
            Ended::Reset => assert!(
                seen.iter().any(|h| &h.path == path),
                "{name}: {path} was reset before it reached the upstream"
            ),
            other => panic!("{name}: {path} ended {other:?} while the VM reloaded"),
        }
    }
    let resets = ended.iter().filter(|(_, e)| *e == Ended::Reset).count();
    assert!(
        resets <= 2 * panics,
        "{name}: {resets} resets after {panics} panic(s): only requests in flight on a failed VM may be reset"
    );
}

/// Waits until `more` background requests beyond the first `after` have
/// reached `upstream`: the traffic runs.
fn wait_for_background(upstream: &Scripted, after: usize, more: usize) -> usize {
    wait_until(
        Duration::from_secs(10),
        "background requests arrive",
        || {
            let n = upstream
                .arrived()
                .iter()
                .filter(|h| h.path.starts_with("/bg/"))
                .count();
            (n >= after + more).then_some(n)
        },
    )
}

/// Envoy and the test host, one worker each, running the panic fixture in
/// front of `upstream`.
fn panicking(upstream: SocketAddr) -> [Proxy; 2] {
    Setup {
        wasm: wasm("panic_filter"),
        ..Setup::new(upstream)
    }
    .both()
}

#[test]
fn guest_panic_fails_that_request_and_serving_resumes_within_a_second() {
    let upstream = faulty();
    for proxy in panicking(upstream.addr()) {
        let name = proxy.name();
        let before = upstream.seen().len();
        assert_eq!(
            exchange(proxy.addr(), &post("/first", &[], b"{}")).status,
            200
        );

        let stop = Arc::new(AtomicBool::new(false));
        let traffic = background_traffic(proxy.addr(), &stop);
        let flowing = wait_for_background(&upstream, 0, 2);
        let resp = exchange(
            proxy.addr(),
            &post("/panic", &["X-Fixture-Panic: 1"], b"{}"),
        );
        let panicked_at = Instant::now();
        assert_eq!(resp.status, 503, "{name}: {}", resp.text());
        assert!(resp.body.len() < 256, "{name}: {:?}", resp.text());
        // Served again (within a second when idle).
        let what = format!("{name}: served again after the panic");
        let recovered = wait_until(Duration::from_secs(10), what, || {
            let r = exchange(proxy.addr(), &post("/after", &[], b"{}"));
            (r.status == 200).then(|| panicked_at.elapsed())
        });
        // The background traffic runs on the new VM too.
        let now = wait_for_background(&upstream, flowing, 0);
        wait_for_background(&upstream, now, 2);
        stop.store(true, Ordering::Relaxed);
        let ended: Vec<(String, Ended)> = traffic
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let not_ok: Vec<_> = ended
            .iter()
            .filter(|(_, e)| *e != Ended::Status(200))
            .collect();
        eprintln!(
            "{name}: served again {recovered:?} after the panic; background: {} requests, {} not 200 ({not_ok:?})",
            ended.len(),
            not_ok.len(),
        );
        let seen = upstream.seen()[before..].to_vec();
        assert_failed_closed(name, &ended, &seen, 1);
        assert!(
            seen.iter().all(|h| h.path != "/panic"),
            "{name}: the panicking request reached the upstream"
        );
        let bypassed: Vec<_> = seen.iter().filter(|h| !fixture_ok(h)).collect();
        assert!(
            bypassed.is_empty(),
            "{name}: requests reached the upstream without passing the filter: {bypassed:?}"
        );
        // Every 200 reached the upstream; a request already forwarded when
        // its VM died may still be answered 503 (its context is gone).
        let served = 2 + ended
            .iter()
            .filter(|(_, e)| *e == Ended::Status(200))
            .count();
        assert!(
            (served..=2 + ended.len()).contains(&seen.len()),
            "{name}: {} reached the upstream, {served} were served",
            seen.len()
        );
    }
}

/// `envoy/envoy.yaml` with the panic fixture as a second Wasm filter (its
/// own VM, FAIL_RELOAD) in front of the product filter.
fn panic_chain_template() -> std::path::PathBuf {
    let root = jwt_proxy_tests::root();
    let yaml = std::fs::read_to_string(root.join("envoy/envoy.yaml")).unwrap();
    let fixture = format!(
        r#"          http_filters:
          - name: panic_fixture
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: panic_fixture
                root_id: panic_fixture
                failure_policy: FAIL_RELOAD
                reload_config:
                  backoff: {{ base_interval: 0.1s, max_interval: 1s }}
                vm_config:
                  vm_id: panic_fixture
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local: {{ filename: {} }}
"#,
        wasm("panic_filter").display()
    );
    assert!(yaml.contains("          http_filters:\n"));
    let chained = yaml.replacen("          http_filters:\n", &fixture, 1);
    let dir = root.join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("panic-chain-{}.yaml", std::process::id()));
    std::fs::write(&path, chained).unwrap();
    path
}

/// A response already streaming when its VM dies is cut, not finished
/// unfiltered and not hung: the request's context is gone with the VM, and
/// fail-closed means its next callback fails the stream (Envoy resets a
/// stream whose response has started). The test host does the same.
#[test]
fn a_response_streaming_when_its_vm_dies_is_reset_on_both_proxies() {
    let upstream = faulty();
    for proxy in panicking(upstream.addr()) {
        let name = proxy.name();
        let mut slow = Conn::connect(proxy.addr()).unwrap();
        slow.send(&post("/slow-body", &[], b"{}")).unwrap();
        // The head and the first 10 bytes reached the client; the rest waits
        // for the upstream's release, after the panic.
        slow.received(b"0123456789").unwrap();
        let resp = exchange(
            proxy.addr(),
            &post("/panic", &["X-Fixture-Panic: 1"], b"{}"),
        );
        assert_eq!(resp.status, 503, "{name}: {}", resp.text());
        // The rest of the body arrives after the panic: its callback, on the
        // failed VM, fails the stream.
        upstream.release();
        let started = Instant::now();
        let cut = slow.read_response(false);
        let kind = cut.as_ref().err().map(std::io::Error::kind);
        eprintln!(
            "{name}: the streaming response ended {:?} after {:?}",
            cut.as_ref().map(|r| r.status),
            started.elapsed()
        );
        assert!(
            matches!(
                kind,
                Some(std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset)
            ),
            "{name}: expected the response to be cut, got {:?}",
            cut.map(|r| (r.status, r.text()))
        );
        // Envoy closes the cut connection after its 1 s delayed-close
        // timeout; the bound only catches a hang (the route timeout is 15 s).
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: cut only after {:?}",
            started.elapsed()
        );
        assert_serves(&proxy, "a VM failure mid-response");
        let seen = upstream.seen();
        assert!(
            seen.iter().any(|h| h.path == "/slow-body" && fixture_ok(h)),
            "{name}: /slow-body was not forwarded through the filter"
        );
    }
}

#[test]
fn panics_in_front_of_the_product_filter_never_let_an_unsigned_request_through() {
    const PANICS: usize = 5;
    let upstream = faulty();
    let envoy = EnvoyBuilder::new(upstream.addr())
        .template(panic_chain_template())
        .concurrency(2)
        .start();
    let proxy = Proxy::Envoy(envoy);
    assert_serves(&proxy, "start");

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = background_traffic(proxy.addr(), &stop);
    let mut flowing = 0;
    for i in 0..PANICS {
        // Background requests run between the panics.
        flowing = wait_for_background(&upstream, flowing, 2);
        let resp = exchange(
            proxy.addr(),
            &post(&format!("/panic/{i}"), &["X-Fixture-Panic: 1"], b"{}"),
        );
        assert_eq!(resp.status, 503, "panic {i}: {}", resp.text());
    }
    wait_for_background(&upstream, flowing, 2);
    stop.store(true, Ordering::Relaxed);
    let ended: Vec<(String, Ended)> = traffic
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    // Served again after the last panic (within a second when idle).
    wait_until(
        Duration::from_secs(10),
        "served again after the panics",
        || (exchange(proxy.addr(), &post("/after", &[], b"{}")).status == 200).then_some(()),
    );

    let seen = upstream.seen();
    let not_ok: Vec<_> = ended
        .iter()
        .filter(|(_, e)| *e != Ended::Status(200))
        .collect();
    eprintln!(
        "chain: {PANICS} panics, {} background requests ({} not 200: {not_ok:?}), {} reached the upstream",
        ended.len(),
        not_ok.len(),
        seen.len()
    );
    assert_failed_closed("chain", &ended, &seen, PANICS);
    assert!(seen.iter().all(|h| !h.path.starts_with("/panic")));
    assert!(seen.iter().all(fixture_ok), "a request skipped the fixture");
    // Every request that reached the upstream went through the product
    // filter: POSTs carry exactly one valid token, GETs none.
    for h in &seen {
        if h.path.starts_with("/bg/")
            && h.path.rsplit('/').next().unwrap().parse::<u32>().unwrap() % 2 == 1
        {
            assert!(tokens(h).is_empty(), "{}: a GET was signed", h.path);
        } else {
            assert_eq!(tokens(h).len(), 1, "{}: {} tokens", h.path, tokens(h).len());
            verify(&tokens(h)[0], SECRET.as_bytes());
        }
    }
    // /status from every worker: a worker whose fixture VM failed answers
    // 503 until its next request reloads it, and the count follows the
    // last request's callbacks (found under stress --cpu 2).
    let what = format!("/status shows the {} requests forwarded", seen.len());
    let v: serde_json::Value = wait_until(Duration::from_secs(10), what, || {
        let resp = exchange(proxy.addr(), &bare("GET", "/status", &[]));
        let v: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
        (resp.status == 200 && v["requests_processed"] == seen.len() as u64).then_some(v)
    });
    assert_eq!(v["requests_processed"], seen.len() as u64, "{v}");
}
