//! The filter's per-request signing (`Signer::sign`, what `on_http_request_headers`
//! calls) timed in a loop, one algorithm at a time. Built for wasm32-wasip1
//! with the filter's release profile and run by node (V8, the engine Envoy
//! runs the module in) through `filter/sign-time/run.mjs`: `make sign-time`.
//! Natively it runs too (`cargo run --release -p sign-time`), for comparison.
//!
//! Output: one line per algorithm and round, `<alg> <nanoseconds per token>`.

use std::time::Instant;

use jwt_filter::config::Config;
use jwt_filter::jwt::{NONCE_LEN, Signer};

/// Tokens per round, per algorithm.
const TOKENS: u32 = 200;
/// Rounds per algorithm; the caller keeps the best or the range.
const ROUNDS: u32 = 5;

const ED25519: &str = include_str!("../../../tests/fixtures/keys/ed25519-a.pem");
const P256: &str = include_str!("../../../tests/fixtures/keys/p256-a.pem");
const SECRET: &str = "a9ddbcaba8c0ac1a0a812dc0c2f08514b23f2db0a68343cb8199ebb38a6d91e4";

/// The filter configuration signing with `alg`.
fn config(alg: &str) -> Result<Config, String> {
    let entry = match alg {
        "HS512" => serde_json::json!({"id": "k", "secret": SECRET}),
        "EdDSA" => serde_json::json!({"id": "k", "alg": alg, "private_key": ED25519}),
        _ => serde_json::json!({"id": "k", "alg": alg, "private_key": P256}),
    };
    let text = serde_json::json!({ "keys": [entry] }).to_string();
    Config::parse(text.as_bytes(), |_| None).map_err(|e| format!("{alg}: {e}"))
}

fn main() -> Result<(), String> {
    let mut nonce = [0x5a_u8; NONCE_LEN];
    for alg in ["HS512", "EdDSA", "ES256"] {
        let signer = Signer::new(&config(alg)?).map_err(|e| format!("{alg}: {e}"))?;
        let mut length = 0;
        for round in 0..=ROUNDS {
            let start = Instant::now();
            for i in 0..TOKENS {
                nonce[0] = i as u8;
                let signed = signer
                    .sign(1_795_435_200, &nonce, "username")
                    .map_err(|e| format!("{alg}: {e}"))?;
                length += signed.token.len();
            }
            let per_token = start.elapsed().as_nanos() / u128::from(TOKENS);
            // Round 0 warms up (V8 compiles the hot functions with TurboFan).
            if round > 0 {
                println!("{alg} {per_token}");
            }
        }
        // The tokens' total length, so the optimizer keeps every signature.
        if length == 0 {
            return Err(format!("{alg}: no tokens"));
        }
    }
    Ok(())
}
