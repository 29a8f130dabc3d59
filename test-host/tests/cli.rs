//! The `test-host` command line: what it refuses before it starts, and how
//! it says so. (The proxy behind it is tested in the tests crate, which
//! also starts this binary through `envoy/run.sh`; being an integration
//! test of this package makes `cargo test --workspace` build the binary.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::{Command, Output};

fn test_host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_test-host"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_names_every_setting_the_run_script_passes() {
    let out = test_host(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--wasm",
        "--config",
        "--listen",
        "--upstream",
        "--workers",
        "--log-level",
        "--cluster",
        "--host-env",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_missing_module_is_refused_naming_its_path() {
    let dir = std::env::temp_dir().join(format!("test-host-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let wasm = dir.join("no-such-module.wasm");
    let out = test_host(&[
        "--wasm",
        wasm.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success(), "started without a module");
    assert!(
        stderr(&out).contains("no-such-module.wasm"),
        "the error does not name the module: {}",
        stderr(&out)
    );
}

#[test]
fn a_cluster_without_an_address_is_refused_naming_the_flag() {
    let out = test_host(&[
        "--wasm",
        "x.wasm",
        "--config",
        "x.json",
        "--upstream",
        "127.0.0.1:9",
        "--cluster",
        "callee",
    ]);
    assert!(!out.status.success(), "a bad --cluster was accepted");
    assert!(
        stderr(&out).contains("--cluster"),
        "the error does not name --cluster: {}",
        stderr(&out)
    );
}
