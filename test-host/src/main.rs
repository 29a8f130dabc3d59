//! `test-host`: run a proxy-wasm HTTP filter in front of an upstream, like Envoy would.
//!
//! ```text
//! test-host --wasm FILE [--config FILE] [--host-env NAME]... [--env KEY=VALUE]...
//!           --listen ADDR --upstream HOST:PORT [--cluster NAME=HOST:PORT]...
//!           [--cluster NAME=h2c://HOST:PORT]... [--workers N]
//! ```
//! The upstream is also the cluster `upstream` (as `envoy/envoy.yaml` names it); `--cluster`
//! adds named clusters for HTTP callouts (`HOST:PORT`, HTTP/1.1) and gRPC (`h2c://`, HTTP/2
//! with prior knowledge), like `envoy/render.sh`'s `CLUSTERS`.
//! Secrets (the signing key) reach the VM through `--host-env NAME`, which copies the variable
//! `NAME` of this process's environment into the VM's (Envoy's
//! `vm_config.environment_variables.host_env_keys`); never through `--env`, whose value `ps`
//! shows. Logs (the filter's and the host's) go to stderr, one line each, with the level.
//! SIGTERM or Ctrl-C stops accepting and lets requests in flight finish (at most 10 s).
//! SIGHUP reads `--config` again and applies it without a restart (`Host::reconfigure`): new
//! requests use it, requests in flight finish on the old one; one the filter refuses is
//! logged and the running configuration keeps serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use test_host::{HostBuilder, Level};

/// Run a proxy-wasm (ABI 0.2.1) HTTP filter in a wasmtime host in front of an upstream.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The filter module (.wasm).
    #[arg(long, value_name = "FILE")]
    wasm: PathBuf,
    /// Plugin configuration file (passed to proxy_on_configure as is).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Pass this process's environment variable NAME into the VM (repeatable), like Envoy's
    /// vm_config.environment_variables.host_env_keys; an unset NAME is skipped. Use it for
    /// secrets such as JWT_SECRET.
    #[arg(long = "host-env", value_name = "NAME")]
    host_env: Vec<String>,
    /// An environment variable inside the VM (repeatable), like Envoy's
    /// vm_config.environment_variables.key_values. Not for secrets: the command line is
    /// visible to every user (ps); use --host-env.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Address to listen on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "TEST_HOST_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// The upstream, HOST:PORT (a hostname or an address).
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,
    /// A named cluster for HTTP callouts and gRPC calls (repeatable): NAME=HOST:PORT
    /// (HTTP/1.1) or NAME=h2c://HOST:PORT (HTTP/2 with prior knowledge). The upstream is the
    /// cluster "upstream".
    #[arg(long = "cluster", value_name = "NAME=SPEC", value_parser = parse_cluster)]
    cluster: Vec<(String, String)>,
    /// Worker threads, one VM each.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Host log level: trace, debug, info, warn, error, critical.
    #[arg(long, default_value = "info")]
    log_level: Level,
    /// Seconds to wait for the upstream's response headers before answering 504.
    #[arg(long, default_value_t = 15)]
    upstream_timeout: u64,
    /// Seconds a request head may take from its first byte (else 408).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    request_headers_timeout: f64,
    /// Seconds after which a connection with no request in flight is closed.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    idle_timeout: f64,
    /// Client connections open at once; past it a new one is closed at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// The plugin_name property.
    #[arg(long, default_value = "test-host")]
    plugin_name: String,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got \"{s}\"")),
    }
}

fn parse_cluster(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, spec)) if !name.is_empty() && !spec.is_empty() => {
            Ok((name.to_owned(), spec.to_owned()))
        }
        _ => Err(format!(
            "expected NAME=HOST:PORT or NAME=h2c://HOST:PORT, got \"{s}\""
        )),
    }
}

/// A duration from a number of seconds given on the command line.
fn seconds(secs: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds, got {secs}"))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut builder = HostBuilder::new(args.wasm.clone())
        .listen(args.listen)
        .upstream(&args.upstream)
        .workers(args.workers)
        .log_level(args.log_level)
        .upstream_timeout(Duration::from_secs(args.upstream_timeout))
        .request_headers_timeout(seconds(
            args.request_headers_timeout,
            "--request-headers-timeout",
        )?)
        .idle_timeout(seconds(args.idle_timeout, "--idle-timeout")?)
        .max_connections(args.max_connections)
        .plugin_name(args.plugin_name)
        .echo_logs(true)
        .log_capacity(0);
    if let Some(path) = &args.config {
        let config = std::fs::read(path)
            .with_context(|| format!("cannot read plugin configuration \"{}\"", path.display()))?;
        builder = builder.plugin_config(config);
    }
    for (name, spec) in args.cluster {
        builder = builder.cluster(name, spec);
    }
    for (k, v) in args.env {
        builder = builder.env(k, v);
    }
    for name in &args.host_env {
        match std::env::var(name) {
            Ok(value) => builder = builder.env(name, value),
            // Envoy skips a host_env_keys entry that is not set.
            Err(std::env::VarError::NotPresent) => {
                eprintln!("[warn] host: --host-env {name}: not set in this environment; skipped");
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("--host-env {name}: the value is not valid UTF-8")
            }
        }
    }
    let host = builder
        .start()
        .await
        .with_context(|| format!("cannot start the filter \"{}\"", args.wasm.display()))?;
    eprintln!(
        "[info] host: listening on http://{} -> upstream {} ({} workers)",
        host.local_addr(),
        args.upstream,
        args.workers.max(1)
    );
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut hangups = hangups();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = hangups.recv() => reload(&host, args.config.as_deref()).await,
        }
    }
    eprintln!("[info] host: shutting down; letting requests in flight finish");
    host.shutdown().await;
    Ok(())
}

/// SIGHUPs, as a channel (none off Unix).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if tx.send(()).await.is_err() {
                    break;
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// On SIGHUP: `--config` read again and applied.
async fn reload(host: &test_host::Host, config: Option<&std::path::Path>) {
    let Some(path) = config else {
        eprintln!("[warn] host: SIGHUP, but no --config to read again");
        return;
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "[error] host: SIGHUP: cannot read \"{}\": {e}; the running configuration keeps serving",
                path.display()
            );
            return;
        }
    };
    match host.reconfigure(bytes).await {
        Ok(()) => eprintln!("[info] host: SIGHUP: applied \"{}\"", path.display()),
        Err(e) => eprintln!(
            "[error] host: SIGHUP: \"{}\" refused: {e:#}",
            path.display()
        ),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[error] host: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
