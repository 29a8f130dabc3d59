//! `jwt-verifier --config FILE [--out FILE]`: writes the upstream's Envoy
//! `jwt_authn` filter for the filter's key ring (see the library). Keys from
//! `secret_env` are read from this process's environment, as Envoy passes its
//! own into the VM.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use jwt_filter::config::Config;

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
    let yaml = jwt_verifier::render(&config, &args.config.display().to_string());
    let mut file =
        private_file(&args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    file.write_all(yaml.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let kids: Vec<&str> = config
        .ring
        .iter()
        .filter_map(|k| k.id.as_deref().or(config.key_id.as_deref()))
        .collect();
    eprintln!(
        "jwt-verifier: wrote {} ({} key(s){}{})",
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
