//! `jwt-verifier --config FILE [--out FILE] [--jwks-url URL | --local]`:
//! writes the upstream's Envoy `jwt_authn` filter for the filter's key ring
//! (see the library). Keys from `secret_env` (and `private_key_env`) are read
//! from this process's environment, as Envoy passes its own into the VM.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use jwt_filter::config::Config;
use jwt_verifier::{Jwks, Remote};

/// Writes the Envoy `jwt_authn` filter that verifies the filter's tokens.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The filter's configuration (JSON), e.g. envoy/filter-config.json.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where to write the YAML (mode 0600: it holds the keys).
    #[arg(long, value_name = "FILE", default_value = "envoy/verifier.yaml")]
    out: PathBuf,
    /// Where the upstream fetches the proxy's JWKS (asymmetric keys), e.g.
    /// http://proxy:8080/.well-known/jwks.json; default: the local `make run`
    /// on --http-port.
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    jwks_url: Option<String>,
    /// The port of the local `make run`, for the default --jwks-url.
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    http_port: u16,
    /// How long the upstream caches the fetched JWKS, in seconds (default:
    /// the filter's `jwks_max_age_seconds`).
    #[arg(long, value_name = "SECONDS")]
    cache_seconds: Option<u64>,
    /// Inline the JWKS (`local_jwks`) instead of fetching it: a new key then
    /// needs a new verifier config.
    #[arg(long)]
    local: bool,
}

fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("jwt-verifier: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    // The filter's own rules and error (a field name, never a key).
    let config = Config::parse(&bytes, |name| std::env::var(name).ok())
        .with_context(|| format!("{} is refused by the filter", args.config.display()))?;
    let jwks = if args.local {
        Jwks::Local
    } else {
        let mut remote = match &args.jwks_url {
            Some(url) => Remote::new(url, jwt_verifier::jwks_max_age(&config))?,
            None => Remote::local_run(&config, args.http_port)?,
        };
        if let Some(secs) = args.cache_seconds {
            remote = Remote::new(&remote.url, secs)?;
        }
        Jwks::Remote(remote)
    };
    let yaml = jwt_verifier::render(&config, &args.config.display().to_string(), &jwks);
    let mut file =
        private_file(&args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    file.write_all(yaml.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let kids: Vec<&str> = config
        .ring
        .iter()
        .filter_map(|k| k.id.as_deref().or(config.key_id.as_deref()))
        .collect();
    let from = match &jwks {
        Jwks::Local => String::new(),
        Jwks::Remote(remote) if jwt_verifier::public_jwks(&config).is_some() => {
            format!("; public keys fetched from {}", remote.url)
        }
        Jwks::Remote(_) => String::new(),
    };
    eprintln!(
        "jwt-verifier: wrote {} ({} key(s){}{}{from})",
        args.out.display(),
        config.ring.len(),
        if kids.is_empty() { "" } else { ": " },
        kids.join(", ")
    );
    Ok(())
}

/// Creates (or truncates) `path` readable by its owner only.
fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    // An existing file keeps its mode on open: set it.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(file)
}
