//! The keys: the single `secret` (or `secret_env`) and the key ring of SPEC
//! sections 2.6 and 2.7 (HS512, EdDSA and ES256 entries), each key validated
//! by its family's rules, the `kid` rules, and the JWKS of the ring.

use std::fmt;

use sha2::{Digest, Sha512};

use crate::keys::{self, Alg, hmac};

use super::{ConfigError, KeySource, RawConfig, RawKey, SecretEncoding, env_name_for_logs, shown};

/// One verifying key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct RingKey {
    /// The key's `kid` (`None` for the single `secret`).
    pub id: Option<String>,
    /// HMAC key bytes; for EdDSA and ES256 the private key's bytes (seed,
    /// scalar), empty for a `public_key` entry.
    pub key: Vec<u8>,
    /// Where the key came from.
    pub source: KeySource,
    /// The key's `alg`.
    pub alg: Alg,
    /// EdDSA and ES256: the public key (Ed25519: 32 bytes; P-256: `x || y`);
    /// empty for HMAC keys.
    pub public: Vec<u8>,
}

impl RingKey {
    /// Whether this key can sign: not a `public_key` entry.
    pub fn can_sign(&self) -> bool {
        !self.key.is_empty()
    }
}

impl fmt::Debug for RingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RingKey {{ id: {:?}, alg: {}, key: <redacted: {} bytes, fingerprint {}>, public: {} bytes }}",
            self.id,
            self.alg.name(),
            self.key.len(),
            fingerprint(&self.key),
            self.public.len()
        )
    }
}

/// The signing key, where it came from, the token's `kid` and every verifying
/// key: from the single form (`secret` / `secret_env`, `key_id`) or the ring
/// (`keys`, `signing_key`).
pub(super) fn resolve(
    raw: &mut RawConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Keys, ConfigError> {
    let (key, source, kid, ring, alg) = match raw.keys.take() {
        None => {
            if raw.signing_key.is_some() {
                return Err(ConfigError::new("signing_key", "needs `keys`"));
            }
            let (key, source) = single_key(raw, env)?;
            let ring = vec![RingKey {
                id: None,
                key: key.clone(),
                source: source.clone(),
                alg: Alg::Hs512,
                public: Vec::new(),
            }];
            (key, source, raw.key_id.clone(), ring, Alg::Hs512)
        }
        Some(keys) => {
            if raw.secret.is_some() {
                return Err(ConfigError::new(
                    "keys",
                    "set either `secret` or `keys`, not both",
                ));
            }
            if raw.key_id.is_some() {
                return Err(ConfigError::new(
                    "key_id",
                    "with `keys`, the `kid` is the signing key's `id`",
                ));
            }
            let ring = ring(keys, env)?;
            let signing = match &raw.signing_key {
                None => 0,
                Some(id) => ring
                    .iter()
                    .position(|k| k.id.as_deref() == Some(id.as_str()))
                    .ok_or_else(|| {
                        ConfigError::new(
                            "signing_key",
                            format!("{} is not the `id` of a key in `keys`", shown(id)),
                        )
                    })?,
            };
            let k = &ring[signing];
            if !k.can_sign() {
                let which = match &raw.signing_key {
                    Some(id) => shown(id),
                    None => format!("the first key, {},", shown(k.id.as_deref().unwrap_or(""))),
                };
                return Err(ConfigError::new(
                    "signing_key",
                    format!(
                        "{which} has only a `public_key` and cannot sign: name a key with \
                         `private_key` or `private_key_env`"
                    ),
                ));
            }
            let (key, source, kid, alg) = (k.key.clone(), k.source.clone(), k.id.clone(), k.alg);
            (key, source, kid, ring, alg)
        }
    };
    Ok(Keys {
        key,
        source,
        kid,
        ring,
        alg,
    })
}

/// What [`resolve`] found.
pub(super) struct Keys {
    /// The signing key's bytes.
    pub(super) key: Vec<u8>,
    /// Where the signing key came from.
    pub(super) source: KeySource,
    /// The tokens' `kid`, if any.
    pub(super) kid: Option<String>,
    /// Every verifying key.
    pub(super) ring: Vec<RingKey>,
    /// The signing key's `alg`.
    pub(super) alg: Alg,
}

/// The reply to `GET`/`HEAD` on `jwks_path`: the public keys' document and
/// its headers, computed once per configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwks {
    /// `{"keys":[...]}`: one public JWK per asymmetric key, in ring order.
    pub body: String,
    /// `public, max-age=N`.
    pub cache_control: String,
}

impl Jwks {
    /// The reply's headers.
    pub fn headers(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("content-type", "application/json"),
            ("cache-control", &self.cache_control),
        ]
    }
}

/// The JWKS document of the ring's asymmetric keys, in ring order
/// (`{"keys":[...]}`, compact), or `None` when it has none: HMAC keys are
/// never published.
pub(super) fn jwks_document(ring: &[RingKey]) -> Option<String> {
    let jwks: Vec<String> = ring
        .iter()
        .filter_map(|k| keys::jwk(k.alg, k.id.as_deref()?, &k.public))
        .collect();
    if jwks.is_empty() {
        return None;
    }
    Some(format!(r#"{{"keys":[{}]}}"#, jwks.join(",")))
}

/// The first 8 hex digits of a key's SHA-512.
pub(super) fn fingerprint(key: &[u8]) -> String {
    hex::encode(&Sha512::digest(key)[..4])
}

/// The single form's key: `secret_env`'s variable when set and not empty,
/// else `secret`.
fn single_key(
    raw: &RawConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(Vec<u8>, KeySource), ConfigError> {
    if raw.secret_env.is_empty() {
        return Err(ConfigError::new("secret_env", "must not be empty"));
    }
    let (text, source, field) = match env(&raw.secret_env).filter(|v| !v.is_empty()) {
        Some(value) => (value, KeySource::Env(raw.secret_env.clone()), "secret_env"),
        None => match &raw.secret {
            Some(value) => (value.clone(), KeySource::Config, "secret"),
            None => {
                return Err(ConfigError::new(
                    "secret",
                    format!(
                        "missing: set `secret` or the environment variable `{}`",
                        env_name_for_logs(&raw.secret_env)
                    ),
                ));
            }
        },
    };
    Ok((key_bytes(field, text, raw.secret_encoding)?, source))
}

/// A key ring: every key valid, ids unique.
fn ring(
    keys: Vec<RawKey>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<RingKey>, ConfigError> {
    if keys.is_empty() {
        return Err(ConfigError::new("keys", "must hold at least one key"));
    }
    let mut ring: Vec<RingKey> = Vec::with_capacity(keys.len());
    for (i, mut k) in keys.into_iter().enumerate() {
        let field = |name: &str| format!("keys[{i}].{name}");
        let id =
            k.id.take()
                .ok_or_else(|| ConfigError::new(&field("id"), "missing"))?;
        kid_rules(&field("id"), &id)?;
        if ring.iter().any(|r| r.id.as_deref() == Some(id.as_str())) {
            return Err(ConfigError::new(
                &field("id"),
                format!("{} is the id of an earlier key", shown(&id)),
            ));
        }
        let alg = match k.alg.as_deref() {
            None => Alg::Hs512,
            Some(name) => Alg::from_name(name).ok_or_else(|| {
                ConfigError::new(
                    &field("alg"),
                    format!(
                        "unknown variant {}, expected `HS512`, `EdDSA` or `ES256`",
                        shown(name)
                    ),
                )
            })?,
        };
        if alg.is_asymmetric() {
            ring.push(asymmetric(&field, id, alg, k, env)?);
            continue;
        }
        for (name, set) in [
            ("private_key", k.private_key.is_some()),
            ("private_key_env", k.private_key_env.is_some()),
            ("public_key", k.public_key.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    &field(name),
                    "only for `alg` \"EdDSA\" or \"ES256\": an HS512 key is a `secret` or \
                     `secret_env`",
                ));
            }
        }
        let (text, source, at) = match (k.secret, k.secret_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    &format!("keys[{i}]"),
                    "set either `secret` or `secret_env`, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    &field("secret"),
                    "missing: set `secret` or `secret_env`",
                ));
            }
            (Some(text), None) => (text, KeySource::Config, field("secret")),
            (None, Some(name)) => match env(&name).filter(|v| !v.is_empty()) {
                Some(text) => (text, KeySource::Env(name), field("secret_env")),
                None => {
                    return Err(ConfigError::new(
                        &field("secret_env"),
                        format!(
                            "the environment variable `{}` is not set",
                            env_name_for_logs(&name)
                        ),
                    ));
                }
            },
        };
        ring.push(RingKey {
            id: Some(id),
            key: key_bytes(&at, text, k.encoding.unwrap_or_default())?,
            source,
            alg,
            public: Vec::new(),
        });
    }
    Ok(ring)
}

/// An EdDSA or ES256 entry: `private_key`, `private_key_env` or only
/// `public_key`.
fn asymmetric(
    field: &impl Fn(&str) -> String,
    id: String,
    alg: Alg,
    k: RawKey,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<RingKey, ConfigError> {
    for (name, set) in [
        ("secret", k.secret.is_some()),
        ("secret_env", k.secret_env.is_some()),
    ] {
        if set {
            return Err(ConfigError::new(
                &field(name),
                format!(
                    "an {:?} key has no `{name}`: set `private_key`, `private_key_env` or \
                     `public_key`",
                    alg.name()
                ),
            ));
        }
    }
    if k.encoding.is_some() {
        return Err(ConfigError::new(
            &field("encoding"),
            format!(
                "only for HS512 keys (how a `secret` becomes key bytes): an {:?} key is PEM \
                 text; remove `encoding`",
                alg.name()
            ),
        ));
    }
    let private = match (k.private_key, k.private_key_env, &k.public_key) {
        (Some(_), Some(_), _) => {
            return Err(ConfigError::new(
                &field("private_key"),
                "set either `private_key` or `private_key_env`, not both",
            ));
        }
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
            return Err(ConfigError::new(
                &field("public_key"),
                "only for a key that does not sign: a private key holds its public key",
            ));
        }
        (None, None, None) => {
            return Err(ConfigError::new(
                &field("private_key"),
                "missing: set `private_key`, `private_key_env` or `public_key`",
            ));
        }
        (None, None, Some(_)) => None,
        (Some(pem), None, None) => Some((pem, KeySource::Config, field("private_key"))),
        (None, Some(name), None) => match env(&name).filter(|v| !v.is_empty()) {
            Some(pem) => Some((pem, KeySource::Env(name), field("private_key_env"))),
            None => {
                return Err(ConfigError::new(
                    &field("private_key_env"),
                    format!(
                        "the environment variable `{}` is not set",
                        env_name_for_logs(&name)
                    ),
                ));
            }
        },
    };
    let (key, public, source) = match (private, k.public_key) {
        (Some((pem, source, at)), _) => {
            let pair =
                keys::read_private(alg, &pem).map_err(|reason| ConfigError::new(&at, reason))?;
            (pair.private, pair.public, source)
        }
        (None, Some(pem)) => {
            let public = keys::read_public(alg, &pem)
                .map_err(|reason| ConfigError::new(&field("public_key"), reason))?;
            (Vec::new(), public, KeySource::Config)
        }
        (None, None) => {
            return Err(ConfigError::new(&field("private_key"), "missing"));
        }
    };
    Ok(RingKey {
        id: Some(id),
        key,
        source,
        alg,
        public,
    })
}

/// Key text to key bytes by the HMAC rules ([`hmac::key_bytes`]), an
/// error naming `field`.
fn key_bytes(field: &str, text: String, encoding: SecretEncoding) -> Result<Vec<u8>, ConfigError> {
    hmac::key_bytes(text, encoding).map_err(|reason| ConfigError::new(field, reason))
}

/// Longest `kid`: shorter than any valid key, so a key pasted as an id is
/// refused (and shown by length only) rather than logged.
pub const MAX_KID_LEN: usize = 32;

/// A `kid` (`key_id`, a ring key's `id`): 1 to [`MAX_KID_LEN`] letters,
/// digits, `.`, `_` or `-`. It appears in every token header, the status
/// page and the log lines.
pub(super) fn kid_rules(field: &str, kid: &str) -> Result<(), ConfigError> {
    let ok = !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!(
                "{} must be 1 to {MAX_KID_LEN} letters, digits, `.`, `_` or `-`",
                shown(kid)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::tests::{SECRET, no_env, parse};
    use super::super::{Config, KeySource, RawConfig};

    /// A ring of two keys, `a` (text) and `b` (hex), `b` signing.
    fn ring_json(extra: &str) -> String {
        format!(
            r#"{{"keys":[{{"id":"a","secret":"{SECRET}"}},{{"id":"b","secret":"{SECRET}","encoding":"hex"}}]{extra}}}"#
        )
    }

    #[test]
    fn a_ring_signs_with_its_signing_key_and_names_it_as_kid() {
        let c = parse(&ring_json(r#","signing_key":"b""#)).unwrap();
        assert_eq!(c.key, hex::decode(SECRET).unwrap());
        assert_eq!(c.key_id.as_deref(), Some("b"));
        let ids: Vec<_> = c.ring.iter().map(|k| k.id.clone().unwrap()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(c.ring[0].key, SECRET.as_bytes());
        // The first key signs by default.
        let first = parse(&ring_json("")).unwrap();
        assert_eq!(
            (first.key_id.as_deref(), first.key),
            (Some("a"), SECRET.as_bytes().to_vec())
        );
    }

    #[test]
    fn a_ring_key_from_the_environment() {
        let env = |name: &str| (name == "KEY_B").then(|| SECRET.to_owned());
        let json = format!(
            r#"{{"keys":[{{"id":"a","secret":"{SECRET}"}},{{"id":"b","secret_env":"KEY_B"}}]}}"#
        );
        let c = Config::parse(json.as_bytes(), env).unwrap();
        assert_eq!(c.ring[1].source, KeySource::Env("KEY_B".to_owned()));
        let e = Config::parse(json.as_bytes(), no_env).unwrap_err();
        assert_eq!(e.field, "keys[1].secret_env");
        assert!(e.reason.contains("KEY_B"), "{e}");
    }

    #[test]
    fn the_single_secret_is_a_ring_of_one_key_without_an_id() {
        let c = parse(&format!(r#"{{"secret":"{SECRET}","key_id":"k1"}}"#)).unwrap();
        assert_eq!(c.ring.len(), 1);
        assert_eq!(
            (c.ring[0].id.as_deref(), c.key_id.as_deref()),
            (None, Some("k1"))
        );
    }

    #[test]
    fn each_bad_ring_is_refused_naming_the_field() {
        let k = |id: &str| format!(r#"{{"id":"{id}","secret":"{SECRET}"}}"#);
        let cases = [
            (r#"{"keys":[]}"#.to_owned(), "keys"),
            (r#"{"keys":{}}"#.to_owned(), "keys"),
            (format!(r#"{{"keys":["{SECRET}"]}}"#), "keys[0]"),
            (
                format!(r#"{{"keys":[{{"secret":"{SECRET}"}}]}}"#),
                "keys[0].id",
            ),
            (
                format!(r#"{{"keys":[{},{}]}}"#, k("a"), k("a")),
                "keys[1].id",
            ),
            (format!(r#"{{"keys":[{}]}}"#, k("a b")), "keys[0].id"),
            (
                format!(r#"{{"keys":[{}]}}"#, k(&"k".repeat(33))),
                "keys[0].id",
            ),
            (r#"{"keys":[{"id":"a"}]}"#.to_owned(), "keys[0].secret"),
            (
                r#"{"keys":[{"id":"a","secret":"short"}]}"#.to_owned(),
                "keys[0].secret",
            ),
            (
                format!(r#"{{"keys":[{{"id":"a","secret":"{SECRET}","secret_env":"K"}}]}}"#),
                "keys[0]",
            ),
            (
                format!(r#"{{"keys":[{{"id":"a","secret":"{SECRET}","id":"b"}}]}}"#),
                "keys[0].id",
            ),
            (
                format!(r#"{{"keys":[{{"id":"a","secret":"{SECRET}","kid":"b"}}]}}"#),
                "keys[0].kid",
            ),
            (
                format!(r#"{{"keys":[{{"id":"a","secret":"zz{SECRET}","encoding":"hex"}}]}}"#),
                "keys[0].secret",
            ),
            (
                format!(r#"{{"secret":"{SECRET}","keys":[{}]}}"#, k("a")),
                "keys",
            ),
            (format!(r#"{{"key_id":"x","keys":[{}]}}"#, k("a")), "key_id"),
            (
                format!(r#"{{"keys":[{}],"signing_key":"b"}}"#, k("a")),
                "signing_key",
            ),
            (
                format!(r#"{{"secret":"{SECRET}","signing_key":"a"}}"#),
                "signing_key",
            ),
            (
                format!(r#"{{"secret":"{SECRET}","key_id":"a/b"}}"#),
                "key_id",
            ),
        ];
        for (json, field) in cases {
            let e = parse(&json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
            assert!(!e.to_string().contains(SECRET), "{e}");
        }
    }

    #[test]
    fn a_key_pasted_as_a_ring_id_is_refused_by_length_not_quoted() {
        let json = format!(r#"{{"keys":[{{"id":"{SECRET}","secret":"{SECRET}"}}]}}"#);
        let e = parse(&json).unwrap_err();
        assert_eq!(e.field, "keys[0].id");
        assert!(!e.to_string().contains(&SECRET[..24]), "{e}");
    }

    #[test]
    fn the_start_line_names_every_ring_key_but_shows_none() {
        let line = parse(&ring_json(r#","signing_key":"b""#))
            .unwrap()
            .to_string();
        assert!(
            line.starts_with("keys=[a:<128 bytes from secret, fingerprint "),
            "{line}"
        );
        assert!(
            line.contains(",b:<64 bytes from secret, fingerprint "),
            "{line}"
        );
        assert!(line.contains(r#"key_id="b""#), "{line}");
        assert!(!line.contains(&SECRET[..16]), "{line}");
        let raw = format!(
            "{:?}",
            RawConfig::from_json(ring_json("").as_bytes()).unwrap()
        );
        assert!(!raw.contains(&SECRET[..16]), "{raw}");
    }
}
