//! ECDSA keys: ES256, P-256 with SHA-256 (RFC 7518 section 3.4), through
//! RustCrypto's `p256` (RFC 6979 deterministic nonces, no randomness
//! needed). The JWS signature is the 64-byte `R || S`, never DER. Private
//! keys come as PKCS#8, public keys as SPKI; the public JWK is an `EC` key
//! on `P-256`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToSec1Point as _;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use p256::{PublicKey, SecretKey};

use super::KeyPair;

/// The JOSE `alg` of these keys.
pub const ALG: &str = "ES256";

/// A P-256 signing key.
#[derive(Clone)]
pub struct Es256 {
    key: SigningKey,
}

impl Es256 {
    /// The key of this 32-byte scalar (the PKCS#8 private key), `None` when
    /// it is not one (zero, beyond the group order, another length).
    pub fn from_scalar(scalar: &[u8]) -> Option<Es256> {
        let key = Es256 {
            key: SigningKey::from_slice(scalar).ok()?,
        };
        // The first signature builds p256's base-point table (once per VM,
        // milliseconds in V8): here, at configuration, not in a request.
        let _ = key.sign(b"");
        Some(key)
    }

    /// The signature of `input`: `R || S`, 32 bytes each (RFC 7518
    /// section 3.4).
    #[inline]
    pub fn sign(&self, input: &[u8]) -> [u8; 64] {
        let signature: Signature = self.key.sign(input);
        let mut out = [0u8; 64];
        out.copy_from_slice(&signature.to_bytes());
        out
    }
}

/// `x || y` of a public key: the uncompressed SEC1 point without its tag.
fn coordinates(key: &PublicKey) -> Vec<u8> {
    let point = key.to_sec1_point(false);
    point.as_bytes().get(1..).unwrap_or_default().to_vec()
}

/// The scalar and public key of a PKCS#8 P-256 private key (DER).
pub(super) fn from_pkcs8(der: &[u8]) -> Result<KeyPair, String> {
    let key = SecretKey::from_pkcs8_der(der)
        .map_err(|_| "is not a valid P-256 PKCS#8 private key".to_owned())?;
    Ok(KeyPair {
        private: key.to_bytes().to_vec(),
        public: coordinates(&key.public_key()),
    })
}

/// `x || y` of an SPKI P-256 public key (DER).
pub(super) fn from_spki(der: &[u8]) -> Result<Vec<u8>, String> {
    PublicKey::from_public_key_der(der)
        .map(|k| coordinates(&k))
        .map_err(|_| "is not a valid P-256 public key".to_owned())
}

/// `"kty":"EC","crv":"P-256","x":...,"y":...` (RFC 7518 section 6.2.1).
pub(super) fn jwk_members(public: &[u8], out: &mut String) {
    let (x, y) = public.split_at(public.len() / 2);
    out.push_str(r#""kty":"EC","crv":"P-256","x":""#);
    URL_SAFE_NO_PAD.encode_string(x, out);
    out.push_str(r#"","y":""#);
    URL_SAFE_NO_PAD.encode_string(y, out);
    out.push('"');
}
