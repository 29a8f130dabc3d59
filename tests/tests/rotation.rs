//! Key rotation without a restart (SPEC section 2.6), the way a user does
//! it: `make run` (`envoy/run.sh`) serving, `make reload` (`envoy/reload.sh`)
//! switching the signing key back and forth under load, then an invalid
//! configuration that is refused while the old one keeps serving.
//!
//! Its own test binary: it runs the user's scripts as processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::{Conn, post};
use jwt_proxy_tests::{SECRET, Upstream, envoy_bin, listening, root, wait_until};

/// The second key of the ring.
const OTHER: &str = "k2-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Load: connections, and bounds on requests and time.
const CONNECTIONS: usize = 32;
const MAX_REQUESTS: u64 = 200_000;
/// Each client's pause between POSTs: load, without starving the 2 cores.
const PAUSE: Duration = Duration::from_millis(2);
const MAX_LOAD: Duration = Duration::from_secs(120);

fn ring(signing: &str) -> String {
    format!(
        r#"{{"keys":[{{"id":"k1","secret":"{SECRET}"}},{{"id":"k2","secret":"{OTHER}"}}],"signing_key":"{signing}"}}"#
    )
}

fn key_of(kid: &str) -> &'static str {
    match kid {
        "k1" => SECRET,
        "k2" => OTHER,
        other => panic!("a token with kid {other:?}"),
    }
}

/// `envoy/run.sh` in its own process group; stopped (with its Envoy) on drop.
struct Run {
    child: Child,
    addr: SocketAddr,
    state: PathBuf,
    log: PathBuf,
}

impl Run {
    /// `host`: `envoy` (`make run`) or `test-host` (`make run-host`, with the
    /// debug test host `cargo test` built).
    fn start(host: &str, upstream: SocketAddr, config: &Path, dir: &Path) -> Run {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("run.log");
        let out = std::fs::File::create(&log).unwrap();
        let state = dir.join("state");
        let child = Command::new("sh")
            .arg(root().join("envoy/run.sh"))
            .arg(host)
            .env("TEST_HOST_BIN", root().join("target/debug/test-host"))
            .env("HTTP_PORT", port.to_string())
            .env("ADMIN_PORT", "0")
            .env("UPSTREAM", upstream.to_string())
            .env("PLUGIN_CONFIG_FILE", config)
            .env("JWT_PROXY_STATE", &state)
            .env("ENVOY_BIN", envoy_bin())
            .env_remove("JWT_SECRET")
            .env_remove("PLUGIN_CONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        let run = Run {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            state: state.join(port.to_string()),
            log,
        };
        let up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(Duration::from_secs(60), "make run serving", || {
                let ready = run
                    .state
                    .join(if host == "envoy" { "admin" } else { "pid" });
                (listening(run.addr) && ready.exists()).then_some(())
            });
        }));
        assert!(
            up.is_ok(),
            "make run did not come up:\n{}",
            std::fs::read_to_string(&run.log).unwrap_or_default()
        );
        run
    }

    /// `make reload` with `config`: whether it succeeded, and what it said.
    fn reload(&self, config: &Path) -> (bool, String) {
        let out = Command::new("sh")
            .arg(root().join("envoy/reload.sh"))
            .env("HTTP_PORT", self.addr.port().to_string())
            .env("JWT_PROXY_STATE", self.state.parent().unwrap())
            .env("PLUGIN_CONFIG_FILE", config)
            .env_remove("PLUGIN_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    not_2xx: AtomicU64,
    resets: AtomicU64,
    bad_tokens: AtomicU64,
    /// 1 or 2: the `kid` of the latest token a client saw.
    latest_kid: AtomicUsize,
}

/// One keep-alive client: POSTs until `stop`, checking every token the
/// upstream received (the echo upstream shows it as `x-echo-x-my-jwt`).
fn client(addr: SocketAddr, tally: &Tally, stop: &AtomicBool, started: Instant) {
    let mut conn = Conn::connect(addr).unwrap();
    let body = post("/rotate", &[], br#"{"n":1}"#);
    while !stop.load(Ordering::Relaxed)
        && tally.requests.load(Ordering::Relaxed) < MAX_REQUESTS
        && started.elapsed() < MAX_LOAD
    {
        tally.requests.fetch_add(1, Ordering::Relaxed);
        // Paces the load (not a wait for an event).
        std::thread::sleep(PAUSE);
        let resp = conn.send(&body).and_then(|()| conn.read_response(false));
        let Ok(resp) = resp else {
            tally.resets.fetch_add(1, Ordering::Relaxed);
            conn = Conn::connect(addr).unwrap();
            continue;
        };
        if resp.status / 100 != 2 {
            tally.not_2xx.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let token = resp.header("x-echo-x-my-jwt").unwrap_or_default();
        let kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .unwrap_or_default();
        let mut validation = Validation::new(Algorithm::HS512);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let valid = (kid == "k1" || kid == "k2")
            && jsonwebtoken::decode::<serde_json::Value>(
                token,
                &DecodingKey::from_secret(key_of(&kid).as_bytes()),
                &validation,
            )
            .is_ok();
        if valid {
            tally
                .latest_kid
                .store(if kid == "k1" { 1 } else { 2 }, Ordering::Relaxed);
        } else {
            tally.bad_tokens.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits (at most 30 s) until clients see tokens of `kid` (1 or 2).
fn switched(tally: &Tally, kid: usize, since: Instant) -> Duration {
    let left = Duration::from_secs(30).saturating_sub(since.elapsed());
    wait_until(
        left,
        format_args!("tokens carry k{kid} 30 s after make reload"),
        || (tally.latest_kid.load(Ordering::Relaxed) == kid).then(|| since.elapsed()),
    )
}

/// What a rotation run measured.
struct Rotated {
    requests: u64,
    seconds: f64,
    switch_times: Vec<Duration>,
}

/// The scenario, the same on both hosts: 32 keep-alive clients POST while
/// `reload` switches the signing key 10 times (k1 -> k2 -> k1 ...), then
/// applies a configuration the filter refuses. `reload(config)` writes
/// nothing itself: it applies `config` and says whether that worked and why.
fn rotate_under_load(addr: SocketAddr, reload: impl Fn(&str) -> (bool, String)) -> Rotated {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (tally, stop) = (tally.clone(), stop.clone());
            std::thread::spawn(move || client(addr, &tally, &stop, started))
        })
        .collect();
    switched(&tally, 1, Instant::now());

    let mut switch_times = Vec::new();
    for i in 0..10 {
        let kid = if i % 2 == 0 { 2 } else { 1 };
        let since = Instant::now();
        let (ok, said) = reload(&ring(&format!("k{kid}")));
        assert!(ok, "reload {i} failed: {said}");
        switch_times.push(switched(&tally, kid, since));
        // Each key signs under load: the next reload waits until every
        // client could have sent a few more requests (8 per connection).
        let at = tally.requests.load(Ordering::Relaxed);
        let more = 8 * CONNECTIONS as u64;
        wait_until(
            Duration::from_secs(30),
            format_args!("{more} requests signed with k{kid}"),
            || (tally.requests.load(Ordering::Relaxed) >= at + more).then_some(()),
        );
    }

    // An invalid configuration mid-load: refused with the filter's error,
    // and the running one (k1 signing) keeps serving.
    let (ok, said) = reload(r#"{"keys":[{"id":"k1","secret":"short"}]}"#);
    assert!(!ok, "an invalid configuration was applied: {said}");
    assert!(
        said.contains("jwt-proxy refuses to start") && said.contains("keys[0].secret"),
        "{said}"
    );
    assert!(!said.contains(SECRET) && !said.contains(OTHER), "{said}");
    // Requests sent after the refusal was answered are signed by k1.
    let after = tally.requests.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(10), "still serving", || {
        (tally.requests.load(Ordering::Relaxed) > after + 2 * CONNECTIONS as u64).then_some(())
    });
    assert_eq!(tally.latest_kid.load(Ordering::Relaxed), 1, "the old kid");

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let requests = tally.requests.load(Ordering::Relaxed);
    // Under load all along: each of the 10 keys' periods had its requests
    // (a count, not a rate: this test does not measure speed).
    assert!(
        requests >= 10 * 8 * CONNECTIONS as u64,
        "only {requests} requests"
    );
    assert_eq!(tally.not_2xx.load(Ordering::Relaxed), 0, "non-2xx");
    assert_eq!(tally.resets.load(Ordering::Relaxed), 0, "reset connections");
    assert_eq!(
        tally.bad_tokens.load(Ordering::Relaxed),
        0,
        "tokens not verifying with their kid's key"
    );
    Rotated {
        requests,
        seconds: started.elapsed().as_secs_f64(),
        switch_times,
    }
}

fn scratch(kind: &str) -> PathBuf {
    let dir = root()
        .join("target/e2e")
        .join(format!("{kind}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn make_reload_rotates_the_signing_key_under_load_without_failing_a_request() {
    let upstream = Upstream::start();
    let dir = scratch("rotation-envoy");
    let config = dir.join("filter-config.json");
    std::fs::write(&config, ring("k1")).unwrap();
    let run = Run::start("envoy", upstream.addr(), &config, &dir);
    let r = rotate_under_load(run.addr, |next| {
        std::fs::write(&config, next).unwrap();
        run.reload(&config)
    });
    eprintln!(
        "rotation (envoy, make reload): {} POSTs over {CONNECTIONS} connections in {:.1} s; \
         switch times: {:?}",
        r.requests, r.seconds, r.switch_times
    );
    let log = std::fs::read_to_string(&run.log).unwrap_or_default();
    assert!(
        !log.contains(SECRET) && !log.contains(OTHER),
        "a key in the log"
    );
}

#[test]
fn host_reconfigure_rotates_the_signing_key_under_load_without_failing_a_request() {
    let upstream = Upstream::start();
    let setup = Setup {
        config: ring("k1"),
        workers: 2,
        ..Setup::new(upstream.addr())
    };
    let Proxy::Host(proxy) = setup.host() else {
        unreachable!("Setup::host starts the test host")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = proxy.host();
    let r = rotate_under_load(host.local_addr(), |next| {
        match runtime.block_on(host.reconfigure(next.as_bytes().to_vec())) {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e.to_string()),
        }
    });
    eprintln!(
        "rotation (test host, Host::reconfigure): {} POSTs over {CONNECTIONS} connections in \
         {:.1} s; switch times: {:?}",
        r.requests, r.seconds, r.switch_times
    );
    let name = "extension_config_discovery.http_filter.jwt_proxy";
    assert_eq!(host.metric(&format!("{name}.update_success")), Some(10));
    assert_eq!(host.metric(&format!("{name}.update_rejected")), Some(1));
    let logs: String = host.logs().iter().map(ToString::to_string).collect();
    assert!(
        !logs.contains(SECRET) && !logs.contains(OTHER),
        "a key in the log"
    );
}

#[test]
fn make_reload_of_make_run_host_rotates_the_key_by_sighup_without_failing_a_request() {
    let bin = root().join("target/debug/test-host");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --workspace` (make test) builds it",
        bin.display()
    );
    let upstream = Upstream::start();
    let dir = scratch("rotation-run-host");
    let config = dir.join("filter-config.json");
    std::fs::write(&config, ring("k1")).unwrap();
    let run = Run::start("test-host", upstream.addr(), &config, &dir);
    let r = rotate_under_load(run.addr, |next| {
        std::fs::write(&config, next).unwrap();
        run.reload(&config)
    });
    eprintln!(
        "rotation (test host, make reload = SIGHUP): {} POSTs over {CONNECTIONS} connections \
         in {:.1} s; switch times: {:?}",
        r.requests, r.seconds, r.switch_times
    );
    let log = std::fs::read_to_string(&run.log).unwrap_or_default();
    assert!(
        !log.contains(SECRET) && !log.contains(OTHER),
        "a key in the log"
    );
}
