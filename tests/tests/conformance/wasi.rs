//! WASI stdout/stderr (`conf-wasi`): Envoy logs each `fd_write` as one line
//! (`wasm log <plugin> <root> <vm>: ...`), stdout at info and stderr at error,
//! newlines inside kept and one trailing newline dropped; the test host keeps
//! the same records. Compared as (level, message) in order, together with the
//! filter's own lines (which report what each `fd_write` returned).

use std::time::Duration;

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::{Upstream, raw, wait_until, wasm};
use test_host::LogSource;

/// The filter's records (proxy_log and WASI output): level and message.
fn records(proxy: &Proxy) -> Vec<(String, String)> {
    match proxy {
        Proxy::Envoy(e) => {
            // A record starts with `[2...][thread][level][logger]`; the lines after it
            // that do not are its continuation (a message with newlines).
            let mut out: Vec<(String, Option<String>)> = Vec::new();
            for line in e.log().lines() {
                if line.starts_with("[20") {
                    let level = line.split('[').nth(3).and_then(|l| l.split(']').next());
                    let message = line
                        .split_once("wasm log ")
                        .and_then(|(_, m)| m.split_once(": "))
                        .map(|(_, m)| m.to_owned());
                    out.push((level.unwrap_or("").to_owned(), message));
                } else if let Some((_, Some(m))) = out.last_mut() {
                    m.push('\n');
                    m.push_str(line);
                }
            }
            out.into_iter().filter_map(|(l, m)| Some((l, m?))).collect()
        }
        Proxy::Host(h) => h
            .host()
            .logs()
            .into_iter()
            .filter(|r| r.source != LogSource::Host)
            .map(|r| (r.level.to_string(), r.message))
            .collect(),
    }
}

#[test]
fn each_write_is_one_log_line_at_info_for_stdout_and_error_for_stderr() {
    let upstream = Upstream::start();
    let mut setup = Setup::new(upstream.addr());
    setup.wasm = wasm("conf_wasi");
    setup.config = "{}".to_owned();
    let expected: Vec<(String, String)> = [
        ("info", "out line"),
        ("info", "conf-wasi wrote 0 errno=0 n=9"),
        ("info", "out no newline"),
        ("info", "conf-wasi wrote 1 errno=0 n=14"),
        ("info", "out a\nout b\nout c"),
        ("info", "conf-wasi wrote 2 errno=0 n=18"),
        // Both buffers of one call, in one line.
        ("info", "out iov1 iov2"),
        ("info", "conf-wasi wrote 3 errno=0 n=14"),
        ("info", "out two\n"),
        ("info", "conf-wasi wrote 4 errno=0 n=9"),
        ("error", "err line"),
        ("info", "conf-wasi wrote 5 errno=0 n=9"),
        ("error", "err a\nerr b"),
        ("info", "conf-wasi wrote 6 errno=0 n=11"),
    ]
    .iter()
    .map(|(l, m)| ((*l).to_owned(), (*m).to_owned()))
    .collect();
    for proxy in setup.both() {
        let name = proxy.name();
        let before = records(&proxy).len();
        let r = raw::exchange(proxy.addr(), &raw::bare("GET", "/", &[]));
        assert_eq!((r.status, r.text().as_str()), (200, "wasi"), "{name}");
        let got = wait_until(
            Duration::from_secs(10),
            format_args!("{name}: the writes"),
            || {
                let got = records(&proxy)[before..].to_vec();
                (got.len() >= expected.len()).then_some(got)
            },
        );
        assert_eq!(got, expected, "{name}");
    }
}
