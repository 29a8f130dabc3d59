//! The library's one error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong loading a plugin or running the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `.wasm` file could not be read.
    #[error("cannot read wasm file \"{path}\": {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid wasm module.
    #[error("cannot compile the wasm module: {0}")]
    Compile(String),
    /// The module imports something outside ABI 0.2.1 and WASI preview 1.
    #[error("the module imports \"{module}.{name}\", which this host does not provide")]
    UnknownImport {
        /// Import module (e.g. `env`).
        module: String,
        /// Import name (e.g. `proxy_foo`).
        name: String,
    },
    /// Linking or instantiation failed (e.g. an import with the wrong signature).
    #[error("cannot link the wasm module: {0}")]
    Link(String),
    /// A required export is missing.
    #[error("the module does not export \"{0}\"")]
    MissingExport(&'static str),
    /// An export has the wrong type.
    #[error("the module's export \"{name}\" has the wrong type: {reason}")]
    Export {
        /// Export name.
        name: &'static str,
        /// What wasmtime said.
        reason: String,
    },
    /// `proxy_on_vm_start` returned false.
    #[error("the filter refused to start: proxy_on_vm_start returned false; filter log: {log}")]
    VmStartFailed {
        /// The filter's warning and error lines logged during start, joined with ` | `.
        log: String,
    },
    /// `proxy_on_configure` returned false.
    #[error(
        "the filter rejected its configuration: proxy_on_configure returned false; filter log: {log}"
    )]
    ConfigureFailed {
        /// The filter's warning and error lines logged during start, joined with ` | `.
        log: String,
    },
    /// The guest trapped (or panicked) in a callback.
    #[error("the filter trapped in {callback}: {message}")]
    Trap {
        /// The callback (export) that trapped.
        callback: String,
        /// The trap, on one line.
        message: String,
    },
    /// The context belonged to a VM that was reloaded after a trap.
    #[error("context {0} was lost when its VM was reloaded")]
    ContextLost(u32),
    /// No such HTTP context.
    #[error("no HTTP context {0}")]
    UnknownContext(u32),
    /// The worker has no VM (reloading failed).
    #[error("the worker has no VM")]
    VmUnavailable,
    /// The worker thread stopped.
    #[error("the worker thread has stopped")]
    WorkerGone,
    /// A thread could not be spawned.
    #[error("cannot spawn a worker thread: {0}")]
    Thread(String),
    /// An invalid builder setting.
    #[error("invalid {what} \"{value}\": {reason}")]
    Invalid {
        /// The setting.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}
