//! The host functions of ABI 0.2.1 and WASI preview 1, one module per concern. Each only
//! decodes guest memory (through [`memory`], bounds-checked) and calls a method on
//! [`crate::state`], or, for a call to a cluster, [`crate::callout`] (which checks it and
//! starts its I/O); each exposes `add_to_linker`, and [`crate::vm`] wires them into the one
//! `Linker`. An `Err` traps the guest: kept for bad guest pointers and host bugs; expected
//! outcomes are ABI [`crate::abi::Status`] codes.

pub(crate) mod buffers;
pub(crate) mod callout;
pub(crate) mod clock;
pub(crate) mod context;
pub(crate) mod emscripten;
pub(crate) mod grpc;
pub(crate) mod headers;
pub(crate) mod log;
pub(crate) mod memory;
pub(crate) mod properties;
pub(crate) mod shared;
pub(crate) mod stream;
pub(crate) mod wasi;
