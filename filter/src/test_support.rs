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
