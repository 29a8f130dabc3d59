//! The verifier kit with the real Envoy as the upstream's verifier (SPEC
//! section 2.7): Envoy's `jwt_authn`, set up with what `make verifier`
//! writes, fetches the proxy's JWKS over loopback while the proxy (Envoy or
//! the test host, same scenario) signs in front of it.
//!
//! ```text
//! client -> proxy (filter, signs) -> verifier Envoy (jwt_authn) -> echo
//!             ^ GET /.well-known/jwks.json ---- relay ----'
//! ```
//!
//! The verifier starts first, while the proxy is down (the relay's port is
//! held, refusing): `async_fetch` lets it start and retries. Each proxy's
//! verifier and relay are its own.
//!
//! Envoy 1.40's `RemoteJwks` has no `refetch_jwks_on_kid_mismatch` (its
//! fields: `http_uri`, `cache_duration`, `async_fetch`, `retry_policy`;
//! `envoy --mode validate` refuses the name), so a token whose `kid` the
//! cached JWKS lacks is refused until the next periodic fetch: what
//! [`signing_with_an_unpublished_key_fails_until_the_verifiers_cache_refreshes`] shows.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use jwt_filter::config::Config;
use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::raw::{Conn, exchange, post};
use jwt_proxy_tests::verifier::envoy as verifier_envoy;
use jwt_proxy_tests::{Envoy, HeldPort, SECRET, Upstream, envoy_bin, root, wait_until};
use jwt_verifier::{Jwks, Remote};
use serde_json::{Value, json};

/// Test keys (never used anywhere else): two Ed25519, two P-256, PKCS#8
/// private and SPKI public PEM, as `openssl genpkey` writes them.
const ED1: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAzK9pBU3/tWx2h+IDVUQuvKz8NkhWxDwjh+gSOA5FlE\n-----END PRIVATE KEY-----\n";
const ED1_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA6+ioK8ZY/wpjFXbbqZDaTd5MeHu3tTLwS1OOFYhAb44=\n-----END PUBLIC KEY-----\n";
const EC1: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmfxJwbv2f074lCET\nlcLi37WEHpui1YvdXc1JZR+Sx0ihRANCAASNFsEWHb11pBFct5K9zkZ9EpJdixkD\nY2p0EussltIikfH1lo4WjYwnvn5rkPE4kqamuh1XwWYt62A1yT8Va8nW\n-----END PRIVATE KEY-----\n";
const EC1_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjRbBFh29daQRXLeSvc5GfRKSXYsZ\nA2NqdBLrLJbSIpHx9ZaOFo2MJ75+a5DxOJKmprodV8FmLetgNck/FWvJ1g==\n-----END PUBLIC KEY-----\n";

/// A key of the test ring.
#[derive(Clone, Copy)]
struct Key {
    id: &'static str,
    alg: Algorithm,
    private: &'static str,
    public: &'static str,
}

/// The rotation's keys: k1 (Ed25519) hands over to k2 (P-256).
const K1: Key = Key {
    id: "k1",
    alg: Algorithm::EdDSA,
    private: ED1,
    public: ED1_PUB,
};
const K2: Key = Key {
    id: "k2",
    alg: Algorithm::ES256,
    private: EC1,
    public: EC1_PUB,
};
const ALL: [Key; 2] = [K1, K2];
/// An Ed25519 key outside every ring, under k1's `kid`.
const STRANGER: Key = Key {
    id: "k1",
    alg: Algorithm::EdDSA,
    private: "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKCGpuI2Yu8HtSlXZZtkYfZPD6nr2pZSNes3HerwrdjQ\n-----END PRIVATE KEY-----\n",
    public: "",
};

impl Key {
    fn alg_name(self) -> &'static str {
        if self.alg == Algorithm::EdDSA {
            "EdDSA"
        } else {
            "ES256"
        }
    }

    /// The ring entry that signs (or may).
    fn private_entry(self) -> Value {
        json!({"id": self.id, "alg": self.alg_name(), "private_key": self.private})
    }

    /// The ring entry that is published but never signs.
    fn public_entry(self) -> Value {
        json!({"id": self.id, "alg": self.alg_name(), "public_key": self.public})
    }

    /// A token of this key the test signs itself (`jsonwebtoken`), to probe
    /// what the verifier's cached JWKS holds.
    fn probe_token(self) -> String {
        let key = if self.alg == Algorithm::EdDSA {
            EncodingKey::from_ed_pem(self.private.as_bytes())
        } else {
            EncodingKey::from_ec_pem(self.private.as_bytes())
        }
        .unwrap();
        let mut header = Header::new(self.alg);
        header.kid = Some(self.id.to_owned());
        jsonwebtoken::encode(&header, &json!({"sub": "probe"}), &key).unwrap()
    }

    fn decoding_key(self) -> DecodingKey {
        if self.alg == Algorithm::EdDSA {
            DecodingKey::from_ed_pem(self.public.as_bytes())
        } else {
            DecodingKey::from_ec_pem(self.public.as_bytes())
        }
        .unwrap()
    }
}

/// How long verifiers cache the JWKS in these tests: `jwks_max_age_seconds`
/// (what `make verifier` takes as `cache_duration`), shortened from 300.
const CACHE_SECONDS: u64 = 1;

/// A filter configuration: `entries` in ring order, `signing` signs.
fn ring(entries: &[Value], signing: &str) -> String {
    json!({
        "keys": entries,
        "signing_key": signing,
        "jwks_max_age_seconds": CACHE_SECONDS,
    })
    .to_string()
}

/// A TCP relay on a held port: refuses connections (the proxy is down)
/// until [`Relay::open`], then forwards each one to the proxy.
struct Relay {
    held: Option<HeldPort>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    fn new() -> Relay {
        let held = HeldPort::new();
        Relay {
            addr: held.addr(),
            held: Some(held),
            stop: Arc::new(AtomicBool::new(false)),
            accept: None,
        }
    }

    /// Starts listening on the held port, forwarding to `to`.
    fn open(&mut self, to: SocketAddr) {
        let listener: TcpListener = self.held.take().unwrap().listen(64);
        let stop = self.stop.clone();
        self.accept = Some(std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        }));
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            // Wakes the accept loop, which then sees `stop`.
            let _ = TcpStream::connect(self.addr);
            let _ = accept.join();
        }
    }
}

/// The verifier Envoy `make verifier` configures for `config`: the JWKS
/// fetched through `relay`, in front of `upstream`.
fn remote_verifier(config: &str, relay: &Relay, upstream: &Upstream) -> Envoy {
    let parsed = Config::parse(config.as_bytes(), |_| None).unwrap();
    let url = format!("http://{}/.well-known/jwks.json", relay.addr);
    let remote = Remote::new(&url, jwt_verifier::jwks_max_age(&parsed)).unwrap();
    let v = jwt_verifier::verifier(&parsed, &Jwks::Remote(remote));
    let cluster = v.cluster.as_deref();
    assert!(cluster.is_some(), "a remote JWKS needs its cluster");
    verifier_envoy(upstream.addr(), &v.filter, cluster).start()
}

/// The verifier's `jwt_authn` counter `name` (`jwks_fetch_success`, ...).
fn authn(verifier: &Envoy, name: &str) -> u64 {
    verifier
        .stat(&format!("http.verifier.jwt_authn.{name}"))
        .unwrap_or(0)
}

/// What the verifier answers to a POST carrying `token`.
fn verifies(verifier: &Envoy, token: &str) -> u16 {
    let header = format!("x-my-jwt: {token}");
    exchange(verifier.addr(), &post("/probe", &[&header], b"{}")).status
}

/// The `kid`s of the proxy's JWKS document.
fn published(proxy: &Proxy) -> Vec<String> {
    let resp = exchange(
        proxy.addr(),
        b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: proxy\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{}: JWKS {}", proxy.name(), resp.text());
    let doc: Value = serde_json::from_slice(&resp.body).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the verifier has fetched the JWKS twice more than `since`
/// fetches: the second of them started after whatever preceded the call,
/// so its document is the proxy's current one. This is the wait for the
/// verifier's cache to refresh (cache_duration, CACHE_SECONDS).
fn refreshed(verifier: &Envoy, since: u64) {
    wait_until(
        Duration::from_secs(20),
        "the verifier fetches the JWKS twice more (its cache refreshes)",
        || (authn(verifier, "jwks_fetch_success") >= since + 2).then_some(()),
    );
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    failed: AtomicU64,
    bad_tokens: AtomicU64,
    /// Per key of [`ALL`]: tokens that reached the upstream verified.
    by_key: [AtomicU64; 2],
}

/// Keep-alive clients POSTing through the proxy (and so the verifier) until
/// stopped; every token the upstream received is verified with its `kid`'s
/// public key by `jsonwebtoken`.
struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

const CLIENTS: usize = 4;
const MAX_REQUESTS: u64 = 100_000;
const MAX_LOAD: Duration = Duration::from_secs(120);

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let clients = (0..CLIENTS)
            .map(|_| {
                let (tally, stop) = (tally.clone(), stop.clone());
                std::thread::spawn(move || client(addr, &tally, &stop, started))
            })
            .collect();
        Load {
            tally,
            stop,
            clients,
        }
    }

    /// Waits until `key`'s tokens have reached the upstream `n` more times.
    fn sees(&self, key: Key, n: u64) {
        let i = ALL.iter().position(|k| k.id == key.id).unwrap();
        let from = self.tally.by_key[i].load(Ordering::Relaxed);
        wait_until(
            Duration::from_secs(20),
            format_args!("{n} more POSTs signed with {}", key.id),
            || (self.tally.by_key[i].load(Ordering::Relaxed) >= from + n).then_some(()),
        );
    }

    fn finish(mut self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients.drain(..) {
            c.join().unwrap();
        }
        self.tally.clone()
    }
}

fn client(addr: SocketAddr, tally: &Tally, stop: &AtomicBool, started: Instant) {
    let mut conn = Conn::connect(addr).unwrap();
    let body = post("/rotate", &[], br#"{"n":1}"#);
    while !stop.load(Ordering::Relaxed)
        && tally.requests.load(Ordering::Relaxed) < MAX_REQUESTS
        && started.elapsed() < MAX_LOAD
    {
        tally.requests.fetch_add(1, Ordering::Relaxed);
        // Paces the load (not a wait for an event).
        std::thread::sleep(Duration::from_millis(5));
        let resp = conn.send(&body).and_then(|()| conn.read_response(false));
        let Ok(resp) = resp else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            conn = Conn::connect(addr).unwrap();
            continue;
        };
        if resp.status != 200 {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let token = resp.header("x-echo-x-my-jwt").unwrap_or_default();
        let kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .unwrap_or_default();
        let Some(i) = ALL.iter().position(|k| k.id == kid) else {
            tally.bad_tokens.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut validation = Validation::new(ALL[i].alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let ok = jsonwebtoken::decode::<Value>(token, &ALL[i].decoding_key(), &validation).is_ok();
        if ok {
            tally.by_key[i].fetch_add(1, Ordering::Relaxed);
        } else {
            tally.bad_tokens.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The scenario of SPEC 2.7's rotation, for one proxy: sign with k1; publish
/// k2 too; sign with k2 once the verifier's cache holds it, k1's tokens
/// still verifying; k1 `public_key` only; then removed, and its tokens are
/// refused once the cache expires. No request fails throughout.
fn rotation(proxy_of: impl Fn(SocketAddr) -> Proxy) {
    let upstream = Upstream::start();
    let mut relay = Relay::new();
    let start = ring(&[K1.private_entry()], "k1");
    // The verifier starts while the proxy is down: the fetch is refused.
    let verifier = remote_verifier(&start, &relay, &upstream);
    wait_until(Duration::from_secs(10), "a refused JWKS fetch", || {
        (authn(&verifier, "jwks_fetch_failed") >= 1).then_some(())
    });
    assert_eq!(verifies(&verifier, &K1.probe_token()), 401, "no keys yet");

    let proxy = proxy_of(verifier.addr());
    let name = proxy.name();
    relay.open(proxy.addr());
    // The next fetch (every failed_refetch_duration, 1 s) gets k1.
    wait_until(Duration::from_secs(20), "the verifier holds k1", || {
        (verifies(&verifier, &K1.probe_token()) == 200).then_some(())
    });
    assert_eq!(published(&proxy), ["k1"], "{name}");

    let load = Load::start(proxy.addr());
    load.sees(K1, 20);
    // A token the proxy signed with k1.
    let k1_token = upstream.last().one("x-my-jwt").unwrap();
    let kid = jsonwebtoken::decode_header(&k1_token).unwrap().kid;
    assert_eq!(kid.as_deref(), Some("k1"), "{name}");

    // Publish k2, k1 still signing; sign with k2 only once the verifier's
    // cache has it.
    assert!(proxy.reconfigure(&ring(&[K1.private_entry(), K2.private_entry()], "k1")));
    assert_eq!(published(&proxy), ["k1", "k2"], "{name}");
    wait_until(
        Duration::from_secs(20),
        "the verifier's cache refreshes and holds k2",
        || (verifies(&verifier, &K2.probe_token()) == 200).then_some(()),
    );
    load.sees(K1, 20);
    assert!(proxy.reconfigure(&ring(&[K1.private_entry(), K2.private_entry()], "k2")));
    load.sees(K2, 20);
    assert_eq!(
        verifies(&verifier, &k1_token),
        200,
        "{name}: k1 in the overlap"
    );

    // k1 retired: published, never signing; its tokens still verify.
    let fetched = authn(&verifier, "jwks_fetch_success");
    assert!(proxy.reconfigure(&ring(&[K1.public_entry(), K2.private_entry()], "k2")));
    assert_eq!(published(&proxy), ["k1", "k2"], "{name}");
    refreshed(&verifier, fetched);
    assert_eq!(
        verifies(&verifier, &k1_token),
        200,
        "{name}: k1 public only"
    );
    load.sees(K2, 20);

    // k1 removed: refused once the verifier's cache expires, the wait below
    // (cache_duration, CACHE_SECONDS).
    assert!(proxy.reconfigure(&ring(&[K2.private_entry()], "k2")));
    assert_eq!(published(&proxy), ["k2"], "{name}");
    let refused = wait_until(
        Duration::from_secs(20),
        "the verifier's cache expires and drops k1",
        || {
            let status = verifies(&verifier, &k1_token);
            (status != 200).then_some(status)
        },
    );
    assert_eq!(refused, 401, "{name}");
    load.sees(K2, 20);

    let tally = load.finish();
    let requests = tally.requests.load(Ordering::Relaxed);
    let per_key: Vec<u64> = tally
        .by_key
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect();
    eprintln!(
        "verifier rotation ({name}): {requests} POSTs, k1 {} k2 {}, {} JWKS fetches",
        per_key[0],
        per_key[1],
        authn(&verifier, "jwks_fetch_success")
    );
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "{name}: failed");
    assert_eq!(
        tally.bad_tokens.load(Ordering::Relaxed),
        0,
        "{name}: tokens not verifying"
    );
    assert!(per_key.iter().all(|&n| n >= 40), "{name}: {per_key:?}");
}

fn setup(upstream: SocketAddr, config: String) -> Setup {
    Setup {
        config,
        discovery: true,
        ..Setup::new(upstream)
    }
}

#[test]
fn a_rotation_through_the_remote_jwks_fails_no_request_on_envoy() {
    rotation(|verifier| setup(verifier, ring(&[K1.private_entry()], "k1")).envoy());
}

#[test]
fn a_rotation_through_the_remote_jwks_fails_no_request_on_the_test_host() {
    rotation(|verifier| setup(verifier, ring(&[K1.private_entry()], "k1")).host());
}

#[test]
fn signing_with_an_unpublished_key_fails_until_the_verifiers_cache_refreshes() {
    // A cache long enough for the switch below to fall between two fetches
    // (Envoy takes a new filter configuration in 1 to 3 s).
    const CACHE: u64 = 6;
    let ring = |entries: &[Value], signing: &str| {
        json!({"keys": entries, "signing_key": signing, "jwks_max_age_seconds": CACHE}).to_string()
    };
    let upstream = Upstream::start();
    let mut relay = Relay::new();
    let start = ring(&[K1.private_entry()], "k1");
    let verifier = remote_verifier(&start, &relay, &upstream);
    let proxy = setup(verifier.addr(), start).envoy();
    relay.open(proxy.addr());
    wait_until(Duration::from_secs(20), "the verifier holds k1", || {
        (verifies(&verifier, &K1.probe_token()) == 200).then_some(())
    });
    let through = || exchange(proxy.addr(), &post("/orders", &[], b"{}"));
    assert_eq!(through().status, 200);

    // Right after a periodic fetch, k2 signs at once, published in the same
    // step: the verifier's cached JWKS has no k2, and Envoy 1.40 does not
    // refetch on an unknown kid.
    let before = authn(&verifier, "jwks_fetch_success");
    let fetched = wait_until(
        Duration::from_secs(2 * CACHE),
        "the verifier's next periodic JWKS fetch",
        || {
            let n = authn(&verifier, "jwks_fetch_success");
            (n > before).then_some(n)
        },
    );
    assert!(proxy.reconfigure(&ring(&[K1.private_entry(), K2.private_entry()], "k2")));
    let switched = Instant::now();
    let first = through();
    assert_eq!(
        authn(&verifier, "jwks_fetch_success"),
        fetched,
        "the switch took longer than the cache ({CACHE} s): nothing to show"
    );
    assert_eq!(first.status, 401, "{}", first.text());
    assert!(
        first.text().contains("Jwks doesn't have key to match kid"),
        "{}",
        first.text()
    );
    assert!(upstream.seen().iter().all(|seen| {
        let token = seen.one("x-my-jwt").unwrap_or_default();
        jsonwebtoken::decode_header(&token).map_or(true, |h| h.kid.as_deref() != Some("k2"))
    }));
    // The next periodic fetch (cache_duration) ends the outage: this waits
    // for the verifier's cache to expire.
    wait_until(
        Duration::from_secs(3 * CACHE),
        "k2's tokens verify once the cache refreshes",
        || (through().status == 200).then_some(()),
    );
    assert!(authn(&verifier, "jwks_fetch_success") > fetched);
    eprintln!(
        "unpublished key: refused for {:?} after the switch (cache_duration {CACHE} s)",
        switched.elapsed()
    );
}

/// `LOCAL=1`: the JWKS inline, the very document the filter serves; tokens
/// of both algorithms from both hosts verify, another key's are refused.
#[test]
fn a_local_jwks_verifies_both_algorithms_from_both_hosts() {
    let upstream = Upstream::start();
    let config = ring(&[K1.private_entry(), K2.private_entry()], "k1");
    let parsed = Config::parse(config.as_bytes(), |_| None).unwrap();
    let v = jwt_verifier::verifier(&parsed, &Jwks::Local);
    assert_eq!(v.cluster, None);
    let verifier = verifier_envoy(upstream.addr(), &v.filter, None).start();
    for signing in ["k1", "k2"] {
        let setup = setup(
            verifier.addr(),
            ring(&[K1.private_entry(), K2.private_entry()], signing),
        );
        for proxy in setup.both() {
            let resp = exchange(proxy.addr(), &post("/orders", &[], b"{}"));
            assert_eq!(
                resp.status,
                200,
                "{} {signing}: {}",
                proxy.name(),
                resp.text()
            );
            let token = upstream.last().one("x-my-jwt").unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(signing), "{}", proxy.name());
        }
    }
    // A key the ring does not hold, under a known kid: refused.
    assert_eq!(verifies(&verifier, &STRANGER.probe_token()), 401);
}

/// A mixed ring (the migration from HS512): the HMAC key stays in a local
/// `oct` provider, never published; the asymmetric ones are fetched; either
/// provider's tokens pass (`requires_any`), an unknown key's do not.
#[test]
fn a_mixed_ring_verifies_hmac_and_asymmetric_tokens() {
    let upstream = Upstream::start();
    let mut relay = Relay::new();
    let hmac = json!({"id": "k0", "secret": SECRET});
    let config = |signing| ring(&[hmac.clone(), K1.private_entry()], signing);
    let verifier = remote_verifier(&config("k0"), &relay, &upstream);
    let proxy = setup(verifier.addr(), config("k0")).envoy();
    relay.open(proxy.addr());
    assert_eq!(published(&proxy), ["k1"], "the HMAC key is never published");
    wait_until(Duration::from_secs(20), "the verifier holds k1", || {
        (verifies(&verifier, &K1.probe_token()) == 200).then_some(())
    });
    for signing in ["k0", "k1"] {
        assert!(proxy.reconfigure(&config(signing)));
        let resp = exchange(proxy.addr(), &post("/orders", &[], b"{}"));
        assert_eq!(resp.status, 200, "{signing}: {}", resp.text());
        let token = upstream.last().one("x-my-jwt").unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(signing));
    }
    assert_eq!(verifies(&verifier, &STRANGER.probe_token()), 401);
}

/// Every shape `make verifier` writes is a config Envoy accepts:
/// `envoy --mode validate` on the verifier template with it.
#[test]
fn every_generated_verifier_validates_in_envoy() {
    let hmac = json!({"id": "k0", "secret": SECRET});
    let rings = [
        ("hmac", ring(std::slice::from_ref(&hmac), "k0")),
        (
            "asymmetric",
            ring(&[K1.private_entry(), K2.public_entry()], "k1"),
        ),
        ("mixed", ring(&[hmac, K2.private_entry()], "k0")),
    ];
    let modes = [
        ("local", Jwks::Local),
        (
            "remote",
            Jwks::Remote(Remote::new("http://127.0.0.1:8080/.well-known/jwks.json", 300).unwrap()),
        ),
        (
            "remote https",
            Jwks::Remote(Remote::new("https://proxy.example/.well-known/jwks.json", 60).unwrap()),
        ),
    ];
    let dir = root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    for (ring_name, config) in &rings {
        let parsed = Config::parse(config.as_bytes(), |_| None).unwrap();
        for (mode, jwks) in &modes {
            let v = jwt_verifier::verifier(&parsed, jwks);
            let file = dir.join(format!(
                "verifier-validate-{}-{ring_name}-{}.yaml",
                std::process::id(),
                mode.replace(' ', "-")
            ));
            let builder = verifier_envoy(upstream_addr(), &v.filter, v.cluster.as_deref());
            std::fs::write(&file, builder.rendered()).unwrap();
            let out = std::process::Command::new(envoy_bin())
                .args([
                    "--mode",
                    "validate",
                    "--use-dynamic-base-id",
                    "-l",
                    "error",
                    "-c",
                ])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{ring_name} ring, {mode}: envoy refuses\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&file).unwrap()
            );
            let _ = std::fs::remove_file(&file);
        }
    }
}

fn upstream_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
