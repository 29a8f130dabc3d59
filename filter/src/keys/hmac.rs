//! HMAC keys: HS512 (RFC 7518 section 3.2), the `secret` of SPEC sections
//! 2.1 and 2.6. The key text's decoding and length rule, and the MAC.

use hmac::digest::InvalidLength;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

use crate::config::SecretEncoding;

/// The JOSE `alg` of these keys.
pub const ALG: &str = "HS512";

/// Shortest key: HS512 needs a key of at least the hash's output, 64 bytes
/// (RFC 7518 section 3.2).
pub const MIN_KEY_LEN: usize = 64;

/// An HS512 signing key: the keyed HMAC state, computed once and cloned
/// per token.
#[derive(Clone)]
pub struct Hs512 {
    mac: Hmac<Sha512>,
}

impl Hs512 {
    /// Keys the MAC with `key`.
    ///
    /// # Errors
    /// When HMAC refuses the key (it accepts any length, so this does not
    /// happen with a key [`key_bytes`] accepted).
    pub fn new(key: &[u8]) -> Result<Hs512, InvalidLength> {
        Ok(Hs512 {
            mac: <Hmac<Sha512> as KeyInit>::new_from_slice(key)?,
        })
    }

    /// The signature of `input`: HMAC-SHA512, 64 bytes.
    #[inline]
    pub fn sign(&self, input: &[u8]) -> [u8; 64] {
        let mut mac = self.mac.clone();
        mac.update(input);
        mac.finalize().into_bytes().into()
    }
}

/// Key text to key bytes (`encoding`: the text's bytes, or hex-decoded), at
/// least [`MIN_KEY_LEN`] of them.
///
/// # Errors
/// The reason, for an error naming the field: an empty key, invalid hex, a
/// short key. Never the key itself.
pub fn key_bytes(text: String, encoding: SecretEncoding) -> Result<Vec<u8>, String> {
    if text.is_empty() {
        return Err("the key is empty".to_owned());
    }
    let key = match encoding {
        SecretEncoding::Utf8 => text.into_bytes(),
        SecretEncoding::Hex => hex::decode(text.trim())
            .map_err(|e| format!("not valid hex ({e}) with secret_encoding \"hex\""))?,
    };
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "the key is {} bytes; HS512 needs at least {MIN_KEY_LEN} (RFC 7518 section 3.2)",
            key.len()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn rfc_4231_test_case_2() {
        // RFC 4231 section 4.3: key "Jefe", "what do ya want for nothing?".
        let mac = Hs512::new(b"Jefe")
            .unwrap()
            .sign(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    #[test]
    fn a_key_signs_the_same_input_the_same_way_every_time() {
        let key = Hs512::new(&[7; 64]).unwrap();
        assert_eq!(key.sign(b"a.b"), key.sign(b"a.b"));
        assert_ne!(key.sign(b"a.b"), key.sign(b"a.c"));
    }

    #[test]
    fn key_text_rules() {
        let text = "k".repeat(MIN_KEY_LEN);
        assert_eq!(
            key_bytes(text.clone(), SecretEncoding::Utf8).unwrap(),
            text.as_bytes()
        );
        let hex_text = format!(" {} ", "ab".repeat(MIN_KEY_LEN));
        assert_eq!(
            key_bytes(hex_text, SecretEncoding::Hex).unwrap(),
            vec![0xab; MIN_KEY_LEN]
        );
        assert_eq!(
            key_bytes(String::new(), SecretEncoding::Utf8).unwrap_err(),
            "the key is empty"
        );
        let short = key_bytes("k".repeat(MIN_KEY_LEN - 1), SecretEncoding::Utf8).unwrap_err();
        assert!(
            short.starts_with("the key is 63 bytes; HS512 needs at least 64"),
            "{short}"
        );
        // Hex that decodes to too few bytes is short, not valid.
        let short = key_bytes("ab".repeat(MIN_KEY_LEN - 1), SecretEncoding::Hex).unwrap_err();
        assert!(short.starts_with("the key is 63 bytes"), "{short}");
        let secret = "zz".repeat(MIN_KEY_LEN);
        let bad = key_bytes(secret.clone(), SecretEncoding::Hex).unwrap_err();
        assert!(bad.starts_with("not valid hex ("), "{bad}");
        assert!(!bad.contains(&secret[..8]), "{bad}");
    }
}
