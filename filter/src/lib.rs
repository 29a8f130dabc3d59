//! jwt-proxy filter: a proxy-wasm HTTP filter that signs every POST with an
//! HS512 JSON Web Token in the `x-my-jwt` request header, strips any token a
//! client sent, logs one line per request and answers `/status` itself.
//!
//! `config`, `jwt`, `keys`, `policy` and `status` are plain Rust and
//! unit-test natively; the proxy-wasm glue in `filter` is compiled for Wasm
//! only.

pub mod config;
pub mod jwt;
pub mod keys;
pub mod policy;
pub mod status;
#[cfg(test)]
mod test_support;

#[cfg(target_arch = "wasm32")]
mod filter;

/// The module's entry point (`_initialize`), called by the host once per VM.
#[cfg(target_arch = "wasm32")]
#[allow(missing_docs)]
mod entry {
    proxy_wasm::main! {{
        // Also installs the SDK's panic hook, which logs the panic at critical
        // before the guest aborts (the host then fails the request with 503).
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(crate::filter::Root::default())
        });
    }}
}
