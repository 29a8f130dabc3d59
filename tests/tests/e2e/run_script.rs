//! `make run` and `make run-host` (`envoy/run.sh`) with the starting filter
//! configuration: one the filter refuses stops the script with the filter's
//! one-line error (naming the field, never quoting the key), Envoy or the
//! test host stopped, nothing left running or listening, and no banner
//! claiming it serves; a valid one serves a signed POST as soon as the
//! banner says so. The same scenario and assertions on both hosts.
//!
//! The test host binary: `TEST_HOST_BIN`, else the newer of
//! `target/debug/test-host` (`cargo test --workspace` builds it) and
//! `target/release/test-host` (`make build`).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use jwt_proxy_tests::raw::{Conn, post};
use jwt_proxy_tests::{Upstream, envoy_bin, listening, root, verify, wait_until};

const HOSTS: [&str; 2] = ["envoy", "test-host"];
/// A valid key of these tests (not the shared SECRET, so finding it in the
/// output can only mean this test's run leaked it).
const KEY: &str = "run-script-key-0123456789abcdef0123456789abcdef0123456789abcdef-0123";
/// A key too short for HS512 (SPEC 2.4): the filter refuses it.
const SHORT_KEY: &str = "run-script-short-key";
/// How long a refused start may take: Envoy starts its VMs, then run.sh
/// stops it (the filter's line can wait for Envoy's 10 s log flush).
const STOP_WITHIN: Duration = Duration::from_secs(40);

fn test_host_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TEST_HOST_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let built = ["target/debug/test-host", "target/release/test-host"]
        .iter()
        .map(|p| root().join(p))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    built.map(|(_, p)| p).unwrap_or_else(|| {
        panic!(
            "no test host binary: set TEST_HOST_BIN, or build target/debug/test-host \
             (cargo test --workspace, make test) or target/release/test-host (make build)"
        )
    })
}

/// A loopback port free now (released for run.sh to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `envoy/run.sh HOST` in its own process group, its output in files.
struct Run {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
    stdout: PathBuf,
}

impl Run {
    fn start(host: &str, config: &str, upstream: SocketAddr, dir: &Path) -> Run {
        let port = free_port();
        let stderr = dir.join(format!("{host}.stderr"));
        let stdout = dir.join(format!("{host}.stdout"));
        let child = Command::new("sh")
            .arg(root().join("envoy/run.sh"))
            .arg(host)
            .env("HTTP_PORT", port.to_string())
            .env("ADMIN_PORT", "0")
            .env("UPSTREAM", upstream.to_string())
            .env("PLUGIN_CONFIG", config)
            .env("JWT_PROXY_STATE", dir.join("state"))
            .env("ENVOY_BIN", envoy_bin())
            .env("TEST_HOST_BIN", test_host_bin())
            .env_remove("JWT_SECRET")
            .env_remove("PLUGIN_CONFIG_FILE")
            .env_remove("WASM_URL")
            .env_remove("WASM_PATH")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        Run {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr,
            stdout,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default() + &self.stderr()
    }

    /// Whether any process of the run's group is alive.
    fn group_alive(&self) -> bool {
        Command::new("kill")
            .args(["-0", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Waits for run.sh to exit by itself.
    fn exit_within(&mut self, bound: Duration) -> ExitStatus {
        let child = &mut self.child;
        wait_until(bound, "run.sh exits", || child.try_wait().unwrap())
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.group_alive() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        }
        let _ = self.child.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = root()
        .join("target/e2e")
        .join(format!("run-script-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_sh_stops_with_the_filters_line_when_the_starting_configuration_is_invalid() {
    let upstream = Upstream::start();
    let dir = scratch("invalid");
    // (configuration, the field the line must name, a key it must not show)
    let cases = [
        (
            format!(r#"{{"secret":"{KEY}","sign_methodz":["POST"]}}"#),
            "field `sign_methodz`",
            KEY,
        ),
        (
            format!(r#"{{"secret":"{SHORT_KEY}"}}"#),
            "field `secret`",
            SHORT_KEY,
        ),
    ];
    for host in HOSTS {
        for (config, field, key) in &cases {
            let mut run = Run::start(host, config, upstream.addr(), &dir);
            let started = Instant::now();
            let status = run.exit_within(STOP_WITHIN);
            let took = started.elapsed();
            let out = run.output();
            assert!(
                !status.success(),
                "{host}: run.sh exited 0 with {field}:\n{out}"
            );
            let line = out
                .lines()
                .find(|l| l.starts_with("run.sh: stopped"))
                .unwrap_or_else(|| panic!("{host}: no run.sh line saying it stopped:\n{out}"));
            assert!(
                line.contains("jwt-proxy refuses to start: ") && line.contains(field),
                "{host}: run.sh's line is not the filter's line naming {field}: {line}"
            );
            assert!(!out.contains(key), "{host}: the key in the output:\n{out}");
            assert!(
                !out.contains("jwt-proxy: http://")
                    && !out.contains("jwt-proxy (test host): http://"),
                "{host}: a banner claims it serves:\n{out}"
            );
            // Nothing of the run is left: no process of its group, nothing
            // on its port.
            wait_until(Duration::from_secs(10), "the run's processes gone", || {
                (!run.group_alive()).then_some(())
            });
            assert!(
                !listening(run.addr),
                "{host}: something listens on {}",
                run.addr
            );
            eprintln!("{host}: refused {field} and stopped in {took:.1?}");
        }
    }
    assert!(upstream.seen().is_empty(), "a request reached the upstream");
}

#[test]
fn run_sh_serves_a_signed_post_as_soon_as_its_banner_says_so() {
    let upstream = Upstream::start();
    let dir = scratch("valid");
    let config = format!(r#"{{"secret":"{KEY}"}}"#);
    for host in HOSTS {
        let before = upstream.seen().len();
        let run = Run::start(host, &config, upstream.addr(), &dir);
        let banner = if host == "envoy" {
            "jwt-proxy: http://"
        } else {
            "jwt-proxy (test host): http://"
        };
        wait_until(
            Duration::from_secs(60),
            format_args!("{host}: the banner"),
            || run.stderr().contains(banner).then_some(()),
        );
        // No wait after the banner: it says the filter is configured.
        let mut conn = Conn::connect(run.addr)
            .unwrap_or_else(|e| panic!("{host}: banner shown, but no listener: {e}"));
        conn.send(&post("/run-script", &[], b"{\"n\":1}")).unwrap();
        let resp = conn.read_response(false).unwrap();
        assert_eq!(
            resp.status,
            200,
            "{host}: {}\n{}",
            resp.text(),
            run.output()
        );
        assert_eq!(upstream.seen().len(), before + 1, "{host}: POSTs upstream");
        let seen = upstream.last();
        assert_eq!(seen.uri, "/run-script");
        let token = seen
            .one("x-my-jwt")
            .unwrap_or_else(|| panic!("{host}: the POST arrived unsigned"));
        let claims = verify(&token, KEY.as_bytes());
        assert_eq!(claims["payload"]["user"], "username", "{host}");
        assert!(!run.output().contains(KEY), "{host}: the key in the output");
        let addr = run.addr;
        drop(run);
        wait_until(
            Duration::from_secs(10),
            format_args!("{host}: {addr} closed"),
            || (!listening(addr)).then_some(()),
        );
    }
}
