//! A wasmtime host that runs proxy-wasm (ABI 0.2.1) HTTP filters with Envoy's semantics, for
//! tests and local runs.
//!
//! Two ways in, both configured with a [`HostBuilder`]:
//! - [`HostBuilder::start`] runs a real HTTP/1.1 proxy (hyper 1 + tokio) on `127.0.0.1:0` (or
//!   [`HostBuilder::listen`]) in front of [`HostBuilder::upstream`]; the returned [`Host`] is a
//!   guard that stops the proxy when dropped, and exposes logs, metrics and shared data.
//! - [`HostBuilder::instantiate`] loads the plugin into one VM without HTTP; [`Plugin`] drives
//!   the callbacks directly and reads back headers, actions and local replies.
//!
//! Concurrency model (Envoy's): N worker threads, each with its own `Store` and instance of one
//! compiled `Module`; a root context per VM; an HTTP context per request, on the worker that
//! owns the connection. Shared data and metrics are host-wide. Wasm never runs on an async task:
//! each VM lives on its own OS thread and receives jobs over a channel.
//!
//! Layout: `state` is the leaf (host state types, no guest memory); `hostcalls` has one
//! module per ABI concern, each decoding guest memory and calling the state; `vm` wires them
//! into one `Linker` and runs one instance; `worker` gives each VM its own thread; `proxy` is
//! the HTTP side (server, one exchange per request, body pumps, upstream client, hop-by-hop
//! rules) behind `edge`'s checks of raw HTTP/1 heads.
#![forbid(unsafe_code)]

mod abi;
mod builder;
mod callout;
mod edge;
mod error;
mod host;
mod hostcalls;
mod plugin;
mod proxy;
mod state;
mod vm;
mod worker;

pub use abi::{Action, Level, Status};
pub use builder::{HostBuilder, WasmSource};
pub use error::Error;
pub use host::Host;
pub use plugin::{HttpContextId, Plugin, Verdict};
pub use state::clock::{Clock, ManualClock};
pub use state::headers::HeaderList;
pub use state::log::{LogRecord, LogSource};
pub use state::{LocalReply, Random};
pub use vm::HostFunction;
