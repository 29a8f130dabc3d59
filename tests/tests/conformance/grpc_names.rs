//! gRPC service and method names (`conf-grpc`, issue 24), on Envoy and the test host with the
//! same assertions: a stream to a method the server does not implement is sent (the server
//! answers `12`), as is one with an empty service or method; a name HTTP/2 cannot carry in
//! `:path` (a space) is reset by Envoy's codec before anything is sent, and the filter gets
//! Envoy's `14` `protocol error` (a stream first its empty initial metadata and Envoy's
//! trailers-only reply).

use jwt_proxy_tests::grpc::GrpcServer;
use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::{Upstream, raw, wasm};

fn setup(upstream: &Upstream, server: &GrpcServer) -> Setup {
    let mut setup = Setup::new(upstream.addr());
    setup.wasm = wasm("conf_grpc");
    setup.config = "{}".into();
    setup.clusters = vec![("grpc".into(), format!("h2c://{}", server.addr()))];
    setup
}

/// One request with `headers`: `x-grpc-status`, and the fixture's lines it added (without
/// the `conf-grpc ` prefix and the `scenario=` line), once `get_status` is logged.
fn run(proxy: &Proxy, headers: &[&str]) -> (String, Vec<String>) {
    let lines = |p: &Proxy| -> Vec<String> {
        p.filter_log()
            .iter()
            .filter_map(|l| l.split_once("conf-grpc ").map(|(_, m)| m.to_owned()))
            .filter(|l| !l.starts_with("scenario="))
            .collect()
    };
    let before = lines(proxy).len();
    let r = raw::exchange(proxy.addr(), &raw::bare("GET", "/", headers));
    assert_eq!(r.status, 200, "{}: {headers:?}", proxy.name());
    let n = proxy
        .filter_log()
        .iter()
        .filter(|l| l.contains("get_status"))
        .count();
    proxy.wait_for_lines("get_status", n.max(1));
    let status = r.header("x-grpc-status").unwrap_or("").to_owned();
    (status, lines(proxy).split_off(before))
}

const UNKNOWN: &str = "get_status code=12 message=Some(\"unknown%20method{via_upstream}\")";

#[test]
fn a_stream_to_a_method_the_server_lacks_is_sent_and_answered() {
    let upstream = Upstream::start();
    let server = GrpcServer::start();
    for proxy in setup(&upstream, &server).both() {
        let who = proxy.name();
        let n = server.calls().len();
        let (status, log) = run(&proxy, &["x-scenario: unknown-method"]);
        assert_eq!(status, "12", "{who}");
        assert_eq!(
            log,
            [
                "open Nope -> Ok(6)",
                "send m1 end_stream=true",
                "initial_metadata token=6 n=5 :status=200,content-type=application/grpc,\
                 x-envoy-upstream-service-time,x-server=grpc-test",
                "trailing_metadata token=6 n=2 grpc-message=unknown%20method,grpc-status=12",
                "stream_close token=6 status=12",
                UNKNOWN,
            ],
            "{who}"
        );
        // An empty service or method is sent as it is.
        for (header, path) in [("x-service: ", "//Nope"), ("x-method: ", "/test.Echo/")] {
            let (status, log) = run(&proxy, &["x-scenario: unknown-method", header]);
            assert_eq!(status, "12", "{who} {header}");
            assert_eq!(log.last().map(String::as_str), Some(UNKNOWN), "{who}");
            assert!(
                server.calls().iter().skip(n).any(|c| c.path == path),
                "{who}: {path}"
            );
        }
        let calls = server.wait_for_ended(n + 3);
        assert_eq!(calls[n].path, "/test.Echo/Nope", "{who}");
        assert_eq!(calls[n].texts(), ["m1"], "{who}");
    }
}

#[test]
fn a_name_http2_cannot_carry_is_reset_before_it_is_sent() {
    let upstream = Upstream::start();
    let server = GrpcServer::start();
    let reset = "upstream connect error or disconnect/reset before headers. reset reason: \
                 protocol error";
    for proxy in setup(&upstream, &server).both() {
        let who = proxy.name();
        let headers = ["x-scenario: unknown-method", "x-method: N ope"];
        let (status, log) = run(&proxy, &headers);
        assert_eq!(status, "14", "{who}");
        assert_eq!(
            log,
            [
                "open N ope -> Ok(6)".to_owned(),
                "send m1 end_stream=true".to_owned(),
                "initial_metadata token=6 n=0 ".to_owned(),
                format!(
                    "trailing_metadata token=6 n=4 :status=200,content-type=application/grpc,\
                     grpc-message={reset},grpc-status=14"
                ),
                "stream_close token=6 status=14".to_owned(),
                format!(
                    "get_status code=14 message=Some(\"{reset}\
                     {{upstream_reset_before_response_started{{protocol_error}}}}\")"
                ),
            ],
            "{who}"
        );
        let (status, log) = run(&proxy, &["x-scenario: unary", "x-service: a b"]);
        assert_eq!(status, "14", "{who}");
        assert_eq!(
            log,
            [
                "dispatch Unary -> Ok(5)".to_owned(),
                "call_response token=5 status=14 size=0".to_owned(),
                format!(
                    "get_status code=14 message=Some(\"{reset}\
                     {{upstream_reset_before_response_started{{protocol_error}}}}\")"
                ),
                "body=<none>".to_owned(),
            ],
            "{who}"
        );
    }
    assert!(server.calls().is_empty(), "{:?}", server.calls());
}
