//! gRPC unary calls and streams (`conf-grpc`, the gRPC server of
//! `jwt_proxy_tests::grpc`): every scenario on Envoy and on the test host
//! with the same assertions: the client's response, what the gRPC server
//! received, and the filter's log lines (callbacks in order with their
//! arguments, `get_grpc_status()` after each).
//!
//! Envoy 1.40 as measured: tokens `5, 9, ...` for calls and `6, 10, ...` for
//! streams; an unknown cluster is `ParseFailure`; an upstream status message
//! is `MESSAGE{via_upstream}` (`via_upstream` when empty, `grpc-message`
//! still percent-encoded); a status code stays after the next successful
//! call, its message does not; a unary timeout is `13 response_timeout`; a
//! dead cluster is `14` with Envoy's reset text.

use std::time::Duration;

use jwt_proxy_tests::grpc::{End, GrpcServer, Received};
use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::{HeldPort, Upstream, raw, wasm};

const DEAD: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";

struct World {
    _upstream: Upstream,
    _refusing: HeldPort,
    server: GrpcServer,
    setup: Setup,
}

fn world() -> World {
    let upstream = Upstream::start();
    let server = GrpcServer::start();
    let refusing = HeldPort::new();
    let mut setup = Setup::new(upstream.addr());
    setup.wasm = wasm("conf_grpc");
    setup.config = "{}".into();
    setup.clusters = vec![
        ("grpc".into(), format!("h2c://{}", server.addr())),
        ("dead".into(), format!("h2c://{}", refusing.addr())),
    ];
    World {
        _upstream: upstream,
        _refusing: refusing,
        server,
        setup,
    }
}

/// The fixture's lines so far, without the `conf-grpc ` prefix.
fn lines(proxy: &Proxy) -> Vec<String> {
    proxy
        .filter_log()
        .iter()
        .filter_map(|l| l.split_once("conf-grpc ").map(|(_, m)| m.to_owned()))
        .collect()
}

/// One request with `headers`; its status, `x-grpc-status` and body, and the
/// log lines it added (waiting until `last` is logged).
fn run(proxy: &Proxy, headers: &[&str], last: &str) -> (String, String, Vec<String>) {
    let before = lines(proxy).len();
    let r = raw::exchange(proxy.addr(), &raw::bare("GET", "/", headers));
    assert_eq!(r.status, 200, "{}: {headers:?}", proxy.name());
    proxy.wait_for_lines(last, 1);
    let added = lines(proxy).split_off(before);
    (
        r.header("x-grpc-status").unwrap_or("").to_owned(),
        r.text(),
        added,
    )
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// What Envoy sends on every call: the assertions on the server's record.
fn assert_envoy_metadata(call: &Received, path: &str, timeout: Option<&str>, who: &str) {
    assert_eq!(call.path, path, "{who}");
    assert_eq!(call.authority, "grpc", "{who}: :authority is the cluster");
    assert_eq!(call.one("te").as_deref(), Some("trailers"), "{who}");
    assert_eq!(
        call.one("content-type").as_deref(),
        Some("application/grpc"),
        "{who}"
    );
    assert_eq!(call.one("x-fixture").as_deref(), Some("conf-grpc"), "{who}");
    assert_eq!(
        call.one("x-envoy-internal").as_deref(),
        Some("true"),
        "{who}"
    );
    assert_eq!(
        call.one("grpc-timeout").as_deref(),
        timeout.map(|t| format!("{t}m")).as_deref(),
        "{who}"
    );
    let expected = timeout.filter(|t| *t != "0");
    assert_eq!(
        call.one("x-envoy-expected-rq-timeout-ms").as_deref(),
        expected,
        "{who}"
    );
    assert_eq!(call.one("user-agent"), None, "{who}");
}

#[test]
fn unary_ok_then_error_status_then_ok() {
    let w = world();
    for proxy in w.setup.both() {
        let who = proxy.name();
        let n = w.server.calls().len();
        let (status, body, log) = run(&proxy, &["x-scenario: unary"], "body=");
        assert_eq!((status.as_str(), body.as_str()), ("0", "hello"), "{who}");
        assert_eq!(
            log,
            strings(&[
                "scenario=unary cluster=grpc",
                "dispatch Unary -> Ok(5)",
                "call_response token=5 status=0 size=5",
                "get_status code=0 message=None",
                "body=hello",
            ]),
            "{who}"
        );
        let headers = ["x-scenario: fail", "x-message: 7:denied here"];
        let (status, body, log) = run(&proxy, &headers, "body=");
        assert_eq!((status.as_str(), body.as_str()), ("7", "<none>"), "{who}");
        assert_eq!(
            log,
            strings(&[
                "scenario=fail cluster=grpc",
                "dispatch Fail -> Ok(9)",
                "call_response token=9 status=7 size=0",
                "get_status code=7 message=Some(\"denied%20here{via_upstream}\")",
                "body=<none>",
            ]),
            "{who}"
        );
        // The code stays from the last close; its message does not.
        let (status, _, log) = run(&proxy, &["x-scenario: unary"], "body=");
        assert_eq!(status, "7", "{who}");
        assert_eq!(log[3], "get_status code=7 message=None", "{who}");
        let calls = w.server.wait_for_ended(n + 3);
        let calls = &calls[n..];
        assert_envoy_metadata(&calls[0], "/test.Echo/Unary", Some("5000"), who);
        assert_envoy_metadata(&calls[1], "/test.Echo/Fail", Some("5000"), who);
        assert_eq!(calls[0].texts(), ["hello"], "{who}");
        assert_eq!(calls[1].texts(), ["7:denied here"], "{who}");
        assert!(calls.iter().all(|c| c.end == End::Eos), "{who}: {calls:?}");
    }
}

#[test]
fn an_unknown_cluster_is_parse_failure() {
    let w = world();
    for proxy in w.setup.both() {
        let who = proxy.name();
        for (scenario, call) in [("unary", "dispatch Unary"), ("many", "open Many")] {
            let headers = [&format!("x-scenario: {scenario}")[..], "x-cluster: nope"];
            let (status, body, log) = run(&proxy, &headers, call);
            assert_eq!(
                (status.as_str(), body.as_str()),
                ("ParseFailure", ""),
                "{who}"
            );
            assert_eq!(
                log,
                vec![
                    format!("scenario={scenario} cluster=nope"),
                    format!("{call} -> Err(ParseFailure)"),
                ],
                "{who}"
            );
        }
    }
    assert!(w.server.calls().is_empty(), "{:?}", w.server.calls());
}

#[test]
fn a_unary_timeout_is_internal_response_timeout() {
    let w = world();
    for proxy in w.setup.both() {
        let who = proxy.name();
        let n = w.server.calls().len();
        let headers = ["x-scenario: slow", "x-timeout-ms: 300"];
        let (status, _, log) = run(&proxy, &headers, "body=");
        assert_eq!(status, "13", "{who}");
        assert_eq!(
            log,
            strings(&[
                "scenario=slow cluster=grpc",
                "dispatch Slow -> Ok(5)",
                "call_response token=5 status=13 size=0",
                "get_status code=13 message=Some(\"response_timeout\")",
                "body=<none>",
            ]),
            "{who}"
        );
        // Timeout 0: no deadline, but `grpc-timeout: 0m` all the same.
        let headers = ["x-scenario: unary", "x-timeout-ms: 0"];
        let (status, body, _) = run(&proxy, &headers, "body=");
        assert_eq!((status.as_str(), body.as_str()), ("13", "hello"), "{who}");
        let calls = w.server.wait_for_ended(n + 2);
        assert_envoy_metadata(&calls[n], "/test.Echo/Slow", Some("300"), who);
        assert_envoy_metadata(&calls[n + 1], "/test.Echo/Unary", Some("0"), who);
    }
}

#[test]
fn a_dead_cluster_is_unavailable() {
    let w = world();
    let message = format!(
        "Some(\"{DEAD}{{upstream_reset_before_response_started{{remote_connection_failure|delayed_connect_error:_Connection_refused}}}}\")"
    );
    for proxy in w.setup.both() {
        let who = proxy.name();
        let (status, _, log) = run(&proxy, &["x-scenario: unary", "x-cluster: dead"], "body=");
        assert_eq!(status, "14", "{who}");
        assert_eq!(
            log,
            vec![
                "scenario=unary cluster=dead".to_owned(),
                "dispatch Unary -> Ok(5)".to_owned(),
                "call_response token=5 status=14 size=0".to_owned(),
                format!("get_status code=14 message={message}"),
                "body=<none>".to_owned(),
            ],
            "{who}"
        );
        let headers = ["x-scenario: many", "x-cluster: dead"];
        let (status, body, log) = run(&proxy, &headers, "get_status");
        assert_eq!((status.as_str(), body.as_str()), ("14", ""), "{who}");
        assert_eq!(
            log,
            vec![
                "scenario=many cluster=dead".to_owned(),
                "open Many -> Ok(6)".to_owned(),
                "send 3 end_stream=true".to_owned(),
                "initial_metadata token=6 n=0 ".to_owned(),
                format!(
                    "trailing_metadata token=6 n=4 :status=200,content-type=application/grpc,grpc-message={DEAD},grpc-status=14"
                ),
                "stream_close token=6 status=14".to_owned(),
                format!("get_status code=14 message={message}"),
            ],
            "{who}"
        );
    }
    assert!(w.server.calls().is_empty());
}

#[test]
fn streams_carry_several_messages_both_ways() {
    let w = world();
    for proxy in w.setup.both() {
        let who = proxy.name();
        let n = w.server.calls().len();
        let (status, body, log) = run(&proxy, &["x-scenario: stream"], "get_status");
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("0", "echo:m1|echo:m2|echo:m3"),
            "{who}"
        );
        assert_eq!(
            log,
            strings(&[
                "scenario=stream cluster=grpc",
                "open Chat -> Ok(6)",
                "send m1 end_stream=false",
                "send m2 end_stream=false",
                "initial_metadata token=6 n=4 :status=200,content-type=application/grpc,x-server=grpc-test",
                "message token=6 size=7 body=echo:m1",
                "message token=6 size=7 body=echo:m2",
                "send m3 end_stream=true",
                "message token=6 size=7 body=echo:m3",
                "trailing_metadata token=6 n=2 grpc-status=0,x-trailer=chat",
                "stream_close token=6 status=0",
                "get_status code=0 message=Some(\"via_upstream\")",
            ]),
            "{who}"
        );
        let (status, body, log) = run(&proxy, &["x-scenario: many"], "get_status");
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("0", "reply-1|reply-2|reply-3"),
            "{who}"
        );
        // The request was complete before the answer: Envoy's router adds
        // its upstream time.
        assert_eq!(
            log[3],
            "initial_metadata token=10 n=5 :status=200,content-type=application/grpc,x-envoy-upstream-service-time,x-server=grpc-test",
            "{who}"
        );
        assert_eq!(
            log[7..],
            strings(&[
                "trailing_metadata token=10 n=2 grpc-status=0,x-trailer=many",
                "stream_close token=10 status=0",
                "get_status code=0 message=Some(\"via_upstream\")",
            ]),
            "{who}"
        );
        let calls = w.server.wait_for_ended(n + 2);
        assert_envoy_metadata(&calls[n], "/test.Echo/Chat", None, who);
        assert_eq!(calls[n].texts(), ["m1", "m2", "m3"], "{who}");
        assert_eq!(calls[n + 1].texts(), ["3"], "{who}");
        assert!(calls[n..].iter().all(|c| c.end == End::Eos), "{who}");
    }
}

#[test]
fn cancel_resets_and_close_half_closes() {
    let w = world();
    for proxy in w.setup.both() {
        let who = proxy.name();
        let n = w.server.calls().len();
        let (status, body, log) = run(&proxy, &["x-scenario: cancel"], "cancel ");
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("cancelled", "echo:m1"),
            "{who}"
        );
        assert_eq!(
            log[1..],
            strings(&[
                "open Chat -> Ok(6)",
                "send m1 end_stream=false",
                "initial_metadata token=6 n=4 :status=200,content-type=application/grpc,x-server=grpc-test",
                "message token=6 size=7 body=echo:m1",
                "cancel 6",
            ]),
            "{who}"
        );
        let calls = w.server.wait_for_ended(n + 1);
        assert_eq!(calls[n].texts(), ["m1"], "{who}");
        assert_eq!(
            calls[n].end,
            End::Reset,
            "{who}: a cancelled stream is reset"
        );

        let (status, body, log) = run(&proxy, &["x-scenario: close"], "get_status");
        assert_eq!((status.as_str(), body.as_str()), ("0", "echo:m1"), "{who}");
        assert_eq!(
            log[3..],
            strings(&[
                "initial_metadata token=10 n=4 :status=200,content-type=application/grpc,x-server=grpc-test",
                "message token=10 size=7 body=echo:m1",
                "close 10",
                "trailing_metadata token=10 n=2 grpc-status=0,x-trailer=chat",
                "stream_close token=10 status=0",
                "get_status code=0 message=Some(\"via_upstream\")",
            ]),
            "{who}"
        );
        let calls = w.server.wait_for_ended(n + 2);
        assert_eq!(calls[n + 1].texts(), ["m1"], "{who}");
        assert_eq!(
            calls[n + 1].end,
            End::Eos,
            "{who}: close ends the client's side"
        );

        // A cancelled unary call: no callback ever (whether it reached the
        // server is a race on both).
        let (status, _, log) = run(&proxy, &["x-scenario: cancel-call"], "cancel ");
        assert_eq!(status, "cancelled", "{who}");
        assert_eq!(
            log[1..],
            strings(&["dispatch Slow -> Ok(5)", "cancel 5"]),
            "{who}"
        );
        let cancelled = lines(&proxy).len();

        // The HTTP context ends while its stream is open: the stream belongs
        // to the root context, so nothing cancels it.
        let n = w.server.calls().len();
        let (status, _, _) = run(&proxy, &["x-scenario: orphan"], "send m1");
        assert_eq!(status, "orphaned", "{who}");
        // The orphan's request came after the cancel, and nothing for the
        // cancelled call came in between.
        let after = lines(&proxy);
        assert_eq!(
            after[cancelled - 1],
            "cancel 5",
            "{who}: {:?}",
            &after[cancelled - 1..]
        );
        assert!(
            !after.iter().any(|l| l.starts_with("stream_close token=6")),
            "{who}: a cancelled stream gets no close: {after:?}"
        );
        // Found by path, not by position: the cancelled unary call may
        // reach the server after `n` was read (the race above).
        let orphan = jwt_proxy_tests::wait_until(Duration::from_secs(10), "the orphan", || {
            let calls = w.server.calls();
            (n..calls.len())
                .find(|&i| calls[i].path == "/test.Echo/Chat" && !calls[i].messages.is_empty())
        });
        // A later call on the same connection: a reset of the orphan, had
        // one been sent when its HTTP context ended, came before it.
        let (status, _, _) = run(&proxy, &["x-scenario: unary"], "body=");
        assert_eq!(status, "0", "{who}");
        let calls = jwt_proxy_tests::wait_until(
            Duration::from_secs(10),
            "the unary call after the orphan, ended",
            || {
                let calls = w.server.calls();
                calls[orphan + 1..]
                    .iter()
                    .any(|c| c.path == "/test.Echo/Unary" && c.end != End::Open)
                    .then_some(calls)
            },
        );
        assert_eq!(calls[orphan].texts(), ["m1"], "{who}");
        assert_eq!(
            calls[orphan].end,
            End::Open,
            "{who}: the orphaned stream stays open"
        );
    }
}

#[test]
fn metadata_names_are_lowercased_and_bad_metadata_is_internal_failure() {
    let w = world();
    for proxy in w.setup.both() {
        let who = proxy.name();
        let (status, _, log) = run(&proxy, &["x-scenario: upper"], "body=");
        assert_eq!(status, "0", "{who}");
        assert_eq!(log[1], "dispatch Unary -> Ok(5)", "{who}");
        let call = w
            .server
            .wait_for_ended(w.server.calls().len())
            .pop()
            .unwrap();
        assert_eq!(call.one("x-upper").as_deref(), Some("Up"), "{who}");
        let n = w.server.calls().len();
        for bad in ["bad-value", "bad-name"] {
            let (status, body, log) = run(&proxy, &[&format!("x-scenario: {bad}")], "dispatch");
            assert_eq!(
                (status.as_str(), body.as_str()),
                ("InternalFailure", ""),
                "{who}"
            );
            assert_eq!(log[1], "dispatch Unary -> Err(InternalFailure)", "{who}");
        }
        // The refused calls spent their tokens.
        let (_, _, log) = run(&proxy, &["x-scenario: unary"], "body=");
        assert_eq!(log[1], "dispatch Unary -> Ok(17)", "{who}");
        // The refused calls were dispatched before the good one: had they
        // been sent, they would have arrived before it ended.
        w.server.wait_for_ended(n + 1);
        assert_eq!(
            w.server.calls().len(),
            n + 1,
            "{who}: only the good call arrived"
        );
    }
}
