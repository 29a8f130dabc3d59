//! HTTP callouts (`conf_callout`, `proxy_http_call`): each scenario on Envoy
//! and the test host with the clusters `callee` (the scripted upstream) and
//! `dead` (nothing listens), the same assertions on both: the
//! client's response, what the cluster received, and what
//! `on_http_call_response` saw (header count, `:status`, header names, body,
//! trailers), from an HTTP context and from the root context's tick.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::exchange;
use jwt_proxy_tests::scripted::{Reply, Scripted};
use jwt_proxy_tests::{HeldPort, Upstream, wait_until, wasm};
use test_host::{Action, Error, HostBuilder, LogSource};

/// One request the callee received.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Lowercase names, in order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Call {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The callee's answer.
const PONG: &[u8] = b"HTTP/1.1 200 OK\r\nx-callee: yes\r\ncontent-length: 4\r\n\r\npong";

/// The clusters: `callee`, the scripted upstream recording each request and
/// answering `200`, `x-callee: yes`, body `pong` (`/slow` only once
/// released); `reset`, one that reads each request and closes unanswered;
/// `dead`, a port held bound and not listening.
pub(crate) struct Callee {
    callee: Scripted,
    closer: Scripted,
    dead: HeldPort,
    /// Requests before this one are forgotten ([`Callee::clear`]).
    skip: Cell<usize>,
}

impl Callee {
    pub(crate) fn start() -> Callee {
        Callee {
            callee: Scripted::start(|h| {
                if h.path.starts_with("/slow") {
                    Reply::Held(PONG)
                } else {
                    Reply::Bytes(PONG)
                }
            }),
            closer: Scripted::start(|_| Reply::Close(b"")),
            dead: HeldPort::new(),
            skip: Cell::new(0),
        }
    }

    /// The `callee` cluster's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.callee.addr()
    }

    pub(crate) fn seen(&self) -> Vec<Call> {
        self.callee.seen()[self.skip.get()..]
            .iter()
            .map(|h| Call {
                method: h.method.clone(),
                path: h.path.clone(),
                headers: h
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                    .collect(),
                body: String::from_utf8_lossy(&h.body).into_owned(),
            })
            .collect()
    }

    /// Forgets the requests received so far.
    fn clear(&self) {
        self.skip.set(self.callee.seen().len());
    }
}

fn setup(upstream: SocketAddr, callee: &Callee, config: &str) -> Setup {
    Setup {
        wasm: wasm("conf_callout"),
        config: config.to_owned(),
        clusters: vec![
            ("callee".to_owned(), callee.callee.addr().to_string()),
            ("dead".to_owned(), callee.dead.addr().to_string()),
            ("reset".to_owned(), callee.closer.addr().to_string()),
        ],
        ..Setup::new(upstream)
    }
}

fn get(proxy: &Proxy, call: &str) -> jwt_proxy_tests::raw::Response {
    let request =
        format!("GET /x HTTP/1.1\r\nhost: client\r\nx-call: {call}\r\nconnection: close\r\n\r\n");
    exchange(proxy.addr(), request.as_bytes())
}

/// `name` received by the callee: `POST`, the path, `Host` from `:authority`,
/// the filter's header, the body, and the headers Envoy adds.
fn assert_received(proxy: &Proxy, c: &Call, path: &str, timeout_ms: &str) {
    let who = proxy.name();
    assert_eq!(
        (c.method.as_str(), c.path.as_str()),
        ("POST", path),
        "{who}"
    );
    assert_eq!(c.header("host"), Some("callee"), "{who}: {c:?}");
    assert_eq!(c.header("x-filter"), Some("set"), "{who}: {c:?}");
    assert_eq!(c.header("content-length"), Some("4"), "{who}: {c:?}");
    assert_eq!(c.header("x-envoy-internal"), Some("true"), "{who}: {c:?}");
    assert_eq!(
        c.header("x-envoy-expected-rq-timeout-ms"),
        Some(timeout_ms),
        "{who}: {c:?}"
    );
    assert_eq!(c.body, "ping", "{who}");
}

#[test]
fn a_callout_from_a_request_pauses_it_and_answers_from_the_callback() {
    let upstream = Upstream::start();
    let callee = Callee::start();
    let setup = setup(upstream.addr(), &callee, "");
    for proxy in setup.both() {
        let who = proxy.name();
        let before = callee.seen().len();

        let r = get(&proxy, "ok");
        assert_eq!(r.status, 200, "{who}");
        assert_eq!(r.header("x-callout"), Some("done"), "{who}");
        assert_eq!(
            r.text(),
            "http_call_response ctx=http headers=4/4 status=200 \
             names=:status,content-length,x-callee,x-envoy-upstream-service-time \
             body=pong trailers=0/0",
            "{who}"
        );
        let seen = callee.seen();
        assert_eq!(seen.len(), before + 1, "{who}");
        assert_received(&proxy, &seen[before], "/callee", "2000");

        // The call's timeout: Envoy's local 504, delivered as a response.
        let r = get(&proxy, "slow");
        assert_eq!(
            r.text(),
            "http_call_response ctx=http headers=3/3 status=504 \
             names=:status,content-length,content-type body=upstream request timeout \
             trailers=0/0",
            "{who}"
        );
        assert_received(&proxy, callee.seen().last().unwrap(), "/slow", "300");

        // Nothing listens: Envoy's local 503.
        let r = get(&proxy, "dead");
        assert_eq!(
            r.text(),
            "http_call_response ctx=http headers=3/3 status=503 \
             names=:status,content-length,content-type body=upstream connect error or \
             disconnect/reset before headers. reset reason: remote connection failure \
             trailers=0/0",
            "{who}"
        );

        // Closed before any response: Envoy's local 503 too.
        let r = get(&proxy, "reset");
        assert_eq!(
            r.text(),
            "http_call_response ctx=http headers=3/3 status=503 \
             names=:status,content-length,content-type body=upstream connect error or \
             disconnect/reset before headers. reset reason: connection termination \
             trailers=0/0",
            "{who}"
        );

        // Refused calls: BadArgument, and the request goes on to the upstream.
        for (call, line) in [
            ("unknown", "call unknown: BadArgument"),
            ("noauthority", "call noauthority: BadArgument"),
            ("nopath", "call nopath: BadArgument"),
        ] {
            let r = get(&proxy, call);
            assert_eq!(r.status, 200, "{who} {call}");
            assert_eq!(r.header("x-callout"), None, "{who} {call}");
            proxy.wait_for_lines(line, 1);
        }
        assert_eq!(
            callee.seen().len(),
            before + 2,
            "{who}: refused calls sent nothing"
        );

        let log = proxy.filter_log();
        // Envoy numbers HTTP calls per VM 4, 8, 12, ...
        for line in [
            "call ok: ok token=4",
            "call slow: ok token=8",
            "call dead: ok token=12",
        ] {
            assert!(log.iter().any(|l| l == line), "{who}: {line} in {log:?}");
        }
    }
}

/// The upstream's answer to `early`, sent once released.
const UPSTREAM_OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[test]
fn a_request_that_ends_before_its_callout_cancels_it_without_a_callback() {
    // Whether a call cancelled with its request was sent first is timing, on both proxies:
    // Envoy drops a call still waiting for its pool's connection, the test host aborts the
    // call's task (under load it had at times not yet connected, or not yet written, when a
    // quickly answered request ended). So the upstream answers only once the callee has the
    // call, and the callee only once the request has ended: the call is sent, then cancelled,
    // on both. Each proxy has its own upstream and callee.
    for start in [Setup::envoy, Setup::host] {
        let upstream = Scripted::start(|_| Reply::Held(UPSTREAM_OK));
        let callee = Callee::start();
        let proxy = start(&setup(upstream.addr(), &callee, ""));
        let who = proxy.name();
        let addr = proxy.addr();
        let client = std::thread::spawn(move || {
            exchange(
                addr,
                b"GET /x HTTP/1.1\r\nhost: client\r\nx-call: early\r\nconnection: close\r\n\r\n",
            )
        });
        proxy.wait_for_lines("call early: ok token=4", 1);
        wait_until(
            Duration::from_secs(10),
            format_args!("{who}: the callee got the call"),
            || {
                callee
                    .seen()
                    .iter()
                    .any(|c| c.path == "/slow")
                    .then_some(())
            },
        );
        wait_until(
            Duration::from_secs(10),
            format_args!("{who}: the upstream got the request"),
            || (!upstream.seen().is_empty()).then_some(()),
        );
        upstream.release();
        let r = client.join().unwrap();
        assert_eq!(r.status, 200, "{who}");
        assert_eq!(r.header("x-callout"), None, "{who}");
        // `on_log` runs as the request ends; the call is cancelled with its context, before
        // the callee's answer can reach the filter.
        proxy.wait_for_lines("request early: logged", 1);
        // The callee answers now; the callout had a 2 s timeout. Neither
        // may run a callback for the cancelled call: a timer that must not
        // fire shows only by not firing, so hold idle past the timeout (not
        // a wait for an event).
        callee.callee.release();
        std::thread::sleep(Duration::from_millis(2500));
        let log = proxy.filter_log();
        assert!(
            !log.iter().any(|l| l.starts_with("http_call_response")),
            "{who}: {log:?}"
        );
    }
}

#[test]
fn a_callout_from_the_root_context_is_delivered_to_the_root() {
    let upstream = Upstream::start();
    // Each proxy ticks on its own from its start, so each has its own callee: with one callee
    // and both proxies running (`Setup::both`), a `/tick` of the test host could arrive while
    // Envoy's were counted, then be forgotten with them (a load-dependent failure).
    for start in [Setup::envoy, Setup::host] {
        let callee = Callee::start();
        let proxy = start(&setup(upstream.addr(), &callee, "tick"));
        let who = proxy.name();
        let lines = proxy.wait_for_lines("http_call_response", 1);
        assert_eq!(
            lines[0],
            "http_call_response ctx=root headers=4/4 status=200 \
             names=:status,content-length,x-callee,x-envoy-upstream-service-time \
             body=pong trailers=0/0",
            "{who}"
        );
        // One call per ticking root context; each reached the callee (it
        // may see a call before the filter has logged it).
        let what = format!("{who}: a /tick per tick call");
        let ticks = wait_until(Duration::from_secs(10), what, || {
            let calls = proxy
                .filter_log()
                .iter()
                .filter(|l| *l == "tick call ok")
                .count();
            let ticks: Vec<Call> = callee
                .seen()
                .into_iter()
                .filter(|c| c.path == "/tick")
                .collect();
            (calls >= 1 && ticks.len() >= calls).then_some(ticks)
        });
        let t = &ticks[0];
        assert_eq!(t.method, "GET", "{who}");
        assert_eq!(t.header("host"), Some("callee"), "{who}");
        assert_eq!(t.header("content-length"), None, "{who}: {t:?}");
        assert_eq!(
            t.header("x-envoy-expected-rq-timeout-ms"),
            Some("2000"),
            "{who}"
        );
        proxy.wait_for_lines("http_call_response ctx=root", ticks.len());
    }
}

#[test]
fn bad_clusters_are_refused_naming_the_cluster_on_both() {
    let upstream = Upstream::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, spec) in [
        ("a b", "127.0.0.1:1"),
        ("upstream", "127.0.0.1:1"),
        ("a", "127.0.0.1"),
        ("a", "h2://127.0.0.1:1"),
    ] {
        let builder = HostBuilder::new(wasm("conf_callout"))
            .upstream(upstream.addr())
            .cluster(name, spec);
        let e = rt.block_on(builder.start()).err().unwrap();
        assert!(
            matches!(&e, Error::Invalid { what: "cluster", value, .. } if *value == format!("{name}={spec}")),
            "{e}"
        );
        // envoy/render.sh refuses the same CLUSTERS entry.
        let out = std::process::Command::new("sh")
            .arg(jwt_proxy_tests::root().join("envoy/render.sh"))
            .env("CLUSTERS", format!("{name}={spec}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "render.sh took {name}={spec}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("CLUSTERS"));
    }
}

#[test]
fn the_direct_plugin_api_has_no_clusters_and_says_so() {
    let e = HostBuilder::new(wasm("conf_callout"))
        .cluster("callee", "127.0.0.1:1")
        .instantiate()
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::Invalid {
                what: "cluster",
                ..
            }
        ),
        "{e}"
    );
    // Without clusters a callout answers as for an unknown cluster, and the
    // host says why.
    let plugin = HostBuilder::new(wasm("conf_callout"))
        .instantiate()
        .unwrap();
    let ctx = plugin.create_http_context().unwrap();
    let verdict = plugin
        .on_request_headers(
            ctx,
            &[(":method", "GET"), (":path", "/"), ("x-call", "ok")],
            false,
        )
        .unwrap();
    assert_eq!(verdict.action, Action::Continue);
    let logs = plugin.logs();
    assert!(
        logs.iter().any(|r| r.message == "call ok: BadArgument"),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|r| r.source == LogSource::Host && r.message.contains("no network")),
        "{logs:?}"
    );
}

#[test]
fn a_callout_dispatched_just_before_a_trap_is_still_sent() {
    let upstream = Upstream::start();
    let callee = Callee::start();
    let setup = setup(upstream.addr(), &callee, "");
    for proxy in setup.both() {
        let who = proxy.name();
        callee.clear();
        // The first call of the VM (no connection to the callee yet), then one after a call
        // that left a connection open.
        for (n, warm) in [(1, false), (2, true)] {
            if warm {
                assert_eq!(get(&proxy, "ok").status, 200, "{who}");
            }
            let r = get(&proxy, "trap");
            assert_eq!(r.status, 503, "{who}: the trap fails the request");
            let trapped = wait_until(
                Duration::from_secs(10),
                format_args!("{who}: the callee got call {n} made before the trap"),
                || {
                    let calls: Vec<Call> = callee
                        .seen()
                        .into_iter()
                        .filter(|c| c.path == "/trapped")
                        .collect();
                    (calls.len() >= n).then_some(calls)
                },
            );
            assert_received(&proxy, &trapped[n - 1], "/trapped", "2000");
        }
        // Each trap failed its VM; the re-created one numbers from 4 again (`ok`, then `trap`).
        let lines = proxy.wait_for_lines("call trap: ok", 2);
        assert_eq!(
            lines,
            ["call trap: ok token=4", "call trap: ok token=8"],
            "{who}"
        );
    }
}
