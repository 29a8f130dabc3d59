//! Micro-benchmark: one `proxy_on_request_headers` call of the jwt filter (a
//! signed POST) and of the no-op filter, through the test host's direct API
//! (wasmtime, no HTTP). Needs `make wasm fixtures` first; run with
//! `cargo bench -p jwt-proxy-tests --bench on_request_headers`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use jwt_proxy_tests::{default_config, wasm};
use test_host::HostBuilder;

const HEADERS: [(&str, &str); 6] = [
    (":method", "POST"),
    (":path", "/bench"),
    (":authority", "127.0.0.1"),
    (":scheme", "http"),
    ("content-type", "application/json"),
    ("content-length", "76"),
];

fn on_request_headers(c: &mut Criterion) {
    for (name, config) in [
        ("jwt_filter", default_config()),
        ("noop_filter", String::new()),
    ] {
        let plugin = HostBuilder::new(wasm(name))
            .plugin_config(config.into_bytes())
            .echo_logs(false)
            .instantiate()
            .expect("the plugin starts");
        // Only the callback is timed; the context is created before it and
        // finished (on_done, which deletes it) after it, untimed.
        c.bench_function(&format!("on_request_headers/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let ctx = plugin.create_http_context().unwrap();
                    let start = Instant::now();
                    black_box(plugin.on_request_headers(ctx, &HEADERS, false).unwrap());
                    timed += start.elapsed();
                    plugin.on_done(ctx).unwrap();
                }
                timed
            })
        });
    }
}

criterion_group!(benches, on_request_headers);
criterion_main!(benches);
