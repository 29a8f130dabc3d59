//! An upstream's own Envoy verifying jwt-proxy's tokens with what `make
//! verifier` writes: `tests/fixtures/verifier/envoy.yaml` with the generated
//! `http_filters` and `clusters` entries at its marker lines, in front of an
//! upstream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{EnvoyBuilder, root};

static N: AtomicUsize = AtomicUsize::new(0);

/// Envoy (not started) with the `jwt_authn` filter `filter` and, when the
/// JWKS is remote, the cluster `cluster` (each one YAML list item at
/// indentation 0, as `jwt_verifier::Verifier` holds them), in front of
/// `upstream`.
pub fn envoy(upstream: SocketAddr, filter: &str, cluster: Option<&str>) -> EnvoyBuilder {
    let indent =
        |text: &str, by: &str| -> String { text.lines().map(|l| format!("{by}{l}\n")).collect() };
    let template = std::fs::read_to_string(root().join("tests/fixtures/verifier/envoy.yaml"))
        .unwrap()
        .replace("          # make verifier\n", &indent(filter, "          "))
        .replace(
            "  # make verifier: clusters\n",
            &cluster.map(|c| indent(c, "  ")).unwrap_or_default(),
        );
    let dir = root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!(
        "verifier-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, template).unwrap();
    EnvoyBuilder::new(upstream).template(path)
}
