//! The module `make wasm` ships: Envoy calls every callback a module
//! exports, so the build drops the callbacks the filter does not implement
//! (the body and trailer ones, `proxy_on_done`; filter/trim). A plain `cargo build` relinks the
//! module with them; these tests catch a module that skipped the step.

use trim_exports::{UNUSED_CALLBACKS, function_exports};

fn exports(name: &str) -> Vec<String> {
    let path = jwt_proxy_tests::wasm(name);
    let bytes = std::fs::read(&path).unwrap();
    function_exports(&bytes).unwrap()
}

#[test]
fn the_filter_exports_no_unused_callbacks() {
    let exports = exports("jwt_filter");
    for name in UNUSED_CALLBACKS {
        assert!(
            !exports.iter().any(|e| e == name),
            "jwt_filter.wasm exports {name}: build it with `make wasm`, which trims it"
        );
    }
    // What the filter does implement is still there.
    for name in [
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_context_create",
        "proxy_on_request_headers",
        "proxy_on_response_headers",
        "proxy_on_log",
        "proxy_on_delete",
        "proxy_on_memory_allocate",
    ] {
        assert!(exports.iter().any(|e| e == name), "{name} missing");
    }
}

#[test]
fn the_benchmark_floor_is_trimmed_like_the_filter() {
    // The no-op filter is the benchmarks' floor: it must pay what ours pays.
    for module in ["noop_filter", "probe_filter"] {
        let exports = exports(module);
        for name in UNUSED_CALLBACKS {
            assert!(
                !exports.iter().any(|e| e == name),
                "{module}.wasm exports {name}: build it with `make fixtures`"
            );
        }
    }
}
