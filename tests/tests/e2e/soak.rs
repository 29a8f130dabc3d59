//! Soak (issue 5): many POSTs through Envoy + filter over 64 persistent
//! connections; nothing lost, nothing duplicated, nothing leaked.
//!
//! Size from the environment: `SOAK_REQUESTS` (default 20,000, so it runs in
//! `make test`), `SOAK_CONNECTIONS` (64), `SOAK_MAX_SECONDS` (600: the run
//! stops sending then and fails). `make soak` runs 1,000,000 in a release build.

use std::time::{Duration, Instant};

use jwt_proxy_tests::load::{JtiUpstream, env_usize, open_fds, post_load, rss_kib};
use jwt_proxy_tests::raw::{bare, exchange};
use jwt_proxy_tests::{EnvoyBuilder, SECRET, wait_until};
use serde_json::Value;

#[test]
fn posts_are_all_signed_once() {
    let total = env_usize("SOAK_REQUESTS", 20_000) as u64;
    let connections = env_usize("SOAK_CONNECTIONS", 64);
    let max = Duration::from_secs(env_usize("SOAK_MAX_SECONDS", 600) as u64);
    // Warm-up: a tenth of the run, at least 5,000 (allocator arenas, VM
    // memory and connection pools reach their working size), at most 100,000.
    let warm = (total / 10).clamp(5_000.min(total), 100_000);

    let upstream = JtiUpstream::start("x-my-jwt", SECRET.as_bytes());
    let envoy = EnvoyBuilder::new(upstream.addr()).concurrency(2).start();
    let deadline = Instant::now() + max;

    let first = post_load(envoy.addr(), connections, warm, deadline);
    // Measured once Envoy has processed every client close.
    let at_rest = || {
        wait_until(Duration::from_secs(10), "client connections closed", || {
            (envoy.stat("http.jwt_proxy.downstream_cx_active") == Some(0)).then_some(())
        });
    };
    at_rest();
    let rss_warm = rss_kib(envoy.pid());
    let fds_warm = open_fds(envoy.pid());
    let rest = post_load(envoy.addr(), connections, total - warm, deadline);
    // Envoy frees per-connection state when it processes the client's close.
    at_rest();
    let rss_end = rss_kib(envoy.pid());
    let fds_end = open_fds(envoy.pid());

    let status: Value =
        serde_json::from_slice(&exchange(envoy.addr(), &bare("GET", "/status", &[])).body).unwrap();
    let tally = upstream.tally();
    let elapsed = first.elapsed + rest.elapsed;
    eprintln!(
        "soak: {total} POSTs over {connections} connections in {:.1} s ({:.0}/s); \
         warm-up {warm}: {first:?}; rest: {rest:?}; upstream {tally:?}; \
         Envoy RSS after warm-up {rss_warm} KiB, at the end {rss_end} KiB; \
         open fds {fds_warm} -> {fds_end}; upstream connections open {}; /status {status}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        envoy
            .stat("cluster.upstream.upstream_cx_active")
            .unwrap_or(0)
    );

    for (phase, r) in [("warm-up", &first), ("run", &rest)] {
        assert_eq!(r.not_sent, 0, "{phase}: deadline of {max:?} passed: {r:?}");
        assert!(r.non_2xx.is_empty(), "{phase}: non-2xx answers: {r:?}");
        assert_eq!(r.errors, 0, "{phase}: requests without an answer: {r:?}");
    }
    assert_eq!(first.ok + rest.ok, total);
    assert_eq!(
        tally.requests, total,
        "every POST reached the upstream once"
    );
    assert_eq!(tally.not_one_token, 0, "{:?}", tally.problems);
    assert_eq!(tally.bad_tokens, 0, "{:?}", tally.problems);
    assert_eq!(tally.duplicate_jti, 0, "{:?}", tally.problems);
    assert_eq!(tally.distinct_jti, total);
    assert_eq!(status["requests_processed"], total, "{status}");
    assert_eq!(status["requests_signed"], total, "{status}");
    assert!(
        rss_end * 10 <= rss_warm * 11 && rss_end * 10 >= rss_warm * 9,
        "Envoy RSS {rss_end} KiB at the end is not within 10% of {rss_warm} KiB after warm-up"
    );
    // Nothing held: no client connection or request left open, the upstream
    // pool bounded by the concurrency (fds are reported, not asserted: the
    // pool's size at rest varies by a few connections).
    // Envoy counts a close when its worker processes it: wait for it.
    let stat = |name: &str| envoy.stat(name).unwrap_or(u64::MAX);
    let settled = |name: &str| {
        wait_until(Duration::from_secs(10), format_args!("{name} is 0"), || {
            (stat(name) == 0).then_some(0)
        })
    };
    assert_eq!(settled("http.jwt_proxy.downstream_cx_active"), 0);
    assert_eq!(settled("http.jwt_proxy.downstream_rq_active"), 0);
    assert_eq!(settled("cluster.upstream.upstream_rq_active"), 0);
    let pool = stat("cluster.upstream.upstream_cx_active");
    assert!(
        pool <= 2 * connections as u64,
        "{pool} upstream connections open for {connections} clients (fds {fds_warm} -> {fds_end})"
    );
}
