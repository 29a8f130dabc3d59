//! The filter inside the real Envoy binary (SPEC sections 2, 3 and 4).
//! What both proxies must do alike is in `differential` and `edge`.

mod connections;
mod signing;

use jwt_proxy_tests::raw::{bare, exchange};
use serde_json::Value;

fn status_json(envoy: &jwt_proxy_tests::Envoy) -> Value {
    let resp = exchange(envoy.addr(), &bare("GET", "/status", &[]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    serde_json::from_slice(&resp.body).unwrap()
}
