//! `make up` / `make down` for real (docs/compose.md): envoy/docker-compose.yml
//! under podman-compose with the stand-in images `envoy/standin-images.sh`
//! builds (a debootstrap root filesystem, and that plus the PyPI Envoy), the
//! way CI runs it. Signed POSTs and `/status` go through the published port
//! on 127.0.0.1; `make down` leaves no container, network, volume or pod of
//! the project. An invalid filter configuration makes `make up` fail with the
//! filter's one-line error, leaving nothing behind.
//!
//! Needs podman (and, for the first build of the images, debootstrap, as
//! root): `.ci/run` installs them. Without podman the tests fail under
//! `CI=true`, and otherwise say why they did not run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use jwt_proxy_tests::raw::{bare, exchange, post};
use jwt_proxy_tests::{SECRET, envoy_bin, root, verify, wasm};

use crate::util::run;

/// The stand-in images (`BASE_IMAGE`, `ENVOY_IMAGE`), built once per run.
fn standin_images() -> &'static (String, String) {
    static IMAGES: OnceLock<(String, String)> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let started = Instant::now();
        let out =
            run(Command::new(root().join("envoy/standin-images.sh")).env("ENVOY_BIN", envoy_bin()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let image = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("standin-images.sh printed no {name}=: {text}"))
                .to_owned()
        };
        // The pinned podman-compose, installed once (compose.sh would
        // install it from each test at the same time).
        run(compose_env(
            Command::new(root().join("envoy/compose.sh")).arg("tool"),
        ));
        eprintln!("compose: stand-in images ready in {:?}", started.elapsed());
        (image("BASE_IMAGE"), image("ENVOY_IMAGE"))
    })
}

/// Whether podman is here; fails under `CI=true` when it is not.
fn podman_present(test: &str) -> bool {
    if Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    let why = "podman is missing: apt-get install podman runc debootstrap (docs/compose.md; .ci/run installs them)";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "compose::{test}: {why}"
    );
    eprintln!("compose::{test} did not run: {why}");
    false
}

/// The environment every compose command of the tests gets: podman, even
/// where a Docker engine answers (the stand-ins are podman's images).
fn compose_env(cmd: &mut Command) -> &mut Command {
    cmd.current_dir(root())
        .env("COMPOSE_ENGINE", "podman")
        // A make inside `make test` must not join the outer one's jobserver.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
}

/// A free loopback port for compose to publish: bound, then released, as
/// another process (podman) has to bind it.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One compose project of a test; `make down` on drop, so a failing test
/// leaves nothing running.
struct Project {
    name: String,
    port: u16,
    images: &'static (String, String),
    config: Option<PathBuf>,
}

impl Project {
    fn new(test: &str) -> Project {
        wasm("jwt_filter");
        Project {
            name: format!("jwt-proxy-e2e-{test}-{}", std::process::id()),
            port: free_port(),
            images: standin_images(),
            config: None,
        }
    }

    /// `make <target>` for this project. `make test` built the module:
    /// `-o wasm` keeps `make up` from building it again, which would put an
    /// untrimmed module in place for a moment (cargo copies it out before
    /// the trim) under the tests running beside this one.
    fn command(&self, target: &str) -> Command {
        let (base, envoy) = self.images;
        let mut cmd = Command::new("make");
        compose_env(&mut cmd)
            .args(["-o", "wasm", target])
            .env("COMPOSE_PROJECT", &self.name)
            .env("HTTP_PORT", self.port.to_string())
            .env("BASE_IMAGE", base)
            .env("ENVOY_IMAGE", envoy);
        match &self.config {
            Some(c) => cmd.env("PLUGIN_CONFIG_FILE", c),
            None => cmd.env_remove("PLUGIN_CONFIG_FILE"),
        };
        cmd
    }

    fn make(&self, target: &str) -> Output {
        self.command(target)
            .output()
            .unwrap_or_else(|e| panic!("make {target} failed to start: {e}"))
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What podman has of the project: `kind name` lines.
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let pod = format!("name=^pod_{}$", self.name);
        let listings: [(&str, &[&str]); 4] = [
            (
                "container",
                &["ps", "-a", "--format", "{{.Names}}", "--filter", &label],
            ),
            (
                "network",
                &["network", "ls", "--format", "{{.Name}}", "--filter", &label],
            ),
            (
                "volume",
                &["volume", "ls", "--format", "{{.Name}}", "--filter", &label],
            ),
            (
                "pod",
                &["pod", "ls", "--format", "{{.Name}}", "--filter", &pod],
            ),
        ];
        let mut found = Vec::new();
        for (kind, args) in listings {
            let out = run(Command::new("podman").args(args));
            for name in String::from_utf8_lossy(&out.stdout).lines() {
                found.push(format!("{kind} {name}"));
            }
        }
        found
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.command("down").output();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn make_up_signs_posts_and_make_down_removes_everything() {
    if !podman_present("make_up_signs_posts_and_make_down_removes_everything") {
        return;
    }
    let project = Project::new("up");
    let started = Instant::now();
    let up = project.make("up");
    assert!(up.status.success(), "make up failed: {}", text(&up));
    eprintln!("compose: make up returned in {:?}", started.elapsed());
    // Any base image runs the echo: it needs no library of the host's.
    let echo = root().join("target/x86_64-unknown-linux-musl/release/echo-upstream");
    let ldd = text(&Command::new("ldd").arg(&echo).output().unwrap());
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "{} is not static: {ldd}",
        echo.display()
    );

    // Ready means ready: no retry loop here.
    let mut jtis = Vec::new();
    for i in 0..5 {
        let body = format!(r#"{{"n":{i},"via":"compose"}}"#);
        let resp = exchange(project.addr(), &post("/compose", &[], body.as_bytes()));
        assert_eq!(resp.status, 200, "POST {i}: {}", resp.text());
        assert_eq!(resp.body, body.as_bytes(), "the echo returns the body");
        assert_eq!(
            resp.header("x-echo-request-line"),
            Some("POST /compose"),
            "the echo upstream answered"
        );
        let token = resp
            .header("x-echo-x-my-jwt")
            .unwrap_or_else(|| panic!("POST {i} reached the echo unsigned: {:?}", resp.headers));
        let claims = verify(token, SECRET.as_bytes());
        assert_eq!(claims["payload"]["user"], "username", "{claims}");
        assert!(claims["iat"].is_u64(), "{claims}");
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    jtis.sort();
    jtis.dedup();
    assert_eq!(jtis.len(), 5, "every token has its own jti");

    let status = exchange(project.addr(), &bare("GET", "/status", &[]));
    assert_eq!(status.status, 200, "{}", status.text());
    let figures: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(figures["status"], "ok", "{figures}");
    assert_eq!(figures["requests_signed"], 5, "{figures}");

    let before = project.leftovers();
    let containers = before
        .iter()
        .filter(|l| l.starts_with("container "))
        .count();
    let networks = before.iter().filter(|l| l.starts_with("network ")).count();
    assert_eq!(
        (containers, networks),
        (2, 1),
        "what make up made: {before:?}"
    );

    let down = project.make("down");
    assert!(down.status.success(), "make down failed: {}", text(&down));
    assert_eq!(
        project.leftovers(),
        Vec::<String>::new(),
        "left by make down"
    );
    assert!(
        refused(project.addr()),
        "the published port still answers after make down"
    );
    eprintln!(
        "compose: up, 6 requests and down in {:?}",
        started.elapsed()
    );
}

/// Whether a connection to `addr` is refused.
fn refused(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_err()
}

#[test]
fn make_up_with_an_invalid_filter_configuration_fails_and_leaves_nothing() {
    if !podman_present("make_up_with_an_invalid_filter_configuration_fails_and_leaves_nothing") {
        return;
    }
    let mut project = Project::new("bad");
    let dir = root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join(format!("compose-bad-{}.json", std::process::id()));
    std::fs::write(
        &config,
        format!(r#"{{"secret":"{SECRET}","no_such_field":1}}"#),
    )
    .unwrap();
    project.config = Some(config.clone());

    let started = Instant::now();
    let up = project.make("up");
    let output = text(&up);
    assert!(
        !up.status.success(),
        "make up succeeded with an invalid configuration: {output}"
    );
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("jwt-proxy refuses to start"))
        .collect();
    assert_eq!(lines.len(), 1, "one line with the filter's error: {output}");
    assert!(
        lines[0].starts_with("compose.sh: jwt-proxy refuses to start: ")
            && lines[0].contains("`no_such_field`"),
        "the line names the field: {}",
        lines[0]
    );
    assert!(!lines[0].contains(SECRET), "the error quotes the key");
    assert_eq!(
        project.leftovers(),
        Vec::<String>::new(),
        "left by a failed make up"
    );
    eprintln!("compose: make up failed in {:?}", started.elapsed());
    std::fs::remove_file(&config).unwrap();
}
