//! Nothing lost when the upstream refuses (issue 22, SPEC 2.5): a request
//! whose connect was refused, reset or timed out provably never reached the
//! upstream, so both proxies send it again, up to 3 more times after a
//! backoff (0.25 s base, 2.5 s max) within the route's timeout, then answer
//! Envoy's `503`; a request that may have reached the upstream is never
//! repeated (a POST is not idempotent). Side by side on Envoy and the test
//! host, with the same assertions: Envoy's cluster stats, and the test host's
//! counters of the same names.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jwt_proxy_tests::proxy::Setup;
use jwt_proxy_tests::raw::{exchange, post};
use jwt_proxy_tests::scripted::{Head, Reply, Scripted};
use jwt_proxy_tests::{HeldPort, SECRET, verify, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Failed connect attempts (Envoy's cluster stat; the test host counts the same).
const CONNECT_FAIL: &str = "cluster.upstream.upstream_cx_connect_fail";
/// Retries of a request.
const RETRIES: &str = "cluster.upstream.upstream_rq_retry";
/// Retries refused by the cluster's `max_retries` circuit breaker (Envoy only).
const RETRY_OVERFLOW: &str = "cluster.upstream.upstream_rq_retry_overflow";

/// Envoy's reply when every attempt's connect was refused.
const REFUSED_503: &str = "upstream connect error or disconnect/reset before headers. \
                           retried and the latest reset reason: remote connection failure";

/// The `jti` of the one token a request reached the upstream with (verified).
fn jti(head: &Head) -> String {
    let tokens = head.all("x-my-jwt");
    assert_eq!(tokens.len(), 1, "{} arrived with {tokens:?}", head.path);
    let claims = verify(&tokens[0], SECRET.as_bytes());
    claims["jti"].as_str().unwrap().to_owned()
}

#[test]
fn a_refused_post_is_tried_4_times_answered_503_once_and_served_when_the_port_listens() {
    let held = HeldPort::new();
    let proxies = Setup::new(held.addr()).both();
    for proxy in &proxies {
        let name = proxy.name();
        let started = Instant::now();
        let resp = exchange(proxy.addr(), &post("/refused", &[], b"{}"));
        eprintln!("{name}: {} in {:?}", resp.status, started.elapsed());
        assert_eq!(resp.status, 503, "{name}: {}", resp.text());
        assert_eq!(resp.text(), REFUSED_503, "{name}");
        let fails = wait_until(
            Duration::from_secs(10),
            format!("{name}: 4 failed connects"),
            || {
                let n = proxy.stat(CONNECT_FAIL);
                (n >= 4).then_some(n)
            },
        );
        assert_eq!(fails, 4, "{name}: connect attempts");
        assert_eq!(proxy.stat(RETRIES), 3, "{name}: retries");
    }
    // The same socket starts listening: the next POST goes through, signed.
    let upstream = Scripted::serving(held.listen(128), |_| Reply::Echo);
    for proxy in &proxies {
        let name = proxy.name();
        let resp = exchange(proxy.addr(), &post("/back", &[], b"{}"));
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
        assert_eq!(proxy.stat(CONNECT_FAIL), 4, "{name}: a failed connect more");
    }
    // Nothing of the refused POSTs arrived, the next ones once each.
    let seen = upstream.seen();
    let paths: Vec<&str> = seen.iter().map(|h| h.path.as_str()).collect();
    assert_eq!(paths, ["/back", "/back"]);
    let jtis: HashSet<String> = seen.iter().map(jti).collect();
    assert_eq!(jtis.len(), 2);
}

/// Bursts and POSTs per burst, each POST on a fresh client connection.
const BURSTS: usize = 4;
const BURST: usize = 96;
/// POSTs of the 384 a proxy may lose: the test's strict checks are the
/// rule's (retries happen, none overflows, no POST reaches the upstream
/// twice); how many are lost depends on how much CPU the upstream's accept
/// loop gets, so the bound only catches a proxy without retries (Envoy lost
/// 136 and 155 without them). Measured, runs of this test alone at load
/// average 8-11 (five builds beside it):
/// - backoff 0.1 s / 1 s: Envoy lost 1-4 POSTs, all `503`, in 4 of 6 runs;
/// - backoff 0.25 s / 2.5 s (the route's): Envoy lost 1 (`503`) in 2 of 28
///   runs, the test host none in 28.
///
/// In a whole `make test` beside those builds (load average 13) one run lost
/// 16 on Envoy (`503`) and 18 on the test host (`504`).
///
/// Envoy's `503`s are its connection pool's: when one connect fails, Envoy
/// fails every request waiting in the pool for a connection
/// (`ConnPoolImplBase::purgePendingStreams`), so in a burst a request can
/// spend its 4 attempts on other requests' connect timeouts. Pools per client
/// connection (`connection_pool_per_downstream_connection`) lost none in 8
/// runs, but would close the upstream connection with its client's (SPEC 3:
/// they persist independently). A connect timeout of 2 s traded them for
/// `504`s (2-13 per run). A `504` is a connect the kernel completed while the
/// accept queue was full: the request was sent and may have reached the
/// upstream, so by the rule it is never repeated.
const LOSS_BOUND: usize = BURSTS * BURST / 4;

/// The upstream accepts at most one connection per this (tokio's timer
/// makes it 1-2 ms): fewer a second than a burst's connects arrive at (Envoy
/// makes 96 in under 70 ms), so the queue overflows however fast the proxy.
/// Measured here, idle machine, 2 runs each: a pace of 1 ms gave 392-398
/// failed connects on Envoy (3-7 POSTs lost, `503`) and 361-380 on the test
/// host (none lost), the test 24 s; 2 ms 434 and 416-427 (5-6 lost); 3 ms
/// 478-497 and 474-480 (5-14 lost). Unpaced, an idle CI machine's Envoy
/// once had all 384 accepted without a failed connect, and the test failed.
const ACCEPT_PACE: Duration = Duration::from_millis(1);

/// `BURST` POSTs at once, each on its own connection: their statuses (0: no
/// answer within 30 s).
fn burst(addr: SocketAddr, round: usize) -> Vec<u16> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..BURST)
            .map(|i| {
                tokio::spawn(async move {
                    let request = format!(
                        "POST /burst/{round}/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                    );
                    let exchange = async {
                        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
                        s.write_all(request.as_bytes()).await.ok()?;
                        let mut out = Vec::new();
                        s.read_to_end(&mut out).await.ok()?;
                        let text = String::from_utf8_lossy(&out);
                        let status = text.split(' ').nth(1)?.parse::<u16>().ok()?;
                        if status != 200 {
                            eprintln!("{status}: {}", text.rsplit("\r\n").next().unwrap_or(""));
                        }
                        Some(status)
                    };
                    tokio::time::timeout(Duration::from_secs(30), exchange)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        statuses
    })
}

#[test]
fn bursts_against_a_full_accept_queue_are_retried_and_no_post_is_repeated() {
    let held = HeldPort::new();
    let addr = held.addr();
    // An accept queue of 1 and an accept loop paced to one connection per
    // `ACCEPT_PACE`: many connects of a burst find the queue full (their SYN
    // is dropped, the connect times out) until the retries spread them. The
    // pace makes that so on any machine: unpaced, a fast Envoy on an idle
    // CI machine once got all 384 POSTs accepted without a failed connect.
    // Each answer closes its connection (as Python's `http.server` does), so
    // every POST needs a connect of its own.
    let upstream = Scripted::paced(held.listen(1), ACCEPT_PACE, |_| {
        Reply::Close(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    });
    let mut problems = Vec::new();
    for proxy in Setup::new(addr).both() {
        let name = proxy.name();
        let before = upstream.seen().len();
        let started = Instant::now();
        let mut statuses = BTreeMap::<u16, usize>::new();
        for round in 0..BURSTS {
            for s in burst(proxy.addr(), round) {
                *statuses.entry(s).or_default() += 1;
            }
        }
        let seen = upstream.seen()[before..].to_vec();
        let distinct: HashSet<String> = seen.iter().map(jti).collect();
        eprintln!(
            "{name}: {} POSTs in {:?}: statuses {statuses:?}; upstream saw {} ({} distinct jti); \
             failed connects {}, retries {}, retry overflow {}",
            BURSTS * BURST,
            started.elapsed(),
            seen.len(),
            distinct.len(),
            proxy.stat(CONNECT_FAIL),
            proxy.stat(RETRIES),
            proxy.stat(RETRY_OVERFLOW),
        );
        let lost = BURSTS * BURST - statuses.get(&200).copied().unwrap_or(0);
        if lost > LOSS_BOUND {
            problems.push(format!("{name}: lost {lost} POSTs: {statuses:?}"));
        }
        // The accept queue overflowed: the retries were needed.
        if proxy.stat(RETRIES) == 0 {
            problems.push(format!("{name}: no connect was retried"));
        }
        // Each POST the client got a 200 for reached the upstream once, and
        // none twice (a retried POST would carry the same token).
        if seen.len() != distinct.len() || seen.len() < BURSTS * BURST - lost {
            problems.push(format!(
                "{name}: upstream saw {} POSTs, {} distinct",
                seen.len(),
                distinct.len()
            ));
        }
        if proxy.stat(RETRY_OVERFLOW) != 0 {
            problems.push(format!("{name}: retries overflowed"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
