//! Signing keys, one module per algorithm family: HMAC ([`hmac`], HS512),
//! EdDSA ([`eddsa`], Ed25519) and ECDSA ([`ecdsa`], ES256 on P-256). Each
//! family owns its key material's parsing rules, its signature and its
//! public JWK; [`SigningKey`] is what the signer holds. This module reads
//! the PEM envelopes (PKCS#8 private keys, SPKI public keys) and names what
//! a key is before its family decodes it. It does not touch `proxy_wasm`.

pub mod ecdsa;
pub mod eddsa;
pub mod hmac;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pkcs8::der::SecretDocument;
use pkcs8::{ObjectIdentifier, PrivateKeyInfoRef, SubjectPublicKeyInfoRef};

/// A JOSE `alg` a key ring entry may carry (SPEC section 2.7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Alg {
    /// HMAC-SHA512 (RFC 7518 section 3.2): the default.
    #[default]
    Hs512,
    /// Ed25519 (RFC 8037).
    EdDsa,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 section 3.4).
    Es256,
}

impl Alg {
    /// The JOSE name: `HS512`, `EdDSA` or `ES256`.
    pub const fn name(self) -> &'static str {
        match self {
            Alg::Hs512 => hmac::ALG,
            Alg::EdDsa => eddsa::ALG,
            Alg::Es256 => ecdsa::ALG,
        }
    }

    /// The `alg` of this JOSE name (case-sensitive, as JOSE names are).
    pub fn from_name(name: &str) -> Option<Alg> {
        [Alg::Hs512, Alg::EdDsa, Alg::Es256]
            .into_iter()
            .find(|a| a.name() == name)
    }

    /// Whether keys of this `alg` have a public half (published in the JWKS).
    pub const fn is_asymmetric(self) -> bool {
        !matches!(self, Alg::Hs512)
    }
}

/// The key that signs tokens.
#[derive(Clone)]
pub enum SigningKey {
    /// HMAC-SHA512.
    Hs512(hmac::Hs512),
    /// Ed25519.
    EdDsa(eddsa::Ed25519),
    /// ECDSA P-256.
    Es256(ecdsa::Es256),
}

/// Key bytes a family refused (not a valid key of that `alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKey;

impl SigningKey {
    /// The signing key of `alg` from its bytes: the HMAC key, the Ed25519
    /// seed or the P-256 scalar (what [`read_private`] returns).
    ///
    /// # Errors
    /// [`InvalidKey`] when the bytes are not a key of that `alg` (a
    /// validated configuration's are).
    pub fn new(alg: Alg, key: &[u8]) -> Result<SigningKey, InvalidKey> {
        Ok(match alg {
            Alg::Hs512 => SigningKey::Hs512(hmac::Hs512::new(key).map_err(|_| InvalidKey)?),
            Alg::EdDsa => SigningKey::EdDsa(eddsa::Ed25519::from_seed(key).ok_or(InvalidKey)?),
            Alg::Es256 => SigningKey::Es256(ecdsa::Es256::from_scalar(key).ok_or(InvalidKey)?),
        })
    }

    /// The JOSE header's `alg` for this key.
    pub fn alg(&self) -> &'static str {
        match self {
            SigningKey::Hs512(_) => hmac::ALG,
            SigningKey::EdDsa(_) => eddsa::ALG,
            SigningKey::Es256(_) => ecdsa::ALG,
        }
    }

    /// Completes a compact JWS: signs `jws`, the signing input
    /// (`header.claims`), and appends `.` and the signature, base64url
    /// without padding.
    #[inline]
    pub fn sign_into(&self, jws: &mut String) {
        let signature = match self {
            SigningKey::Hs512(key) => key.sign(jws.as_bytes()),
            SigningKey::EdDsa(key) => key.sign(jws.as_bytes()),
            SigningKey::Es256(key) => key.sign(jws.as_bytes()),
        };
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, jws);
    }
}

/// An asymmetric key read from a PKCS#8 PEM private key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The private key's bytes: the Ed25519 seed or the P-256 scalar.
    pub private: Vec<u8>,
    /// The public key's bytes: see [`read_public`].
    pub public: Vec<u8>,
}

/// The key algorithms a PEM envelope may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ed25519,
    P256,
    /// `id-ecPublicKey` on a curve other than P-256.
    OtherCurve,
    Rsa,
    Unknown,
}

const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

impl Kind {
    fn of(oid: ObjectIdentifier, curve: Option<ObjectIdentifier>) -> Kind {
        match oid {
            ED25519 => Kind::Ed25519,
            EC_PUBLIC_KEY if curve == Some(PRIME256V1) => Kind::P256,
            EC_PUBLIC_KEY => Kind::OtherCurve,
            RSA => Kind::Rsa,
            _ => Kind::Unknown,
        }
    }

    /// Whether keys of this kind are keys of `alg`, else why not.
    fn check(self, alg: Alg) -> Result<(), String> {
        let found = match (self, alg) {
            (Kind::Ed25519, Alg::EdDsa) | (Kind::P256, Alg::Es256) => return Ok(()),
            (Kind::Ed25519, _) => "an Ed25519 key",
            (Kind::P256, _) => "a P-256 key",
            (Kind::OtherCurve, _) => "an EC key on a curve other than P-256 (prime256v1)",
            (Kind::Rsa, _) => "an RSA key",
            (Kind::Unknown, _) => "a key of an algorithm the filter does not know",
        };
        let needs = match alg {
            Alg::EdDsa => "an Ed25519 key (openssl genpkey -algorithm ed25519)",
            _ => "a P-256 key (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)",
        };
        Err(format!("is {found}; `alg` {:?} needs {needs}", alg.name()))
    }
}

/// A PEM label as an error shows it: short ones quoted, else by length.
fn label_shown(label: &str) -> String {
    if label.len() <= 24 && label.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') {
        format!("`{label}`")
    } else {
        format!("of a label of {} characters", label.len())
    }
}

/// The PEM document in `text` with its label, or why it is not one (never
/// quoting the text).
fn pem(text: &str) -> Result<(String, SecretDocument), String> {
    SecretDocument::from_pem(text.trim())
        .map(|(label, doc)| (label.to_owned(), doc))
        .map_err(|_| {
            "is not a PEM document (`-----BEGIN ...-----`, base64, `-----END ...-----`)".to_owned()
        })
}

/// A private key of `alg` from its PKCS#8 PEM text (what `openssl genpkey`
/// writes): its private and public bytes.
///
/// # Errors
/// Why the text is not such a key, for an error naming the field: never
/// the text.
pub fn read_private(alg: Alg, text: &str) -> Result<KeyPair, String> {
    let (label, doc) = pem(text)?;
    match label.as_str() {
        "PRIVATE KEY" => {}
        "PUBLIC KEY" => {
            return Err(
                "holds a public key (`BEGIN PUBLIC KEY`): a key that only verifies goes in \
                 `public_key`"
                    .to_owned(),
            );
        }
        "EC PRIVATE KEY" => {
            return Err("is a SEC1 `EC PRIVATE KEY`; convert it to PKCS#8 with \
                 `openssl pkcs8 -topk8 -nocrypt`"
                .to_owned());
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err(
                "is encrypted; write it without a passphrase (`openssl pkcs8 -topk8 -nocrypt`)"
                    .to_owned(),
            );
        }
        other => {
            return Err(format!(
                "is a PEM {}, not a `PRIVATE KEY` (PKCS#8)",
                label_shown(other)
            ));
        }
    }
    let info = PrivateKeyInfoRef::try_from(doc.as_bytes())
        .map_err(|_| "is not a PKCS#8 private key".to_owned())?;
    let (oid, curve) = info
        .algorithm
        .oids()
        .map_err(|_| "is not a PKCS#8 private key".to_owned())?;
    Kind::of(oid, curve).check(alg)?;
    match alg {
        Alg::EdDsa => eddsa::from_pkcs8(doc.as_bytes()),
        _ => ecdsa::from_pkcs8(doc.as_bytes()),
    }
}

/// A public key of `alg` from its SPKI PEM text (`openssl pkey -pubout`):
/// the Ed25519 key's 32 bytes, or the P-256 point's `x` and `y`, 32 bytes
/// each.
///
/// # Errors
/// Why the text is not such a key, for an error naming the field.
pub fn read_public(alg: Alg, text: &str) -> Result<Vec<u8>, String> {
    let (label, doc) = pem(text)?;
    match label.as_str() {
        "PUBLIC KEY" => {}
        "PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
            return Err(
                "holds a private key: `public_key` takes the public key only \
                 (`openssl pkey -pubout`); a key that signs goes in `private_key`"
                    .to_owned(),
            );
        }
        other => {
            return Err(format!(
                "is a PEM {}, not a `PUBLIC KEY` (SPKI)",
                label_shown(other)
            ));
        }
    }
    let info = SubjectPublicKeyInfoRef::try_from(doc.as_bytes())
        .map_err(|_| "is not an SPKI public key".to_owned())?;
    let (oid, curve) = info
        .algorithm
        .oids()
        .map_err(|_| "is not an SPKI public key".to_owned())?;
    Kind::of(oid, curve).check(alg)?;
    match alg {
        Alg::EdDsa => eddsa::from_spki(doc.as_bytes()),
        _ => ecdsa::from_spki(doc.as_bytes()),
    }
}

/// The public JWK of an asymmetric key (RFC 7517): its family's members,
/// then `kid`, `alg` and `use`, as compact JSON. `kid` follows the `kid`
/// rules (letters, digits, `.`, `_`, `-`: nothing to escape). `None` for
/// HMAC keys, which are never published.
pub fn jwk(alg: Alg, kid: &str, public: &[u8]) -> Option<String> {
    let mut out = String::from("{");
    match alg {
        Alg::Hs512 => return None,
        Alg::EdDsa => eddsa::jwk_members(public, &mut out),
        Alg::Es256 => ecdsa::jwk_members(public, &mut out),
    }
    out.push_str(r#","kid":""#);
    out.push_str(kid);
    out.push_str(r#"","alg":""#);
    out.push_str(alg.name());
    out.push_str(r#"","use":"sig"}"#);
    Some(out)
}

#[cfg(test)]
mod tests;
