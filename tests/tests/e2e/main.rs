//! End-to-end tests: one binary, a module per concern.
//!
//! Needs the wasm modules (`make wasm fixtures`) and an Envoy binary
//! (`make envoy`); `make test` provides both. Missing pieces fail the tests
//! with a message saying how to build them: nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod artifact;
mod claims;
mod compose;
mod differential;
mod edge;
mod envoy;
mod faults;
mod fleet;
mod hostcalls;
mod hostile;
mod hygiene;
mod identity;
mod oci;
mod regressions;
mod retry;
mod run_script;
mod soak;
mod util;
mod verifier;
