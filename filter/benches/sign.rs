//! Micro-benchmark: one token signed on the host (the pure part of the
//! filter's per-request work, without the proxy-wasm hostcalls). Run with
//! `cargo bench -p jwt-filter --bench sign`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jwt_filter::config::Config;
use jwt_filter::jwt::{NONCE_LEN, Signer, utc_date};

const SECRET: &str = "a9ddbcaba8c0ac1a0a812dc0c2f08514b23f2db0a68343cb8199ebb38a6d91e4ebfb378e22ad39c2d01d0b4ec9c34aa91056862ddace3fbbd6852ee60c36acbf";

fn config(extra: &str) -> Config {
    Config::parse(
        format!(r#"{{"secret":"{SECRET}"{extra}}}"#).as_bytes(),
        |_| None,
    )
    .expect("a valid benchmark configuration")
}

fn sign(c: &mut Criterion) {
    let nonce = [0x5a_u8; NONCE_LEN];
    let iat = 1_795_435_200_u64;

    let default = Signer::new(&config("")).unwrap();
    c.bench_function("sign/default_claims", |b| {
        b.iter(|| default.sign(black_box(iat), black_box(&nonce), black_box("username")))
    });

    let all = Signer::new(&config(
        r#","ttl_seconds":300,"issuer":"gateway","audience":"api","key_id":"k1""#,
    ))
    .unwrap();
    c.bench_function("sign/all_optional_claims", |b| {
        b.iter(|| all.sign(black_box(iat), black_box(&nonce), black_box("username")))
    });

    c.bench_function("sign/utc_date", |b| b.iter(|| utc_date(black_box(iat))));

    let raw = format!(r#"{{"secret":"{SECRET}"}}"#);
    c.bench_function("configure/parse_and_key", |b| {
        b.iter(|| {
            let config = Config::parse(black_box(raw.as_bytes()), |_| None).unwrap();
            Signer::new(&config).unwrap()
        })
    });
}

criterion_group!(benches, sign);
criterion_main!(benches);
