//! The verifier kit against the real thing: Envoy's own `jwt_authn`, set up
//! with the filter `make verifier` writes, in front of the echo upstream,
//! with jwt-proxy (Envoy and the test host) signing in front of it. Tokens
//! of every key in the ring verify, during a rotation's overlap too; a token
//! of a key that is not in the ring, or none at all on a POST, is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

// One module, so the test is named `jwt_authn::...` in the output that
// .ci/run counts.
mod jwt_authn {
    use jwt_filter::config::Config;
    use jwt_proxy_tests::proxy::{Proxy, Setup};
    use jwt_proxy_tests::raw::{bare, exchange, post};
    use jwt_proxy_tests::{Envoy, SECRET, Upstream, verifier};
    use jwt_verifier::Jwks;

    /// A second key, not related to the first.
    const OTHER: &str = "k2-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    /// A key no verifier knows.
    const STRANGER: &str = "k3-fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn ring(signing: &str) -> String {
        format!(
            r#"{{"keys":[{{"id":"k1","secret":"{SECRET}"}},{{"id":"k2","secret":"{OTHER}"}}],"signing_key":"{signing}"}}"#
        )
    }

    /// Envoy with `jwt_authn` from `make verifier`'s output for `config`, in
    /// front of `upstream`.
    fn verifying_envoy(config: &str, upstream: &Upstream) -> Envoy {
        let parsed = Config::parse(config.as_bytes(), |_| None).unwrap();
        let v = jwt_verifier::verifier(&parsed, &Jwks::Local);
        assert_eq!(v.cluster, None, "an HMAC ring fetches nothing");
        verifier::envoy(upstream.addr(), &v.filter, None).start()
    }

    /// What the verifier answered to a POST signed by `proxy`.
    fn post_through(proxy: &Proxy) -> u16 {
        exchange(proxy.addr(), &post("/orders", &[], br#"{"a":1}"#)).status
    }

    #[test]
    fn envoys_jwt_authn_accepts_every_ring_key_and_refuses_any_other() {
        let upstream = Upstream::start();
        let verifier = verifying_envoy(&ring("k1"), &upstream);
        let via = |config: String| Setup {
            config,
            ..Setup::new(verifier.addr())
        };
        // Before, during and after a rotation: k1 signing, then k2, both in the ring.
        for (config, kid) in [(ring("k1"), "k1"), (ring("k2"), "k2")] {
            for proxy in via(config).both() {
                assert_eq!(
                    post_through(&proxy),
                    200,
                    "{} signing with {kid}",
                    proxy.name()
                );
                let token = upstream.last().one("x-my-jwt").expect("forwarded");
                let header = jsonwebtoken::decode_header(&token).unwrap();
                assert_eq!(header.kid.as_deref(), Some(kid), "{}", proxy.name());
            }
        }
        let seen = upstream.seen().len();
        // A key outside the ring, under a known kid and under an unknown one.
        for stranger in [
            format!(r#"{{"keys":[{{"id":"k1","secret":"{STRANGER}"}}]}}"#),
            format!(r#"{{"keys":[{{"id":"k9","secret":"{STRANGER}"}}]}}"#),
            format!(r#"{{"secret":"{STRANGER}"}}"#),
        ] {
            for proxy in via(stranger.clone()).both() {
                assert_eq!(post_through(&proxy), 401, "{}: {stranger}", proxy.name());
            }
        }
        // A POST with no token is refused; a GET needs none.
        assert_eq!(post_through_raw(&verifier), 401);
        assert_eq!(
            exchange(verifier.addr(), &bare("GET", "/", &[])).status,
            200
        );
        assert_eq!(upstream.seen().len(), seen + 1, "only the GET got through");
    }

    fn post_through_raw(verifier: &Envoy) -> u16 {
        exchange(verifier.addr(), &post("/orders", &[], b"{}")).status
    }
}
