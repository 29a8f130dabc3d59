//! The two Emscripten imports Envoy provides for C++ SDK filters built with Emscripten:
//! `env.emscripten_notify_memory_growth` (ignored) and `env.pthread_equal` (`left == right`).

use wasmtime::Linker;

use crate::state::HostState;

/// Adds `emscripten_notify_memory_growth` and `pthread_equal`.
///
/// # Errors
/// When one is already defined in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "emscripten_notify_memory_growth", |_: u32| {})?;
    linker.func_wrap("env", "pthread_equal", |left: u32, right: u32| {
        u32::from(left == right)
    })?;
    Ok(())
}
