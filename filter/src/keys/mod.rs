//! Signing keys, one module per algorithm family: today HMAC ([`hmac`],
//! HS512). Each family owns its key material's parsing rules and its
//! signature; [`SigningKey`] is what the signer holds. This module does not
//! touch `proxy_wasm`.

pub mod hmac;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The key that signs tokens.
#[derive(Clone)]
pub enum SigningKey {
    /// HMAC-SHA512.
    Hs512(hmac::Hs512),
}

impl SigningKey {
    /// The JOSE header's `alg` for this key.
    pub fn alg(&self) -> &'static str {
        match self {
            SigningKey::Hs512(_) => hmac::ALG,
        }
    }

    /// Completes a compact JWS: signs `jws`, the signing input
    /// (`header.claims`), and appends `.` and the signature, base64url
    /// without padding.
    #[inline]
    pub fn sign_into(&self, jws: &mut String) {
        match self {
            SigningKey::Hs512(key) => {
                let signature = key.sign(jws.as_bytes());
                jws.push('.');
                URL_SAFE_NO_PAD.encode_string(signature, jws);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn an_hs512_key_appends_its_signature_in_base64url() {
        let key = SigningKey::Hs512(hmac::Hs512::new(&[1; 64]).unwrap());
        assert_eq!(key.alg(), "HS512");
        let mut jws = String::from("a.b");
        key.sign_into(&mut jws);
        let signature = jws.strip_prefix("a.b.").unwrap();
        let raw = hmac::Hs512::new(&[1; 64]).unwrap().sign(b"a.b");
        assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap(), raw);
        assert_eq!(signature.len(), 86);
        assert!(!signature.contains(['=', '+', '/']), "{signature}");
    }
}
