//! Removes named function exports from a WebAssembly module, leaving every
//! other byte of the module as it was.
//!
//! Why: the proxy-wasm Rust SDK exports every callback of the ABI
//! (`proxy_on_request_body`, `proxy_on_response_body`, the trailers, ...),
//! whether the filter implements it or not. Envoy (proxy-wasm-cpp-host) calls
//! each exported callback on every request, and skips the ones a module does
//! not export. A header-only filter pays two crossings into V8 per POST for
//! nothing: about 1 µs of proxy CPU per request in Envoy (BENCHMARKS.md,
//! variant (c3)); `proxy_on_done`, which our filters leave to the SDK's
//! default, is one more (1,900 of Envoy's instructions per POST). The SDK
//! offers no way to leave them out, so the build removes them after linking.
//! The function bodies stay (dead code, a few hundred bytes); only the
//! exports go, which is all the host looks at.

use std::collections::BTreeSet;

/// The callbacks a filter that only looks at headers never needs: Envoy
/// calls the body and trailer ones once per body chunk and trailer block when
/// they are exported, and `proxy_on_done` once per request and root context.
/// The SDK's `proxy_on_done` only returns `on_done()`, whose default is
/// `true`; a host treats a module without the export as answering `true`
/// (proxy-wasm-cpp-host, the test host). Drop it only from a filter that
/// does not override `on_done`.
pub const UNUSED_CALLBACKS: [&str; 5] = [
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_done",
];

/// The export section's id in the binary format.
const EXPORT_SECTION: u8 = 7;

use wasm_encoder::{Encode, Module, RawSection};
use wasmparser::{ExternalKind, Parser, Payload, Validator};

/// Why a module could not be trimmed. Nothing is written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum TrimError {
    /// The input does not start with the WebAssembly magic number.
    #[error("not a WebAssembly module (no `\\0asm` header)")]
    NotWasm,
    /// The input is not a valid core WebAssembly module.
    #[error("not a valid WebAssembly module")]
    Invalid(#[from] wasmparser::BinaryReaderError),
    /// A name to drop is exported, but not as a function.
    #[error("export `{0}` is not a function; only function exports can be dropped")]
    NotAFunction(String),
    /// A section runs past the end of the input (the module is `len` bytes).
    #[error("a section runs past the end of the module ({0} bytes)")]
    Truncated(usize),
    /// The input is a component, not a core module.
    #[error("a component, not a core module: only core modules can be trimmed")]
    Component,
    /// The trimmed module does not validate (a bug in this crate).
    #[error("the trimmed module does not validate")]
    Output(#[source] wasmparser::BinaryReaderError),
}

/// The trimmed module and what was done to it.
#[derive(Debug)]
pub struct Trimmed {
    /// The new module bytes.
    pub module: Vec<u8>,
    /// The names that were exported and are not any more, in module order.
    pub dropped: Vec<String>,
    /// The names asked for that the module did not export (already trimmed,
    /// or a callback the SDK does not define), sorted.
    pub absent: Vec<String>,
}

/// Returns `module` without the function exports named in `drop`.
///
/// Every section other than the export section is copied byte for byte; the
/// result is validated before it is returned. Names the module does not
/// export are reported in [`Trimmed::absent`], so running it twice is
/// harmless.
pub fn trim(module: &[u8], drop: &[&str]) -> Result<Trimmed, TrimError> {
    if !module.starts_with(b"\0asm") {
        return Err(TrimError::NotWasm);
    }
    Validator::new().validate_all(module)?;
    let wanted: BTreeSet<&str> = drop.iter().copied().collect();
    let mut out = Module::new();
    let mut dropped = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload?;
        match &payload {
            Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            } => return Err(TrimError::Component),
            Payload::ExportSection(reader) => {
                let end = reader.range().end;
                let mut entries = Vec::new();
                for entry in reader.clone().into_iter_with_offsets() {
                    entries.push(entry?);
                }
                // Kept entries are copied byte for byte: entry i spans from
                // its offset to the next entry's (or the section's end).
                let mut kept = Vec::new();
                let mut count = 0u32;
                for (i, (offset, export)) in entries.iter().enumerate() {
                    if wanted.contains(export.name) {
                        if export.kind != ExternalKind::Func {
                            return Err(TrimError::NotAFunction(export.name.to_owned()));
                        }
                        dropped.push(export.name.to_owned());
                        continue;
                    }
                    let next = entries.get(i + 1).map_or(end, |(o, _)| *o);
                    let bytes = module
                        .get(usize_range(*offset..next))
                        .ok_or_else(|| truncated(module.len()))?;
                    kept.extend_from_slice(bytes);
                    count += 1;
                }
                let mut data = Vec::with_capacity(kept.len() + 5);
                count.encode(&mut data);
                data.extend_from_slice(&kept);
                out.section(&RawSection {
                    id: EXPORT_SECTION,
                    data: &data,
                });
                continue;
            }
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            let data = module
                .get(usize_range(range))
                .ok_or_else(|| truncated(module.len()))?;
            out.section(&RawSection { id, data });
        }
    }
    let module = out.finish();
    Validator::new()
        .validate_all(&module)
        .map_err(TrimError::Output)?;
    let absent = wanted
        .into_iter()
        .filter(|name| !dropped.iter().any(|d| d == name))
        .map(str::to_owned)
        .collect();
    Ok(Trimmed {
        module,
        dropped,
        absent,
    })
}

fn usize_range(r: std::ops::Range<u64>) -> std::ops::Range<usize> {
    let start = usize::try_from(r.start).unwrap_or(usize::MAX);
    let end = usize::try_from(r.end).unwrap_or(usize::MAX);
    start..end
}

fn truncated(len: usize) -> TrimError {
    TrimError::Truncated(len)
}

/// The names of the module's function exports, in module order.
pub fn function_exports(module: &[u8]) -> Result<Vec<String>, TrimError> {
    if !module.starts_with(b"\0asm") {
        return Err(TrimError::NotWasm);
    }
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ExportSection(reader) = payload? {
            for export in reader {
                let export = export?;
                if export.kind == ExternalKind::Func {
                    names.push(export.name.to_owned());
                }
            }
        }
    }
    Ok(names)
}
