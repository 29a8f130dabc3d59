#![allow(clippy::unwrap_used)]
use super::*;

const SECRET: &str = "a9ddbcaba8c0ac1a0a812dc0c2f08514b23f2db0a68343cb8199ebb38a6d91e4ebfb378e22ad39c2d01d0b4ec9c34aa91056862ddace3fbbd6852ee60c36acbf";

fn config(json: &str) -> Config {
    Config::parse(json.as_bytes(), |_| None).unwrap()
}

fn remote() -> Jwks {
    Jwks::Remote(Remote::new("http://127.0.0.1:8080/.well-known/jwks.json", 300).unwrap())
}

#[test]
fn every_ring_key_is_an_oct_jwk_with_its_kid() {
    let c = config(&format!(
        r#"{{"keys":[{{"id":"a","secret":"{SECRET}"}},{{"id":"b","secret":"{SECRET}","encoding":"hex"}}],"signing_key":"b"}}"#
    ));
    let v: serde_json::Value = serde_json::from_str(&hmac_jwks(&c).unwrap()).unwrap();
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (&keys[0]["kid"], &keys[1]["kid"]),
        (&json!("a"), &json!("b"))
    );
    assert!(
        keys.iter()
            .all(|k| k["kty"] == "oct" && k["alg"] == "HS512")
    );
    let b = URL_SAFE_NO_PAD
        .decode(keys[1]["k"].as_str().unwrap())
        .unwrap();
    assert_eq!(b, c.key);
}

#[test]
fn the_single_secret_has_the_key_id_as_kid_or_none() {
    let plain = hmac_jwks(&config(&format!(r#"{{"secret":"{SECRET}"}}"#))).unwrap();
    assert!(!plain.contains("kid"), "{plain}");
    let named = hmac_jwks(&config(&format!(
        r#"{{"secret":"{SECRET}","key_id":"k1"}}"#
    )))
    .unwrap();
    assert!(named.contains(r#""kid":"k1""#), "{named}");
}

#[test]
fn the_filter_requires_a_token_on_every_signed_method() {
    let c = config(&format!(
        r#"{{"secret":"{SECRET}","sign_methods":["POST","PUT"],"header":"x-token","issuer":"gw","audience":"api"}}"#
    ));
    let yaml = render(&c, "test", &remote());
    for needle in [
        "http_filters:\n- name: envoy.filters.http.jwt_authn",
        "- name: \"x-token\"",
        "forward: true",
        "issuer: \"gw\"",
        "audiences: [\"api\"]",
        "exact: \"POST\"",
        "exact: \"PUT\"",
        "requires: { provider_name: jwt_proxy }",
        "keep it as secret",
    ] {
        assert!(yaml.contains(needle), "{needle} missing:\n{yaml}");
    }
}

#[test]
fn an_hmac_ring_needs_no_jwks_fetch_whatever_the_mode() {
    let c = config(&format!(r#"{{"secret":"{SECRET}"}}"#));
    for jwks in [remote(), Jwks::Local] {
        let v = verifier(&c, &jwks);
        assert_eq!(v.cluster, None);
        assert!(!v.filter.contains("remote_jwks"), "{}", v.filter);
        assert!(v.filter.contains("local_jwks"), "{}", v.filter);
    }
}

#[test]
fn a_jwks_url_gives_the_clusters_host_port_and_tls() {
    let r = Remote::new("http://127.0.0.1:18080/.well-known/jwks.json", 2).unwrap();
    assert_eq!(
        (r.scheme.as_str(), r.host.as_str(), r.port),
        ("http", "127.0.0.1", 18080)
    );
    let c = jwks_cluster(&r);
    assert!(c.contains("type: STATIC"), "{c}");
    assert!(
        c.contains("address: \"127.0.0.1\", port_value: 18080"),
        "{c}"
    );
    assert!(!c.contains("tls"), "{c}");
    let r = Remote::new("https://proxy.example/jwks", 60).unwrap();
    assert_eq!(r.port, 443);
    let c = jwks_cluster(&r);
    assert!(c.contains("type: STRICT_DNS"), "{c}");
    assert!(c.contains("sni: \"proxy.example\""), "{c}");
    let r = Remote::new("http://[::1]/j", 1).unwrap();
    assert_eq!((r.host.as_str(), r.port), ("::1", 80));
    let s = remote_source(&Remote::new("http://h:1/j", 7).unwrap());
    for needle in [
        "uri: \"http://h:1/j\"",
        "cluster: jwt_proxy_jwks",
        "cache_duration: 7s",
        "async_fetch:",
        "fast_listener: false",
    ] {
        assert!(s.contains(needle), "{needle} missing:\n{s}");
    }
}

#[test]
fn a_bad_jwks_url_is_refused_saying_why() {
    for (url, why) in [
        ("127.0.0.1:8080/jwks", "not a URL"),
        ("//h/jwks", "http://"),
        ("ftp://h/jwks", "http://"),
        ("http://h", "path"),
        ("http://h/", "path"),
        ("http://u:p@h/jwks", "user"),
        ("http://h:99999/jwks", "port"),
        ("http://h:0/jwks", "port"),
        ("", "not a URL"),
    ] {
        let e = Remote::new(url, 300).unwrap_err();
        assert!(e.to_string().contains(why), "{url}: {e}");
        assert!(e.to_string().starts_with("JWKS_URL: "), "{e}");
    }
    let e = Remote::new("http://h/j", 0).unwrap_err();
    assert!(e.to_string().contains("at least 1 s"), "{e}");
}

#[test]
fn an_asymmetric_key_never_becomes_an_oct_jwk() {
    let ed = include_str!("../../../tests/fixtures/keys/ed25519-a.pem");
    let doc = json!({"keys": [{"id": "h", "secret": SECRET},
                              {"id": "e", "alg": "EdDSA", "private_key": ed}]});
    let c = config(&doc.to_string());
    let text = hmac_jwks(&c).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(v["keys"][0]["kid"], "h");
    // The asymmetric key goes to the upstream only as the filter publishes it.
    let public = public_jwks(&c).unwrap();
    assert_eq!(Some(&public), c.jwks.as_ref().map(|j| &j.body));
    assert!(!public.contains("\"d\""), "{public}");
}

#[test]
fn a_mixed_ring_gets_both_providers_under_requires_any() {
    let ed = include_str!("../../../tests/fixtures/keys/ed25519-a.pem");
    let doc = json!({"keys": [{"id": "h", "secret": SECRET},
                              {"id": "e", "alg": "EdDSA", "private_key": ed}],
                     "jwks_max_age_seconds": 60});
    let c = config(&doc.to_string());
    let v = verifier(&c, &Jwks::Remote(Remote::local_run(&c, 18080).unwrap()));
    for needle in [
        "      jwt_proxy:\n",
        "      jwt_proxy_hmac:\n",
        "uri: \"http://127.0.0.1:18080/.well-known/jwks.json\"",
        "cache_duration: 60s",
        "requires: { requires_any: { requirements: [{ provider_name: jwt_proxy }, { provider_name: jwt_proxy_hmac }] } }",
    ] {
        assert!(v.filter.contains(needle), "{needle} missing:\n{}", v.filter);
    }
    assert!(v.cluster.unwrap().contains("port_value: 18080"));
    // LOCAL=1: the filter's document inline, no cluster.
    let local = verifier(&c, &Jwks::Local);
    assert_eq!(local.cluster, None);
    assert_eq!(
        local.filter.matches("local_jwks").count(),
        2,
        "{}",
        local.filter
    );
    // Only asymmetric keys: one provider, nothing secret in the file.
    let only =
        config(&json!({"keys": [{"id": "e", "alg": "EdDSA", "private_key": ed}]}).to_string());
    assert_eq!(hmac_jwks(&only), None);
    let yaml = render(&only, "test", &Jwks::Local);
    assert!(!yaml.contains("keep it as secret"), "{yaml}");
    assert!(
        yaml.contains("requires: { provider_name: jwt_proxy }"),
        "{yaml}"
    );
}
