//! What the native unit tests of several modules share: the task's key and
//! a configuration built from it.

#![allow(clippy::unwrap_used)]

use crate::config::Config;

/// The task's HS512 key (SPEC section 1), used as UTF-8 bytes.
pub(crate) const SECRET: &str = "a9ddbcaba8c0ac1a0a812dc0c2f08514b23f2db0a68343cb8199ebb38a6d91e4ebfb378e22ad39c2d01d0b4ec9c34aa91056862ddace3fbbd6852ee60c36acbf";

/// The configuration `{"secret": SECRET<extra>}`: `extra` is more fields,
/// each with its leading comma.
pub(crate) fn config(extra: &str) -> Config {
    Config::parse(
        format!(r#"{{"secret":"{SECRET}"{extra}}}"#).as_bytes(),
        |_| None,
    )
    .unwrap()
}

/// Test-only keys (tests/fixtures/keys, `openssl genpkey`).
pub(crate) mod keys {
    pub(crate) const ED_A: &str = include_str!("../../tests/fixtures/keys/ed25519-a.pem");
    pub(crate) const ED_A_PUB: &str = include_str!("../../tests/fixtures/keys/ed25519-a.pub.pem");
    pub(crate) const ED_B: &str = include_str!("../../tests/fixtures/keys/ed25519-b.pem");
    pub(crate) const P256_A: &str = include_str!("../../tests/fixtures/keys/p256-a.pem");
    pub(crate) const P256_A_PUB: &str = include_str!("../../tests/fixtures/keys/p256-a.pub.pem");
    pub(crate) const P256_B_PUB: &str = include_str!("../../tests/fixtures/keys/p256-b.pub.pem");
    pub(crate) const P256_A_SEC1: &str = include_str!("../../tests/fixtures/keys/p256-a.sec1.pem");
    pub(crate) const P384: &str = include_str!("../../tests/fixtures/keys/p384.pem");
    pub(crate) const P384_PUB: &str = include_str!("../../tests/fixtures/keys/p384.pub.pem");
}

/// The configuration with this `keys` ring (a JSON array) and more fields.
pub(crate) fn ring_config(keys: serde_json::Value, extra: serde_json::Value) -> Config {
    let mut doc = serde_json::json!({ "keys": keys });
    if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
        doc.extend(extra.clone());
    }
    Config::parse(doc.to_string().as_bytes(), |_| None).unwrap()
}
