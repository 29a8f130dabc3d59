//! The keys: the single `secret` (or `secret_env`) and the key ring of SPEC
//! section 2.6, each key validated by the same rules, and the `kid` rules.

use std::fmt;

use sha2::{Digest, Sha512};

use crate::keys::hmac;

use super::{ConfigError, KeySource, RawConfig, RawKey, SecretEncoding, env_name_for_logs, shown};

/// One verifying key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct RingKey {
    /// The key's `kid` (`None` for the single `secret`).
    pub id: Option<String>,
    /// HMAC key bytes.
    pub key: Vec<u8>,
    /// Where the key came from.
    pub source: KeySource,
}

impl fmt::Debug for RingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RingKey {{ id: {:?}, key: <redacted: {} bytes, fingerprint {}> }}",
            self.id,
            self.key.len(),
            fingerprint(&self.key)
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
    let (key, source, kid, ring) = match raw.keys.take() {
        None => {
            if raw.signing_key.is_some() {
                return Err(ConfigError::new("signing_key", "needs `keys`"));
            }
            let (key, source) = single_key(raw, env)?;
            let ring = vec![RingKey {
                id: None,
                key: key.clone(),
                source: source.clone(),
            }];
            (key, source, raw.key_id.clone(), ring)
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
            (k.key.clone(), k.source.clone(), k.id.clone(), ring)
        }
    };
    Ok(Keys {
        key,
        source,
        kid,
        ring,
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
    for (i, k) in keys.into_iter().enumerate() {
        let field = |name: &str| format!("keys[{i}].{name}");
        let id =
            k.id.ok_or_else(|| ConfigError::new(&field("id"), "missing"))?;
        kid_rules(&field("id"), &id)?;
        if ring.iter().any(|r| r.id.as_deref() == Some(id.as_str())) {
            return Err(ConfigError::new(
                &field("id"),
                format!("{} is the id of an earlier key", shown(&id)),
            ));
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
            key: key_bytes(&at, text, k.encoding)?,
            source,
        });
    }
    Ok(ring)
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
