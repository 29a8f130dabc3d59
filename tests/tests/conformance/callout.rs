//! HTTP callouts (`conf_callout`, `proxy_http_call`): each scenario on Envoy
//! and the test host with the clusters `callee` (a small recording server
//! here) and `dead` (nothing listens), the same assertions on both: the
//! client's response, what the cluster received, and what
//! `on_http_call_response` saw (header count, `:status`, header names, body,
//! trailers), from an HTTP context and from the root context's tick.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::exchange;
use jwt_proxy_tests::{HeldPort, Upstream, wait_until, wasm};
use test_host::{Action, Error, HostBuilder, LogSource};

/// One request the callee received.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    /// Lowercase names, in order.
    headers: Vec<(String, String)>,
    body: String,
}

impl Call {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 server that records each request and answers
/// `200`, `x-callee: yes`, body `pong`; `/slow` answers after 3 s.
struct Callee {
    addr: SocketAddr,
    /// A listener that reads each request, then closes unanswered.
    closer: SocketAddr,
    /// The `dead` cluster: a port held bound and not listening.
    dead: HeldPort,
    seen: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
}

impl Callee {
    fn start() -> Callee {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopped) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let record = record.clone();
                std::thread::spawn(move || serve(conn, &record));
            }
        });
        let closer = TcpListener::bind("127.0.0.1:0").unwrap();
        let closer_addr = closer.local_addr().unwrap();
        let closing = stop.clone();
        std::thread::spawn(move || {
            for conn in closer.incoming() {
                if closing.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
            }
        });
        Callee {
            addr,
            closer: closer_addr,
            dead: HeldPort::new(),
            seen,
            stop,
        }
    }

    fn seen(&self) -> Vec<Call> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        let _ = TcpStream::connect(self.closer);
    }
}

fn serve(conn: TcpStream, record: &Mutex<Vec<Call>>) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let slow = path.starts_with("/slow");
        record.lock().unwrap().push(Call {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        if slow {
            std::thread::sleep(Duration::from_secs(3));
        }
        let answer = b"HTTP/1.1 200 OK\r\nx-callee: yes\r\ncontent-length: 4\r\n\r\npong";
        if conn.write_all(answer).is_err() {
            return;
        }
    }
}

fn setup(upstream: &Upstream, callee: &Callee, config: &str) -> Setup {
    Setup {
        wasm: wasm("conf_callout"),
        config: config.to_owned(),
        clusters: vec![
            ("callee".to_owned(), callee.addr.to_string()),
            ("dead".to_owned(), callee.dead.addr().to_string()),
            ("reset".to_owned(), callee.closer.to_string()),
        ],
        ..Setup::new(upstream.addr())
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
    let setup = setup(&upstream, &callee, "");
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

#[test]
fn a_request_that_ends_before_its_callout_cancels_it_without_a_callback() {
    let upstream = Upstream::start();
    let callee = Callee::start();
    let setup = setup(&upstream, &callee, "");
    for proxy in setup.both() {
        let who = proxy.name();
        callee.seen.lock().unwrap().clear();
        let r = get(&proxy, "early");
        assert_eq!(r.status, 200, "{who}");
        assert_eq!(r.header("x-callout"), None, "{who}");
        proxy.wait_for_lines("call early: ok token=4", 1);
        wait_until(Duration::from_secs(10), "the callee got the call", || {
            callee
                .seen()
                .iter()
                .any(|c| c.path == "/slow")
                .then_some(())
        });
        // The callee answers after 3 s; the callout had a 2 s timeout: wait
        // past both, and no callback ran.
        std::thread::sleep(Duration::from_millis(3500));
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
    let callee = Callee::start();
    let setup = setup(&upstream, &callee, "tick");
    for proxy in setup.both() {
        let who = proxy.name();
        let lines = proxy.wait_for_lines("http_call_response", 1);
        assert_eq!(
            lines[0],
            "http_call_response ctx=root headers=4/4 status=200 \
             names=:status,content-length,x-callee,x-envoy-upstream-service-time \
             body=pong trailers=0/0",
            "{who}"
        );
        // One call per ticking root context, as many on both hosts; each
        // reached the callee.
        let ticks = wait_until(Duration::from_secs(10), "a /tick per tick call", || {
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
            (calls >= 1 && ticks.len() == calls).then_some(ticks)
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
        drop(proxy);
        // The next proxy's callee requests are counted afresh.
        callee.seen.lock().unwrap().clear();
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
