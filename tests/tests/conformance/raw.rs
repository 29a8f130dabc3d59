//! The raw ABI (`conf_raw`, no SDK; issue 24): what an SDK hides or another toolchain
//! produces, on Envoy and the test host with the same assertions. A module of ABI 0.2.0 with
//! `_start` and Emscripten's two imports loads and runs; an HTTP callout's response goes to
//! the root context with Envoy's token; a header given twice and the filter's own
//! `content-length` reach the cluster as Envoy sends them; out-of-range timeouts are refused;
//! the foreign functions `compress` / `uncompress` give zlib's bytes.

use jwt_proxy_tests::Upstream;
use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::{Response, exchange};
use jwt_proxy_tests::wasm;

use crate::callout::Callee;

fn setup(upstream: &Upstream, callee: &Callee) -> Setup {
    Setup {
        wasm: wasm("conf_raw"),
        clusters: vec![("callee".to_owned(), callee.addr().to_string())],
        ..Setup::new(upstream.addr())
    }
}

fn get(proxy: &Proxy, mode: &str) -> Response {
    let request =
        format!("GET /x HTTP/1.1\r\nhost: client\r\nx-raw: {mode}\r\nconnection: close\r\n\r\n");
    exchange(proxy.addr(), request.as_bytes())
}

#[test]
fn an_abi_0_2_0_module_with_start_and_emscripten_imports_loads_and_runs() {
    let upstream = Upstream::start();
    let callee = Callee::start();
    for proxy in setup(&upstream, &callee).both() {
        let who = proxy.name();
        // The base VM, the main thread's and the one worker's: `_start` ran before
        // `proxy_on_vm_start` in each; `pthread_equal` compares, the growth notice is taken.
        let lines = proxy.wait_for_lines("vm_start", 3);
        assert_eq!(lines.len(), 3, "{who}: {lines:?}");
        for line in &lines {
            assert_eq!(
                line, "vm_start root=1 started=true pthread_equal=1,0",
                "{who}"
            );
        }
        let r = get(&proxy, "none");
        assert_eq!(r.status, 200, "{who}: the request reached the upstream");
    }
}

#[test]
fn a_callout_response_goes_to_the_root_context_and_headers_go_as_envoy_sends_them() {
    let upstream = Upstream::start();
    let callee = Callee::start();
    for proxy in setup(&upstream, &callee).both() {
        let who = proxy.name();
        let before = callee.seen().len();
        let r = get(&proxy, "call");
        assert_eq!(r.status, 200, "{who}");
        // The root context's id (not the calling HTTP context's), Envoy's first HTTP token.
        assert_eq!(
            r.text(),
            "http_call_response context=ROOT token=4 headers=4",
            "{who}"
        );
        proxy.wait_for_lines("call: ok token=4", 1);
        let seen = callee.seen();
        assert_eq!(seen.len(), before + 1, "{who}");
        let c = &seen[before];
        assert_eq!(
            (c.method.as_str(), c.path.as_str()),
            ("POST", "/raw"),
            "{who}"
        );
        let all = |name: &str| -> Vec<&str> {
            c.headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        // A name given twice: both values, each on its own line, in order.
        assert_eq!(all("x-twice"), ["a", "b"], "{who}: {c:?}");
        // The body's length replaces the filter's `content-length: 99`.
        assert_eq!(all("content-length"), ["4"], "{who}: {c:?}");
        assert_eq!(c.body, "ping", "{who}");
    }
}

#[test]
fn callout_timeouts_beyond_a_signed_int_are_refused() {
    let upstream = Upstream::start();
    let callee = Callee::start();
    for proxy in setup(&upstream, &callee).both() {
        let who = proxy.name();
        let r = get(&proxy, "timeouts");
        assert_eq!(r.status, 200, "{who}");
        // SDK 0.2.5's `Duration::new(u64::MAX, 0)`, `u32::MAX`, `i32::MAX + 1`: BadArgument.
        let lines = proxy.wait_for_lines("timeout ", 3);
        assert_eq!(
            lines,
            [
                "timeout 4294966296: status 2",
                "timeout 4294967295: status 2",
                "timeout 2147483648: status 2",
            ],
            "{who}"
        );
        assert!(
            !callee.seen().iter().any(|c| c.path == "/timeout"),
            "{who}: a refused call was sent"
        );
    }
}

#[test]
fn the_foreign_functions_compress_and_uncompress_give_zlibs_bytes() {
    let upstream = Upstream::start();
    let callee = Callee::start();
    for proxy in setup(&upstream, &callee).both() {
        let who = proxy.name();
        let r = get(&proxy, "foreign");
        assert_eq!(r.status, 200, "{who}");
        proxy.wait_for_lines("unknown: ", 1);
        let log: Vec<String> = proxy
            .filter_log()
            .into_iter()
            .filter(|l| l.contains("compress") || l.starts_with("unknown"))
            .collect();
        // zlib's compress() at its default level (hex); uncompress ignores what follows the
        // stream and refuses a cut, corrupt or empty one (SerializationFailure, 3); an unknown
        // function is NotFound (1).
        assert_eq!(
            log,
            [
                "compress: 789ccb48cdc9c957c8402701680308b1",
                "uncompress trailing: 68656c6c6f2068656c6c6f2068656c6c6f2068656c6c6f",
                "uncompress truncated: status 3",
                "uncompress: hello hello hello hello",
                "compress empty: 789c030000000001",
                "uncompress garbage: status 3",
                "uncompress empty: status 3",
                "unknown: status 1",
            ],
            "{who}"
        );
    }
}
