//! A harness for profiling a filter's per-request work deterministically:
//! `filter_profile WASM CONFIG_FILE|- N` runs N signed POSTs (context create,
//! request headers, response headers, log, done) through the test host's
//! direct API (wasmtime, no HTTP) and exits. `make bench` runs it twice under
//! `valgrind --tool=callgrind` with two values of N and divides the
//! difference in instructions (and in hostcalls) by the difference in N, so
//! the module's compilation and the VM's start cancel out.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use test_host::HostBuilder;

const REQUEST: [(&str, &str); 6] = [
    (":method", "POST"),
    (":path", "/bench"),
    (":authority", "127.0.0.1"),
    (":scheme", "http"),
    ("content-type", "application/json"),
    ("content-length", "76"),
];

const RESPONSE: [(&str, &str); 3] = [
    (":status", "200"),
    ("content-type", "application/json"),
    ("content-length", "76"),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, wasm, config, n] = args.as_slice() else {
        eprintln!("usage: filter_profile WASM CONFIG_FILE|- N");
        std::process::exit(2);
    };
    let config = if config == "-" {
        Vec::new()
    } else {
        std::fs::read(config).expect("the configuration file reads")
    };
    let n: u32 = n.parse().expect("N is a number");
    let plugin = HostBuilder::new(std::path::PathBuf::from(wasm))
        .plugin_config(config)
        .echo_logs(false)
        .log_capacity(16)
        .instantiate()
        .expect("the plugin starts");
    for _ in 0..n {
        let ctx = plugin.create_http_context().unwrap();
        black_box(plugin.on_request_headers(ctx, &REQUEST, false).unwrap());
        black_box(plugin.on_response_headers(ctx, &RESPONSE, false).unwrap());
        plugin.on_log(ctx).unwrap();
        plugin.on_done(ctx).unwrap();
    }
}
