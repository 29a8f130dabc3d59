//! EdDSA keys: Ed25519 (RFC 8032), as JOSE uses it (RFC 8037), through
//! `ed25519-dalek`. Private keys come as PKCS#8, public keys as SPKI; the
//! public JWK is an `OKP` key on `Ed25519`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use super::KeyPair;

/// The JOSE `alg` of these keys.
pub const ALG: &str = "EdDSA";

/// An Ed25519 signing key (the expanded secret, computed once).
#[derive(Clone)]
pub struct Ed25519 {
    key: SigningKey,
}

impl Ed25519 {
    /// The key of this 32-byte seed (the PKCS#8 private key), `None` for
    /// any other length.
    pub fn from_seed(seed: &[u8]) -> Option<Ed25519> {
        let seed: [u8; 32] = seed.try_into().ok()?;
        Some(Ed25519 {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The signature of `input`: 64 bytes (deterministic, RFC 8032).
    #[inline]
    pub fn sign(&self, input: &[u8]) -> [u8; 64] {
        self.key.sign(input).to_bytes()
    }
}

/// The seed and public key of a PKCS#8 Ed25519 private key (DER).
pub(super) fn from_pkcs8(der: &[u8]) -> Result<KeyPair, String> {
    let key = SigningKey::from_pkcs8_der(der)
        .map_err(|_| "is not a valid Ed25519 PKCS#8 private key".to_owned())?;
    Ok(KeyPair {
        private: key.to_bytes().to_vec(),
        public: key.verifying_key().to_bytes().to_vec(),
    })
}

/// The 32 bytes of an SPKI Ed25519 public key (DER).
pub(super) fn from_spki(der: &[u8]) -> Result<Vec<u8>, String> {
    VerifyingKey::from_public_key_der(der)
        .map(|k| k.to_bytes().to_vec())
        .map_err(|_| "is not a valid Ed25519 public key".to_owned())
}

/// `"kty":"OKP","crv":"Ed25519","x":...` (RFC 8037 section 2).
pub(super) fn jwk_members(public: &[u8], out: &mut String) {
    out.push_str(r#""kty":"OKP","crv":"Ed25519","x":""#);
    URL_SAFE_NO_PAD.encode_string(public, out);
    out.push('"');
}
