//! `trim` on small modules built with wasm-encoder.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use trim_exports::{TrimError, function_exports, trim};
use wasm_encoder::{
    CodeSection, CustomSection, ExportKind, ExportSection, Function, FunctionSection,
    MemorySection, MemoryType, Module, TypeSection,
};
use wasmparser::{Parser, Payload};

/// A module exporting `memory` and the functions `names`, each `() -> i32`
/// returning its index, plus a custom section.
fn module(names: &[&str]) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([], [wasm_encoder::ValType::I32]);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut exports = ExportSection::new();
    let mut memory = MemorySection::new();
    memory.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    exports.export("memory", ExportKind::Memory, 0);
    for (i, name) in names.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        funcs.function(0);
        let mut f = Function::new([]);
        f.instructions()
            .i32_const(i32::try_from(i).unwrap_or(0))
            .end();
        code.function(&f);
        exports.export(name, ExportKind::Func, index);
    }
    let mut m = Module::new();
    m.section(&types)
        .section(&funcs)
        .section(&memory)
        .section(&exports)
        .section(&code)
        .section(&CustomSection {
            name: "producers-ish".into(),
            data: b"kept as is".as_slice().into(),
        });
    m.finish()
}

/// (section id, contents) of every section, export section excluded.
fn sections_but_exports(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    Parser::new(0)
        .parse_all(bytes)
        .filter_map(|p| p.ok()?.as_section())
        .filter(|(id, _)| *id != 7)
        .map(|(id, r)| (id, bytes[r.start as usize..r.end as usize].to_vec()))
        .collect()
}

/// Every export's name (memory included), independently of the crate.
fn exports(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        if let Ok(Payload::ExportSection(reader)) = payload {
            for e in reader.into_iter().flatten() {
                names.push(e.name.to_owned());
            }
        }
    }
    names
}

#[test]
fn lists_function_exports_only() {
    let input = module(&["a", "b"]);
    assert_eq!(function_exports(&input).expect("lists"), ["a", "b"]);
    assert_eq!(exports(&input), ["memory", "a", "b"]);
}

#[test]
fn drops_the_named_function_exports_and_nothing_else() {
    let input = module(&[
        "proxy_on_request_headers",
        "proxy_on_request_body",
        "proxy_on_log",
    ]);
    let out = trim(&input, &["proxy_on_request_body", "proxy_on_tick"]).expect("trims");
    assert_eq!(out.dropped, ["proxy_on_request_body"]);
    assert_eq!(out.absent, ["proxy_on_tick"]);
    assert_eq!(
        exports(&out.module),
        ["memory", "proxy_on_request_headers", "proxy_on_log"]
    );
    // The functions, code and custom section are untouched, byte for byte.
    assert_eq!(
        sections_but_exports(&out.module),
        sections_but_exports(&input)
    );
    assert!(out.module.len() < input.len());
    wasmparser::Validator::new()
        .validate_all(&out.module)
        .expect("valid");
}

#[test]
fn trimming_twice_changes_nothing() {
    let input = module(&["a", "proxy_on_response_body"]);
    let once = trim(&input, &["proxy_on_response_body"]).expect("trims");
    let twice = trim(&once.module, &["proxy_on_response_body"]).expect("trims again");
    assert!(twice.dropped.is_empty());
    assert_eq!(twice.absent, ["proxy_on_response_body"]);
    assert_eq!(twice.module, once.module);
}

#[test]
fn nothing_to_drop_gives_the_same_bytes() {
    let input = module(&["a", "b"]);
    let out = trim(&input, &[]).expect("trims");
    assert_eq!(out.module, input);
}

#[test]
fn refuses_to_drop_a_memory() {
    let input = module(&["a"]);
    let err = trim(&input, &["memory"]).expect_err("memory is not a function");
    assert!(
        matches!(err, TrimError::NotAFunction(ref n) if n == "memory"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "export `memory` is not a function; only function exports can be dropped"
    );
}

#[test]
fn refuses_what_is_not_a_module() {
    let err = trim(b"[workspace]\n", &["a"]).expect_err("not wasm");
    assert!(matches!(err, TrimError::NotWasm), "{err}");
    let mut broken = module(&["a"]);
    broken.truncate(broken.len() - 5);
    let err = trim(&broken, &["a"]).expect_err("truncated");
    assert!(matches!(err, TrimError::Invalid(_)), "{err}");
}
