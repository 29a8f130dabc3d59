//! A body held at its end (`conf-body`, issue 24): a body callback that returns `Pause` on
//! the end-of-stream call holds the whole body until the filter resumes the stream or answers
//! it. Envoy 1.40 forwards nothing of the body meanwhile (measured), then the whole body on a
//! resume; after a local reply the client gets the reply and the upstream never the request;
//! a held response body answered locally cuts the response (its head has gone).
//!
//! Not compared: Envoy sends the message's head before its body callbacks run (the upstream
//! reads the held request's head, the client the held response's), the test host sends it
//! with the first forwarded body bytes, framed as they turned out.
//!
//! The filter resumes (or replies) from the answer of its call to the cluster `release`, which
//! the test holds and releases ([`Scripted::release`]), so the test decides how long the body
//! stays held. "Nothing arrived yet" is checked after a barrier: the filter logged that it
//! holds the body, then a second request went through the same proxy and upstream and came
//! back.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::{self, Response};
use jwt_proxy_tests::scripted::{Reply, Scripted};
use jwt_proxy_tests::{wait_until, wasm};

/// The `release` cluster's answer, sent once the test releases it.
const RELEASED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

/// The upstream (echoes each request, records it) and the `release` cluster.
struct Clusters {
    upstream: Scripted,
    release: Scripted,
}

impl Clusters {
    fn start() -> Clusters {
        Clusters {
            upstream: Scripted::start(|_| Reply::Echo),
            release: Scripted::start(|_| Reply::Held(RELEASED)),
        }
    }

    fn setup(&self) -> Setup {
        Setup {
            wasm: wasm("conf_body"),
            config: "{}".to_owned(),
            clusters: vec![("release".to_owned(), self.release.addr().to_string())],
            ..Setup::new(self.upstream.addr())
        }
    }

    /// The bodies of the requests the upstream received whole, from the `skip`-th on.
    fn bodies(&self, skip: usize) -> Vec<String> {
        self.upstream.seen()[skip..]
            .iter()
            .map(|h| String::from_utf8_lossy(&h.body).into_owned())
            .collect()
    }
}

/// Sends `request` on a connection of its own; the thread gives back the response.
fn send(addr: SocketAddr, request: Vec<u8>) -> JoinHandle<Response> {
    std::thread::spawn(move || raw::exchange(addr, &request))
}

/// The filter logged `line` (once more than `before` times).
fn logged(proxy: &Proxy, line: &str, before: usize) {
    proxy.wait_for_lines(line, before + 1);
}

fn count(proxy: &Proxy, line: &str) -> usize {
    proxy
        .filter_log()
        .iter()
        .filter(|l| l.contains(line))
        .count()
}

/// A request that goes straight through (no hold) and comes back: what the proxy had to send
/// the upstream before it has been sent.
fn barrier(proxy: &Proxy) {
    let r = raw::exchange(proxy.addr(), &raw::post("/barrier", &[], b"barrier"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "barrier"),
        "{}",
        proxy.name()
    );
}

/// Waits for the `release` call of the held body to arrive, then releases it.
fn release(clusters: &Clusters, calls_before: usize) {
    wait_until(Duration::from_secs(10), "the release call", || {
        (clusters.release.seen().len() > calls_before).then_some(())
    });
    clusters.release.release();
}

#[test]
fn a_request_body_held_at_its_end_goes_upstream_whole_once_resumed() {
    let clusters = Clusters::start();
    for proxy in clusters.setup().both() {
        let who = proxy.name();
        let (seen, calls, held) = (
            clusters.upstream.seen().len(),
            clusters.release.seen().len(),
            count(&proxy, "conf-body request held"),
        );
        let client = send(
            proxy.addr(),
            raw::post("/held", &["x-req: call"], b"the whole body"),
        );
        logged(&proxy, "conf-body request held", held);
        barrier(&proxy);
        eprintln!(
            "MEASURE {who}: arrived heads while held: {:?}",
            clusters
                .upstream
                .arrived()
                .iter()
                .map(|h| h.path.clone())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            clusters.bodies(seen),
            ["barrier"],
            "{who}: only the barrier reached the upstream while the body was held"
        );

        release(&clusters, calls);
        let r = client.join().unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "the whole body"),
            "{who}"
        );
        assert_eq!(
            clusters.bodies(seen),
            ["barrier", "the whole body"],
            "{who}"
        );
        let last = clusters.upstream.last();
        assert_eq!(last.path, "/held", "{who}");
        assert_eq!(last.one("content-length").as_deref(), Some("14"), "{who}");
    }
}

#[test]
fn a_local_reply_to_a_held_request_body_never_reaches_the_upstream() {
    let clusters = Clusters::start();
    for proxy in clusters.setup().both() {
        let who = proxy.name();
        let (seen, calls, held) = (
            clusters.upstream.seen().len(),
            clusters.release.seen().len(),
            count(&proxy, "conf-body request held"),
        );
        let client = send(
            proxy.addr(),
            raw::post("/refused", &["x-req: reply"], b"not for the upstream"),
        );
        logged(&proxy, "conf-body request held", held);
        release(&clusters, calls);
        let r = client.join().unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (403, "held body refused"),
            "{who}"
        );
        // Whatever the proxy had sent of the held request went before the reply.
        barrier(&proxy);
        assert_eq!(clusters.bodies(seen), ["barrier"], "{who}");
    }
}

#[test]
fn a_request_body_held_until_a_tick_comes_after_the_resume() {
    let clusters = Clusters::start();
    for proxy in clusters.setup().both() {
        let who = proxy.name();
        let before = proxy.filter_log().len();
        let r = raw::exchange(
            proxy.addr(),
            &raw::post("/ticked", &["x-req: hold"], b"ticked"),
        );
        assert_eq!((r.status, r.text().as_str()), (200, "ticked"), "{who}");
        let lines: Vec<String> = proxy.filter_log()[before..]
            .iter()
            .filter(|l| {
                [
                    "conf-body hold",
                    "conf-body resume",
                    "conf-body response headers",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(|l| match l.split_once(" resume ") {
                Some((head, _)) => format!("{head} resume"),
                None => l.clone(),
            })
            .collect();
        assert_eq!(
            lines,
            [
                "conf-body hold",
                "conf-body resume",
                "conf-body response headers eos=false"
            ],
            "{who}: the upstream answered only after the tick resumed the request"
        );
    }
}

#[test]
fn a_response_body_held_at_its_end_reaches_the_client_once_resumed() {
    let clusters = Clusters::start();
    for proxy in clusters.setup().both() {
        let who = proxy.name();
        let (calls, held) = (
            clusters.release.seen().len(),
            count(&proxy, "conf-body response held"),
        );
        let client = send(
            proxy.addr(),
            raw::post("/answer", &["x-resp: call"], b"the whole answer"),
        );
        logged(&proxy, "conf-body response held", held);
        barrier(&proxy);
        assert!(
            !client.is_finished(),
            "{who}: the client got its response while the body was held"
        );
        release(&clusters, calls);
        let r = client.join().unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "the whole answer"),
            "{who}"
        );
    }
}

#[test]
fn a_local_reply_to_a_held_response_body_cuts_the_response() {
    let clusters = Clusters::start();
    for proxy in clusters.setup().both() {
        let who = proxy.name();
        let (calls, held) = (
            clusters.release.seen().len(),
            count(&proxy, "conf-body response held"),
        );
        let mut conn = raw::Conn::connect(proxy.addr()).unwrap();
        conn.send(&raw::post("/answer", &["x-resp: reply"], b"never whole"))
            .unwrap();
        logged(&proxy, "conf-body response held", held);
        release(&clusters, calls);
        // Too late for a reply: Envoy has sent the response's head (the test host has not:
        // its head waits for the body's framing); either way the connection closes before
        // the body.
        let r = conn.read_response(false);
        assert!(r.is_err(), "{who}: a whole response after the reply: {r:?}");
        assert!(conn.closed_by_peer(Duration::from_secs(10)), "{who}");
    }
}
