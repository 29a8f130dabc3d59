//! `trim-exports MODULE.wasm NAME...`: removes the named function exports
//! from MODULE.wasm in place (see the library's documentation for why).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// Removes proxy-wasm callbacks a filter does not implement from a module's
/// exports, so the host skips them. Rewrites the file in place; running it
/// again is harmless.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The module to rewrite.
    module: PathBuf,
    /// Function exports to remove, e.g. `proxy_on_request_body`.
    #[arg(required = true)]
    exports: Vec<String>,
}

fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("trim-exports: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let path = &args.module;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let names: Vec<&str> = args.exports.iter().map(String::as_str).collect();
    let trimmed =
        trim_exports::trim(&bytes, &names).with_context(|| format!("{}", path.display()))?;
    if !trimmed.dropped.is_empty() {
        // Write beside it and rename: a failed write never leaves half a module.
        let tmp = path.with_extension("wasm.trim-tmp");
        std::fs::write(&tmp, &trimmed.module)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    }
    println!(
        "{}: {} bytes, dropped {} export(s){}{}",
        path.display(),
        trimmed.module.len(),
        trimmed.dropped.len(),
        if trimmed.dropped.is_empty() { "" } else { ": " },
        trimmed.dropped.join(", "),
    );
    if !trimmed.absent.is_empty() {
        println!(
            "  not exported (already trimmed?): {}",
            trimmed.absent.join(", ")
        );
    }
    Ok(())
}
