//! Beyond one Envoy (SPEC section 8): the module loaded over HTTP with a
//! pinned sha256 (`make run WASM_URL=... WASM_SHA256=...`, rendered by
//! `envoy/render.sh` into `vm_config.code.remote`), and a loopback fleet of
//! two Envoys with the filter behind a third that balances across them,
//! whose Prometheus counters add up to exactly the POSTs sent.
//!
//! Everything listens on 127.0.0.1, on ports the OS picks; every loop is
//! bounded in count and time.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use jwt_proxy_tests::load::JtiUpstream;
use jwt_proxy_tests::scripted::{Reply, Scripted};
use jwt_proxy_tests::{
    Envoy, EnvoyBuilder, HeldPort, SECRET, Upstream, raw, root, verify, wait_until, wasm,
};

/// The module server: the scripted upstream answering every request with
/// `body` (the module) and closing, counting the requests. Stops on drop.
struct ModuleServer(Scripted);

impl ModuleServer {
    fn start(body: Vec<u8>) -> ModuleServer {
        Self::serving(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), body)
    }

    fn serving(listener: std::net::TcpListener, body: Vec<u8>) -> ModuleServer {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        // One module per test, kept for the test binary's life.
        let reply: &'static [u8] = Vec::leak([head.into_bytes(), body].concat());
        ModuleServer(Scripted::serving(listener, move |_| Reply::Close(reply)))
    }

    fn url(&self) -> String {
        format!("http://{}/jwt_filter.wasm", self.0.addr())
    }

    fn hits(&self) -> usize {
        self.0.seen().len()
    }
}

fn module() -> Vec<u8> {
    std::fs::read(wasm("jwt_filter")).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    let path =
        root()
            .join("target/e2e")
            .join(format!("sha-{}-{}", std::process::id(), bytes.len()));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

fn remote(upstream: SocketAddr, url: &str, sha256: &str) -> EnvoyBuilder {
    EnvoyBuilder::new(upstream)
        .render_env("WASM_URL", url)
        .render_env("WASM_SHA256", sha256)
}

fn post_status(envoy: &Envoy) -> u16 {
    raw::exchange(envoy.addr(), &raw::post("/remote", &[], b"{}")).status
}

/// What Envoy 1.40 logs when the module it fetched cannot be used (a digest
/// that differs, or no answer after the retries): the plugin failed to load
/// and, configured to fail closed, every request gets 503.
fn assert_refused(envoy: &Envoy, upstream: &Upstream) {
    assert_eq!(post_status(envoy), 503);
    assert!(
        matches!(raw::blocking_get(envoy.addr(), "/status"), Some((503, _))),
        "/status answered without the filter"
    );
    assert!(upstream.seen().is_empty(), "a request reached the upstream");
    let log = envoy.log();
    for line in [
        "Retry limit exceeded for fetching data from remote data source",
        "Plugin jwt_proxy failed to load",
        "Plugin configured to fail closed failed to load",
    ] {
        assert!(log.contains(line), "no {line:?} in the log:\n{log}");
    }
}

#[test]
fn a_remote_module_with_its_sha256_signs_every_post() {
    let upstream = Upstream::start();
    let module = module();
    let server = ModuleServer::start(module.clone());
    let envoy = remote(upstream.addr(), &server.url(), &sha256_hex(&module)).start();
    for _ in 0..3 {
        assert_eq!(post_status(&envoy), 200);
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        let claims = verify(
            &s.one("x-my-jwt").expect("a POST arrived unsigned"),
            SECRET.as_bytes(),
        );
        assert_eq!(claims["payload"]["user"], "username");
    }
    assert_eq!(server.hits(), 1, "fetched once");
    assert_eq!(envoy.stat("wasm.remote_load_fetch_successes"), Some(1));
}

#[test]
fn a_remote_module_whose_sha256_differs_is_refused() {
    let upstream = Upstream::start();
    let server = ModuleServer::start(module());
    let other = sha256_hex(b"another module");
    let envoy = remote(upstream.addr(), &server.url(), &other).start();
    assert_refused(&envoy, &upstream);
    // The server answered each try (1 + 3 retries, envoy/render.sh's
    // retry_policy): the module was refused for its digest, not unreachable.
    assert_eq!(server.hits(), 4);
    // What tells this case apart in the admin stats: fetched fine, refused.
    assert_eq!(envoy.stat("wasm.remote_load_fetch_successes"), Some(0));
    assert_eq!(envoy.stat("wasm.remote_load_fetch_failures"), Some(1));
    assert_eq!(envoy.stat("cluster.wasm_source.upstream_rq_200"), Some(4));
}

#[test]
fn a_module_server_down_at_start_fails_closed_until_envoy_restarts() {
    let upstream = Upstream::start();
    let module = module();
    let refusing = HeldPort::new();
    let url = format!("http://{}/jwt_filter.wasm", refusing.addr());
    let builder = remote(upstream.addr(), &url, &sha256_hex(&module));
    // Envoy tries 1 + num_retries times (RemoteDataSource.retry_policy),
    // then starts serving with the plugin failed: fail closed, 503.
    let envoy = builder.start();
    assert_refused(&envoy, &upstream);
    assert_eq!(envoy.stat("wasm.remote_load_fetch_failures"), Some(1));
    assert!(envoy.stat("cluster.wasm_source.upstream_cx_connect_fail") >= Some(1));
    assert_eq!(
        envoy
            .stat("cluster.wasm_source.upstream_rq_200")
            .unwrap_or(0),
        0
    );
    // The server coming up later changes nothing: Envoy fetches the code
    // when it loads the config, not again.
    let server = ModuleServer::serving(refusing.listen(128), module);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(post_status(&envoy), 503);
        // Paces the POSTs over the 3 s in which a retried fetch would come.
        thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(server.hits(), 0);
    assert!(upstream.seen().is_empty());
    drop(envoy);
    // A restart fetches it and signs.
    let envoy = builder.start();
    assert_eq!(post_status(&envoy), 200);
    assert!(upstream.last().one("x-my-jwt").is_some());
    assert_eq!(server.hits(), 1);
}

/// The balancer: plain Envoy, round robin over the two instances
/// (`${UPSTREAM_*}` and `${FLEET_B_*}`, filled by envoy/render.sh).
const BALANCER: &str = r#"admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: ${ADMIN_PORT} }
static_resources:
  listeners:
  - name: balancer
    address:
      socket_address: { address: 127.0.0.1, port_value: ${HTTP_PORT} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: balancer
          route_config:
            virtual_hosts:
            - name: fleet
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: fleet }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: fleet
    type: STATIC
    lb_policy: ROUND_ROBIN
    connect_timeout: 1s
    load_assignment:
      cluster_name: fleet
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: ${UPSTREAM_HOST}, port_value: ${UPSTREAM_PORT} } } }
        - endpoint: { address: { socket_address: { address: ${FLEET_B_HOST}, port_value: ${FLEET_B_PORT} } } }
"#;

/// A counter from an instance's `/stats/prometheus`, by its exact series.
fn prometheus(envoy: &Envoy, series: &str) -> u64 {
    let (status, body) = raw::blocking_get(envoy.admin(), "/stats/prometheus").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains(&format!("# TYPE {series} counter")),
        "{series} is not a counter in:\n{text}"
    );
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{series}{{}} "))?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in /stats/prometheus"))
}

fn status_counts(envoy: &Envoy) -> (u64, u64) {
    let (status, body) = raw::blocking_get(envoy.addr(), "/status").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (
        v["requests_processed"].as_u64().unwrap(),
        v["requests_signed"].as_u64().unwrap(),
    )
}

#[test]
fn two_instances_behind_a_balancer_count_every_post_exactly_once() {
    const N: u64 = 200;
    let upstream = JtiUpstream::start("x-my-jwt", SECRET.as_bytes());
    let a = EnvoyBuilder::new(upstream.addr()).concurrency(2).start();
    let b = EnvoyBuilder::new(upstream.addr()).concurrency(2).start();
    let template = root()
        .join("target/e2e")
        .join(format!("fleet-balancer-{}.yaml", std::process::id()));
    std::fs::write(&template, BALANCER).unwrap();
    let balancer = EnvoyBuilder::new(a.addr())
        .template(template.clone())
        .render_env("FLEET_B_HOST", &b.addr().ip().to_string())
        .render_env("FLEET_B_PORT", &b.addr().port().to_string())
        .start();
    let _ = std::fs::remove_file(&template);

    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..N {
        assert!(Instant::now() < deadline, "only {i} POSTs in 60 s");
        let resp = raw::exchange(
            balancer.addr(),
            &raw::post(&format!("/fleet/{i}"), &[], b"{}"),
        );
        assert_eq!(resp.status, 200, "POST {i}");
    }

    // The two instances' counters add up to N (read once the last log
    // callbacks have run: `processed` reaches N).
    let series = ["jwt_proxy_requests_processed", "jwt_proxy_requests_signed"];
    let counts = wait_until(Duration::from_secs(15), "N POSTs processed", || {
        let counts: Vec<[u64; 2]> = [&a, &b]
            .iter()
            .map(|e| [prometheus(e, series[0]), prometheus(e, series[1])])
            .collect();
        (counts.iter().map(|c| c[0]).sum::<u64>() >= N).then_some(counts)
    });
    eprintln!(
        "fleet: instance a processed {} signed {}, instance b processed {} signed {} (N = {N})",
        counts[0][0], counts[0][1], counts[1][0], counts[1][1]
    );
    for (k, name) in series.iter().enumerate() {
        assert_eq!(counts[0][k] + counts[1][k], N, "sum of {name}");
    }
    assert!(
        counts[0][0] > 0 && counts[1][0] > 0,
        "the balancer used one instance only: {counts:?}"
    );
    // /status is per instance: the same figures as that instance's counters.
    for (e, c) in [(&a, counts[0]), (&b, counts[1])] {
        assert_eq!(status_counts(e), (c[0], c[1]));
    }
    // Every POST reached the upstream once, with a valid token and its own jti.
    let tally = upstream.tally();
    assert_eq!(tally.requests, N, "{:?}", tally.problems);
    assert_eq!(tally.distinct_jti, N, "{:?}", tally.problems);
    assert_eq!(
        (tally.duplicate_jti, tally.bad_tokens, tally.not_one_token),
        (0, 0, 0),
        "{:?}",
        tally.problems
    );
}
