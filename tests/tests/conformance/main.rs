//! The conformance suite (issue 13): the project's own fixture filters, one
//! per ABI area (`tests/fixtures/conformance/conf-*`), each run through the
//! real Envoy (`envoy/envoy.yaml` as `make run` renders it) and the test host
//! with the same requests. Each test asserts the same filter-visible results
//! on both: the client's response, what the upstream and each cluster
//! received, and the filter's log lines.
//!
//! A module per area. Needs `make wasm fixtures` and Envoy, as `make test`
//! provides; nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
mod body;
mod callout;
mod failure;
mod grpc;
mod grpc_names;
mod hold;
mod lifecycle;
mod properties;
mod queue;
mod raw;
mod reply;
mod wasi;
