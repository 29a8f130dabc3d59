//! The test host's host functions with arbitrary pointers, lengths and
//! enum values (issue 5): a tiny guest, written in WAT per case, calls one
//! ABI function with the case's arguments from `proxy_on_request_headers`,
//! over a memory page of random bytes and an allocator that returns the
//! case's pointer. Whatever the arguments, the host answers with a status or
//! traps the guest (`Error::Trap`): it never panics, never loses its worker,
//! and the next request is served.
//!
//! The functions and their signatures come from the host's own linker
//! (`HostBuilder::host_functions`): every `env` function it links is covered,
//! in turn, whatever is added later. (WASI's are wasmtime-wasi's, and some of
//! them block or exit by design.)
//!
//! Case count: `HOSTCALL_CASES` (default 400); seed: `HOSTCALL_SEED`.

use jwt_proxy_tests::load::env_usize;
use test_host::{Error, HostBuilder, HostFunction};

/// xorshift64*: deterministic, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Mostly edge values around the one 64 KiB page, sometimes anything.
    fn arg(&mut self) -> u32 {
        const EDGES: [u32; 14] = [
            0,
            1,
            2,
            3,
            8,
            1024,
            4096,
            65_528,
            65_535,
            65_536,
            65_537,
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX,
        ];
        let r = self.next();
        match r % 4 {
            0 | 1 => EDGES[(r >> 8) as usize % EDGES.len()],
            2 => (r >> 16) as u32 % 65_536,
            _ => (r >> 32) as u32,
        }
    }
}

/// A guest that calls `f` once with `args` (its results dropped), over a page
/// of `data`, and whose allocator returns `alloc`.
fn guest(f: &HostFunction, args: &[u64], data: &[u8], alloc: u32) -> String {
    let params: String = f.params.iter().map(|t| format!(" {t}")).collect();
    let results: String = f.results.iter().map(|t| format!(" (result {t})")).collect();
    let call_args: String = f
        .params
        .iter()
        .zip(args)
        .map(|(t, a)| {
            if t == "i64" {
                format!(" (i64.const {})", *a as i64)
            } else {
                format!(" (i32.const {})", *a as u32 as i32)
            }
        })
        .collect();
    let drops = "(drop)".repeat(f.results.len());
    let bytes: String = data.iter().map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#"(module
  (import "{module}" "{name}" (func $f (param{params}){results}))
  (memory (export "memory") 1)
  (data (i32.const 0) "{bytes}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const {alloc}))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $f{call_args}) {drops}
    (i32.const 0)))"#,
        module = f.module,
        name = f.name,
        alloc = alloc as i32
    )
}

#[test]
fn host_functions_never_panic_on_arbitrary_pointers_and_lengths() {
    let cases = env_usize("HOSTCALL_CASES", 400);
    let seed = env_usize("HOSTCALL_SEED", 0x5eed) as u64;
    let mut rng = Rng(seed | 1);
    let functions: Vec<HostFunction> = HostBuilder::new(Vec::new())
        .host_functions()
        .unwrap()
        .into_iter()
        .filter(|f| f.module == "env")
        .collect();
    // The linker's, not a list of our own: every ABI function, gRPC's and
    // `proxy_done` among them, and Emscripten's.
    let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    for name in [
        "proxy_log",
        "proxy_done",
        "proxy_grpc_call",
        "proxy_grpc_stream",
        "proxy_grpc_send",
        "proxy_grpc_cancel",
        "proxy_grpc_close",
        "proxy_call_foreign_function",
        "pthread_equal",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    assert!(
        cases >= functions.len(),
        "HOSTCALL_CASES={cases} does not reach all {} functions",
        functions.len()
    );
    let (mut answered, mut trapped) = (0, 0);
    for case in 0..cases {
        let f = &functions[case % functions.len()];
        let name = &f.name;
        let args: Vec<u64> = f
            .params
            .iter()
            .map(|t| {
                if t == "i64" {
                    rng.next()
                } else {
                    u64::from(rng.arg())
                }
            })
            .collect();
        let data: Vec<u8> = (0..512).map(|_| rng.next() as u8).collect();
        let alloc = rng.arg();
        let wat = guest(f, &args, &data, alloc);
        let what = format!("case {case}: {name}{args:?} alloc {alloc}");
        let plugin = HostBuilder::new(wat.into_bytes())
            .upstream("127.0.0.1:9")
            .instantiate()
            .unwrap_or_else(|e| panic!("{what}: the guest did not load: {e}"));
        let ctx = plugin.create_http_context().unwrap();
        let headers = [
            (":method", "POST"),
            (":path", "/"),
            (":authority", "x"),
            (":scheme", "http"),
        ];
        match plugin.on_request_headers(ctx, &headers, false) {
            Ok(_) => answered += 1,
            Err(Error::Trap { .. }) => trapped += 1,
            Err(e) => panic!("{what}: {e}"),
        }
        // The worker survived: a new context on the (reloaded) VM runs.
        let again = plugin
            .create_http_context()
            .unwrap_or_else(|e| panic!("{what}: no context after the call: {e}"));
        match plugin.on_request_headers(again, &headers, false) {
            Ok(_) | Err(Error::Trap { .. }) => {}
            Err(e) => panic!("{what}: worker lost: {e}"),
        }
    }
    eprintln!(
        "hostcalls: {cases} cases over {} functions (seed {seed:#x}): {answered} answered with a status, {trapped} trapped",
        functions.len()
    );
    assert_eq!(answered + trapped, cases);
}
