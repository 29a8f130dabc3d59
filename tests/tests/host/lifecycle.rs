//! Loading, start-up refusals and the direct (no HTTP) API.

use super::*;

// ---- loading and lifecycle ----

/// A module importing `env.proxy_bogus` (hand-assembled wasm).
const BOGUS_IMPORT: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x02, 0x13, 0x01, 0x03, b'e', b'n', b'v', 0x0b, b'p', b'r', b'o', b'x', b'y', b'_', b'b', b'o',
    b'g', b'u', b's', 0x00, 0x00, // import env.proxy_bogus
];

#[test]
fn unknown_import_is_reported_by_name() {
    let err = HostBuilder::new(BOGUS_IMPORT).instantiate().err().unwrap();
    assert!(matches!(err, Error::UnknownImport { .. }), "{err}");
    assert!(err.to_string().contains("env.proxy_bogus"), "{err}");
}

#[test]
fn every_sdk_import_links() {
    // The fixture is built with the SDK; loading it links every import it has.
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    assert!(
        plugin
            .logs()
            .iter()
            .any(|r| r.message.contains("configured with 0 bytes"))
    );
}

#[test]
fn rejected_configuration_refuses_to_start_with_the_filter_reason() {
    let err = HostBuilder::new(fixture())
        .plugin_config("reject")
        .instantiate()
        .err()
        .unwrap();
    assert!(matches!(err, Error::ConfigureFailed { .. }), "{err}");
    assert!(err.to_string().contains("field `mode` is invalid"), "{err}");
}

#[test]
fn failed_vm_start_refuses_to_start() {
    let err = HostBuilder::new(fixture())
        .vm_config("fail")
        .instantiate()
        .err()
        .unwrap();
    assert!(matches!(err, Error::VmStartFailed { .. }), "{err}");
}

#[tokio::test]
async fn proxy_refuses_to_start_on_rejected_configuration() {
    let echo = scripted();
    let err = HostBuilder::new(fixture())
        .plugin_config("reject")
        .upstream(echo.addr())
        .workers(2)
        .start()
        .await;
    assert!(matches!(err, Err(Error::ConfigureFailed { .. })));
}

// ---- direct API ----

#[test]
fn direct_api_runs_callbacks_and_reads_back_state() {
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    let ctx = plugin.create_http_context().unwrap();
    let v = plugin
        .on_request_headers(
            ctx,
            &[
                (":method", "GET"),
                (":path", "/a?b"),
                ("x-fixture-op", "headers"),
                ("X-Replace", "1"),
                ("x-replace", "2"),
                ("x-remove", "r"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(v.action, Action::Continue);
    assert_eq!(v.local_reply, None);
    assert_eq!(v.headers.get_str("x-added"), Some("1"));
    assert_eq!(v.headers.get_all("x-replace"), vec![b"new".as_slice()]);
    assert_eq!(v.headers.get("x-remove"), None);
    assert_eq!(v.headers.get_str("x-seen-path"), Some("/a?b"));
    assert_eq!(v.headers.get_str("x-missing-is-none"), Some("true"));
    assert_eq!(plugin.request_headers(ctx).unwrap(), v.headers);
    let r = plugin
        .on_response_headers(ctx, &[(":status", "201")], true)
        .unwrap();
    assert_eq!(r.headers.get_str("x-fixture-response"), Some("1"));
    assert_eq!(r.headers.get_str("x-response-code"), Some("201"));
    plugin.on_log(ctx).unwrap();
    plugin.on_done(ctx).unwrap();
    assert!(
        plugin
            .logs()
            .iter()
            .any(|l| l.level == Level::Info && l.message.contains("status=201"))
    );
    assert!(matches!(plugin.on_log(ctx), Err(Error::UnknownContext(_))));
    assert_eq!(plugin.metric("fixture_requests_total"), Some(1));
}

#[test]
fn direct_api_local_reply() {
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    let ctx = plugin.create_http_context().unwrap();
    let v = plugin
        .on_request_headers(ctx, &[("x-fixture-op", "local")], true)
        .unwrap();
    assert_eq!(v.action, Action::Pause);
    let reply = v.local_reply.unwrap();
    assert_eq!(reply.status, 418);
    assert_eq!(reply.body, b"teapot");
    assert_eq!(reply.headers.get_str("x-local"), Some("1"));
}

#[test]
fn direct_api_body_buffers_are_readable_and_writable() {
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    let ctx = plugin.create_http_context().unwrap();
    plugin
        .on_request_headers(
            ctx,
            &[("x-fixture-op", "body-upper"), ("content-length", "6")],
            false,
        )
        .unwrap();
    let v = plugin.on_request_body(ctx, b"abc", false).unwrap();
    assert_eq!(v.body.as_deref(), Some(b"ABC".as_slice()));
    let v = plugin.on_request_body(ctx, b"def", true).unwrap();
    assert_eq!(v.body.as_deref(), Some(b"DEF".as_slice()));
    assert_eq!(
        plugin.request_headers(ctx).unwrap().get("content-length"),
        None
    );
}

#[test]
fn direct_api_trap_reloads_the_vm() {
    let plugin = HostBuilder::new(fixture()).instantiate().unwrap();
    let ctx = plugin.create_http_context().unwrap();
    let err = plugin
        .on_request_headers(ctx, &[("x-fixture-op", "panic")], true)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Trap { .. }), "{err}");
    assert!(matches!(plugin.on_log(ctx), Err(Error::ContextLost(_))));
    let ctx = plugin.create_http_context().unwrap();
    assert!(plugin.on_request_headers(ctx, &[], true).is_ok());
}
