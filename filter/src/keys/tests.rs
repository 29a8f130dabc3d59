//! The key families natively: known answers, and every signature checked
//! by the `jsonwebtoken` crate (another implementation).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};

const ED_A: &str = include_str!("../../../tests/fixtures/keys/ed25519-a.pem");
const ED_A_PUB: &str = include_str!("../../../tests/fixtures/keys/ed25519-a.pub.pem");
const P256_A: &str = include_str!("../../../tests/fixtures/keys/p256-a.pem");
const P256_A_PUB: &str = include_str!("../../../tests/fixtures/keys/p256-a.pub.pem");

/// `header.claims` of a token with these claims, signed by `key`.
fn token(key: &SigningKey, kid: &str) -> String {
    let header = format!(r#"{{"alg":"{}","typ":"JWT","kid":"{kid}"}}"#, key.alg());
    let mut jws = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#)
    );
    key.sign_into(&mut jws);
    jws
}

fn verifies(token: &str, alg: Algorithm, key: &DecodingKey) -> bool {
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    decode::<serde_json::Value>(token, key, &v).is_ok()
}

#[test]
fn alg_names_are_the_jose_ones() {
    for (alg, name) in [
        (Alg::Hs512, "HS512"),
        (Alg::EdDsa, "EdDSA"),
        (Alg::Es256, "ES256"),
    ] {
        assert_eq!(alg.name(), name);
        assert_eq!(Alg::from_name(name), Some(alg));
    }
    assert_eq!(Alg::from_name("es256"), None);
    assert_eq!(Alg::from_name("RS256"), None);
    assert_eq!(Alg::default(), Alg::Hs512);
}

#[test]
fn an_hs512_key_appends_its_signature_in_base64url() {
    let key = SigningKey::new(Alg::Hs512, &[1; 64]).unwrap();
    assert_eq!(key.alg(), "HS512");
    let mut jws = String::from("a.b");
    key.sign_into(&mut jws);
    let signature = jws.strip_prefix("a.b.").unwrap();
    let raw = hmac::Hs512::new(&[1; 64]).unwrap().sign(b"a.b");
    assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap(), raw);
    assert_eq!(signature.len(), 86);
    assert!(!signature.contains(['=', '+', '/']), "{signature}");
}

#[test]
fn ed25519_rfc_8032_test_1() {
    // RFC 8032 section 7.1, TEST 1: the empty message.
    let seed =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let key = eddsa::Ed25519::from_seed(&seed).unwrap();
    assert_eq!(
        hex::encode(key.sign(b"")),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
    assert!(eddsa::Ed25519::from_seed(&seed[..31]).is_none());
}

#[test]
fn an_eddsa_token_verifies_with_jsonwebtoken() {
    let pair = read_private(Alg::EdDsa, ED_A).unwrap();
    assert_eq!(pair.public, read_public(Alg::EdDsa, ED_A_PUB).unwrap());
    assert_eq!((pair.private.len(), pair.public.len()), (32, 32));
    let key = SigningKey::new(Alg::EdDsa, &pair.private).unwrap();
    assert_eq!(key.alg(), "EdDSA");
    let jws = token(&key, "e1");
    let public = DecodingKey::from_ed_pem(ED_A_PUB.as_bytes()).unwrap();
    assert!(verifies(&jws, Algorithm::EdDSA, &public));
    // Deterministic, and bound to the input.
    assert_eq!(jws, token(&key, "e1"));
    assert!(!verifies(
        &jws.replacen(".ey", ".eX", 1),
        Algorithm::EdDSA,
        &public
    ));
}

#[test]
fn an_es256_signature_is_64_bytes_r_s_and_verifies_with_jsonwebtoken() {
    let pair = read_private(Alg::Es256, P256_A).unwrap();
    assert_eq!(pair.public, read_public(Alg::Es256, P256_A_PUB).unwrap());
    assert_eq!((pair.private.len(), pair.public.len()), (32, 64));
    let key = SigningKey::new(Alg::Es256, &pair.private).unwrap();
    assert_eq!(key.alg(), "ES256");
    let jws = token(&key, "p1");
    let signature = URL_SAFE_NO_PAD
        .decode(jws.rsplit('.').next().unwrap())
        .unwrap();
    // R || S, never DER (which starts with 0x30 and is 70 to 72 bytes).
    assert_eq!(signature.len(), 64);
    let public = DecodingKey::from_ec_pem(P256_A_PUB.as_bytes()).unwrap();
    assert!(verifies(&jws, Algorithm::ES256, &public));
    // RFC 6979: the same input, the same signature.
    assert_eq!(jws, token(&key, "p1"));
    assert!(ecdsa::Es256::from_scalar(&[0; 32]).is_none());
    assert!(ecdsa::Es256::from_scalar(&[0xff; 32]).is_none());
}

#[test]
fn public_jwks_carry_the_coordinates_kid_alg_and_use() {
    let ed = read_public(Alg::EdDsa, ED_A_PUB).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&jwk(Alg::EdDsa, "e1", &ed).unwrap()).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&ed),
            "kid": "e1", "alg": "EdDSA", "use": "sig"})
    );
    let ec = read_public(Alg::Es256, P256_A_PUB).unwrap();
    let text = jwk(Alg::Es256, "p1", &ec).unwrap();
    assert!(
        text.starts_with(r#"{"kty":"EC","crv":"P-256","x":""#),
        "{text}"
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["x"], URL_SAFE_NO_PAD.encode(&ec[..32]));
    assert_eq!(doc["y"], URL_SAFE_NO_PAD.encode(&ec[32..]));
    assert_eq!((&doc["alg"], &doc["use"]), (&"ES256".into(), &"sig".into()));
    assert_eq!(jwk(Alg::Hs512, "h", &[1; 64]), None);
}
