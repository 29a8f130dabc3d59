//! Compiling and linking: the one `Linker` every host function module adds itself to, the
//! functions it holds ([`HostFunction`], for the hostcall fuzz), and [`Compiled`], a module
//! linked once and instantiated per VM.

use super::*;

/// The one linker: every host function module, then WASI preview 1.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    hostcalls::log::add_to_linker(&mut linker)?;
    hostcalls::clock::add_to_linker(&mut linker)?;
    hostcalls::buffers::add_to_linker(&mut linker)?;
    hostcalls::headers::add_to_linker(&mut linker)?;
    hostcalls::stream::add_to_linker(&mut linker)?;
    hostcalls::grpc::add_to_linker(&mut linker)?;
    hostcalls::callout::add_to_linker(&mut linker)?;
    hostcalls::shared::add_to_linker(&mut linker)?;
    hostcalls::properties::add_to_linker(&mut linker)?;
    hostcalls::context::add_to_linker(&mut linker)?;
    hostcalls::emscripten::add_to_linker(&mut linker)?;
    hostcalls::wasi::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// A function the test host links into a module: where a module imports it from, its
/// name, and its signature (WAT's value type names, e.g. `i32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFunction {
    /// The import module: `env` (the ABI, Emscripten's two) or `wasi_snapshot_preview1`.
    pub module: String,
    /// The function's name.
    pub name: String,
    /// Its parameter types, in order.
    pub params: Vec<String>,
    /// Its result types.
    pub results: Vec<String>,
}

/// Every function the linker offers, read from the linker itself (so no list can fall
/// behind it).
pub(crate) fn host_functions(shared: &Arc<Shared>) -> Result<Vec<HostFunction>, Error> {
    let engine = Engine::default();
    let linker = linker(&engine).map_err(|e| Error::Link(one_line(&e)))?;
    let mut store = Store::new(
        &engine,
        HostState::new(hostcalls::wasi::context(shared, 0), shared.clone()),
    );
    let items: Vec<(String, String, wasmtime::Extern)> = linker
        .iter(&mut store)
        .map(|(module, name, item)| (module.to_owned(), name.to_owned(), item))
        .collect();
    let names = |types: &mut dyn Iterator<Item = wasmtime::ValType>| -> Vec<String> {
        types.map(|t| t.to_string()).collect()
    };
    Ok(items
        .into_iter()
        .filter_map(|(module, name, item)| {
            let ty = item.into_func()?.ty(&store);
            Some(HostFunction {
                module,
                name,
                params: names(&mut ty.params()),
                results: names(&mut ty.results()),
            })
        })
        .collect())
}

/// One line from a wasmtime error (traps carry multi-line backtraces).
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!("the guest called proc_exit({})", exit.0);
    }
    format!("{e:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The filter's warning-or-worse lines so far (for start failures), or a pointer to stderr.
pub(super) fn filter_complaints(shared: &Shared) -> String {
    let lines: Vec<String> = shared
        .logs
        .records()
        .into_iter()
        .filter(|r| r.source != LogSource::Host && r.level >= Level::Warn)
        .map(|r| r.message)
        .collect();
    if lines.is_empty() {
        "(none captured; see the log output)".to_owned()
    } else {
        lines.join(" | ")
    }
}

/// A compiled module, linked and ready to instantiate any number of times.
pub(crate) struct Compiled {
    pub(super) engine: Engine,
    pub(super) pre: InstancePre<HostState>,
}

impl Compiled {
    /// Compiles and links `wasm`.
    ///
    /// # Errors
    /// [`Error::Compile`] for invalid wasm, [`Error::UnknownImport`] for an import outside
    /// ABI 0.2.1 and WASI preview 1, [`Error::Link`] for a signature mismatch.
    pub(crate) fn new(wasm: &[u8], shared: &Arc<Shared>) -> Result<Self, Error> {
        let engine = Engine::default();
        let module = Module::new(&engine, wasm).map_err(|e| Error::Compile(one_line(&e)))?;
        let linker = linker(&engine).map_err(|e| Error::Link(one_line(&e)))?;
        let mut probe = Store::new(
            &engine,
            HostState::new(hostcalls::wasi::context(shared, 0), shared.clone()),
        );
        for import in module.imports() {
            if linker.get_by_import(&mut probe, &import).is_none() {
                return Err(Error::UnknownImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Link(one_line(&e)))?;
        Ok(Self { engine, pre })
    }
}
