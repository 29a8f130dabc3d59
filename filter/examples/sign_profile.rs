//! A harness for profiling the filter's pure per-request work natively:
//! `sign_profile N` signs N tokens with the default configuration, as the
//! filter does for each POST. `make bench` runs it under
//! `valgrind --tool=callgrind` (the release profile's opt-level "z", as the
//! Wasm build) to split the instructions by function.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use jwt_filter::config::Config;
use jwt_filter::jwt::{NONCE_LEN, Signer};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let config = Config::parse(include_bytes!("../../envoy/filter-config.json"), |_| None)
        .expect("the default configuration parses");
    let signer = Signer::new(&config).expect("the key is accepted");
    let mut nonce = [0u8; NONCE_LEN];
    for i in 0..n {
        nonce[..8].copy_from_slice(&i.to_le_bytes());
        let signed = signer.sign(black_box(1_795_435_200 + i), &nonce, black_box("username"));
        black_box(signed.expect("a token"));
    }
}
