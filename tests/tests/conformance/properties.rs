//! Properties and metrics (`conf_properties`): the properties real filters
//! read, in the root context and in each phase of a request, and the metric
//! calls, compared value by value between Envoy (`envoy/envoy.yaml`) and the
//! test host. Values that depend on the connection (ports, ids, times) are
//! compared by form; the few Envoy has and the test host does not are listed
//! in `ABSENT_ON_HOST` (test-host/README.md, "What still differs").

use std::collections::BTreeMap;

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::{Upstream, raw, wasm};

/// Envoy has these (header byte counts, connection ids, the upstream connection's
/// local address); the test host does not track them.
const ABSENT_ON_HOST: &[&str] = &[
    "request.size",
    "request.total_size",
    "response.size",
    "response.total_size",
    "connection.id",
    "connection_id",
    "upstream.local_address",
];

fn le_port(port: u16) -> String {
    format!("x:{}", hex(&i64::from(port).to_le_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(phase, name) -> value`, with values that differ between runs by nature replaced by
/// their form.
fn props(proxy: &Proxy, upstream: &Upstream) -> BTreeMap<(String, String), String> {
    let proxy_addr = proxy.addr().to_string();
    let up = upstream.addr();
    proxy
        .filter_log()
        .iter()
        .filter_map(|l| l.strip_prefix("prop "))
        .map(|l| {
            let mut f = l.splitn(3, ' ');
            let (phase, name, value) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let int8 = value.starts_with("x:") && value.len() == 18;
            let value = match name {
                _ if value == "-" => value.to_owned(),
                "destination.address" => value.replace(&proxy_addr, "PROXY"),
                "destination.port" if value == le_port(proxy.addr().port()) => "PROXY_PORT".into(),
                "upstream.address" => value.replace(&up.to_string(), "UPSTREAM"),
                "upstream.port" if value == le_port(up.port()) => "UPSTREAM_PORT".into(),
                "source.address" if value.starts_with("s:127.0.0.1:") => "CLIENT".into(),
                "source.port" | "request.time" | "request.duration" if int8 => "INT".into(),
                "request.id" if value.len() > 2 => "ID".into(),
                _ => value.to_owned(),
            };
            ((phase.to_owned(), name.to_owned()), value)
        })
        .collect()
}

#[test]
fn properties_read_as_envoy_gives_them() {
    let upstream = Upstream::start();
    let setup = Setup {
        wasm: wasm("conf_properties"),
        config: "default".to_owned(),
        ..Setup::new(upstream.addr())
    };
    let mut seen = Vec::new();
    for proxy in setup.both() {
        let request = raw::bare(
            "GET",
            "/p/q?a=1&b=2",
            &[
                "x-probe: p1",
                "User-Agent: conf/1",
                "Referer: http://r/",
                "Connection: close",
            ],
        );
        let r = raw::exchange(proxy.addr(), &request);
        assert_eq!(r.status, 200, "{}", proxy.name());
        proxy.wait_for_lines("prop log no_such_property", 1);
        seen.push((proxy.name(), props(&proxy, &upstream)));
    }
    let (envoy, host) = (&seen[0].1, &seen[1].1);
    // Anchors: what Envoy gives, phase by phase.
    let at = |phase: &str, name: &str| envoy[&(phase.to_owned(), name.to_owned())].as_str();
    assert_eq!(at("req", "request.path"), "s:/p/q?a=1&b=2");
    assert_eq!(at("req", "request.query"), "s:a=1&b=2");
    assert_eq!(
        at("resp", "request.path"),
        "-",
        "request headers are gone after their phase"
    );
    assert_eq!(at("log", "request.url_path"), "s:/p/q");
    assert_eq!(at("resp", "response.code"), "x:c800000000000000");
    assert_eq!(at("resp", "response.code_details"), "s:via_upstream");
    assert_eq!(at("req", "upstream.address"), "-");
    assert_eq!(at("log", "upstream.address"), "s:UPSTREAM");
    assert_eq!(at("log", "request.duration"), "INT");
    assert_eq!(at("root", "plugin_root_id"), "s:jwt_proxy");
    assert_eq!(at("root", "request.time"), "-");
    assert_eq!(at("req", "xds.cluster_name"), "s:upstream");
    assert_eq!(at("req", "destination.address"), "s:PROXY");
    let mut differ = Vec::new();
    for (key, value) in envoy {
        let theirs = host.get(key).map_or("(none)", String::as_str);
        let expected = if ABSENT_ON_HOST.contains(&key.1.as_str()) {
            "-"
        } else {
            value.as_str()
        };
        if theirs != expected {
            differ.push(format!("{key:?}: envoy {value} test-host {theirs}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert_eq!(envoy.len(), host.len());
}

#[test]
fn metrics_count_as_envoy_counts_them() {
    let upstream = Upstream::start();
    let setup = Setup {
        wasm: wasm("conf_properties"),
        config: "plugin_name".to_owned(),
        workers: 2,
        ..Setup::new(upstream.addr())
    };
    for proxy in setup.both() {
        let name = proxy.name();
        // Every root (a base VM, the main thread's, one per worker) defines them.
        let defined = proxy
            .filter_log()
            .into_iter()
            .filter(|l| l.starts_with("metric define"));
        assert_eq!(defined.count(), 3 * 4, "{name}");
        assert_eq!(
            proxy
                .filter_log()
                .iter()
                .filter(|l| *l == "metric redefine_same_id false ids_distinct true")
                .count(),
            4,
            "{name}: a second define is the same metric under a new id"
        );
        for _ in 0..3 {
            let r = raw::exchange(proxy.addr(), &raw::bare("GET", "/", &["Connection: close"]));
            assert_eq!(r.status, 200, "{name}");
        }
        proxy.wait_for_lines("metric unknown+1", 3);
        let first: Vec<String> = proxy
            .filter_log()
            .into_iter()
            .filter(|l| l.starts_with("metric ") && !l.starts_with("metric define"))
            .filter(|l| !l.starts_with("metric redefine"))
            .take(11)
            .collect();
        assert_eq!(
            first,
            [
                "metric counter+1 Ok(())",
                "metric counter-1 BadArgument",
                "metric counter_get Ok(1)",
                "metric gauge+5 Ok(())",
                "metric gauge-2 Ok(())",
                "metric gauge_get Ok(3)",
                "metric histogram_record Ok(())",
                "metric histogram_get BadArgument",
                "metric histogram+1 BadArgument",
                "metric unknown_get BadArgument",
                "metric unknown+1 BadArgument",
            ],
            "{name}"
        );
        assert_eq!(proxy.stat("wasmcustom.conf.requests"), 3, "{name}");
        assert_eq!(proxy.stat("wasmcustom.conf.level"), 9, "{name}");
    }
}
