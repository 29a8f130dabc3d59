//! Plugin configuration: the JSON the operator writes (`RawConfig`) and the
//! validated form the filter runs with (`Config`).
//!
//! Parsing and validation happen once, in `on_configure`; requests only ever
//! see a validated `Config`. This module does not touch `proxy_wasm`, so it
//! unit-tests natively.
//!
//! `serde_json` reads the document: its members in order, repeated names
//! kept, each value a `serde_json::Value`; each field is then read by hand.
//! The behaviour is serde's `deny_unknown_fields` with named defaults
//! (unknown and repeated fields refused, every error naming its field), but
//! the messages are our own: serde's quote a wrong value whole (a key pasted
//! into the wrong field would reach the log) and print floats, whose
//! formatting is 24 KB of Wasm. Measured on the trimmed module: this reader
//! adds 31 KB to the module, serde derive 76 KB.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sha2::{Digest, Sha512};

/// Minimum HS512 key length in bytes (RFC 7518 section 3.2: a key of the
/// same size as the hash output or larger).
pub const MIN_KEY_LEN: usize = 64;

/// The plugin configuration as written, before validation. Its `Debug`
/// shows `secret` as `<redacted>`.
pub struct RawConfig {
    /// HMAC key text.
    pub secret: Option<String>,
    /// Environment variable (inside the VM) whose value, when set and not
    /// empty, overrides `secret`.
    pub secret_env: String,
    /// How the key text becomes key bytes: `"utf8"` or `"hex"`.
    pub secret_encoding: SecretEncoding,
    /// Request header that carries the token.
    pub header: String,
    /// Methods whose requests get a token.
    pub sign_methods: Vec<String>,
    /// Value of `payload.user`.
    pub user: String,
    /// Request header whose value, when present, becomes `payload.user`.
    pub user_header: Option<String>,
    /// Path answered locally with the status page.
    pub status_path: String,
    /// When set, the token carries `exp = iat + ttl_seconds`.
    pub ttl_seconds: Option<u64>,
    /// When set, the token carries `iss`.
    pub issuer: Option<String>,
    /// When set, the token carries `aud`.
    pub audience: Option<String>,
    /// When set, the JOSE header carries `kid`.
    pub key_id: Option<String>,
    /// Whether to log one line per request.
    pub log_requests: bool,
}

impl fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_env", &env_name_for_logs(&self.secret_env))
            .field("secret_encoding", &self.secret_encoding)
            .field("header", &self.header)
            .field("sign_methods", &self.sign_methods)
            .field("user", &self.user)
            .field("user_header", &self.user_header)
            .field("status_path", &self.status_path)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_id", &self.key_id)
            .field("log_requests", &self.log_requests)
            .finish()
    }
}

/// `secret_env`'s value as logs and errors show it: the name when it looks
/// like a conventional variable name (`JWT_SECRET`: capitals, digits and `_`,
/// at most 64), else `<secret_env>`, for a key pasted into the wrong field
/// must not end up in a log line.
fn env_name_for_logs(name: &str) -> &str {
    let conventional = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if conventional { name } else { "<secret_env>" }
}

/// How the configured secret text turns into HMAC key bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecretEncoding {
    /// The key is the bytes of the string as written (PyJWT, jwt.io).
    #[default]
    Utf8,
    /// The key is the hex-decoded bytes of the string.
    Hex,
}

impl Default for RawConfig {
    /// The defaults of every field (SPEC section 2.4).
    fn default() -> Self {
        RawConfig {
            secret: None,
            secret_env: "JWT_SECRET".to_owned(),
            secret_encoding: SecretEncoding::Utf8,
            header: "x-my-jwt".to_owned(),
            sign_methods: vec!["POST".to_owned()],
            user: "username".to_owned(),
            user_header: None,
            status_path: "/status".to_owned(),
            ttl_seconds: None,
            issuer: None,
            audience: None,
            key_id: None,
            log_requests: true,
        }
    }
}

/// Every field `RawConfig` knows, for the "unknown field" message.
const FIELDS: &str = "`secret`, `secret_env`, `secret_encoding`, `header`, `sign_methods`, \
    `user`, `user_header`, `status_path`, `ttl_seconds`, `issuer`, `audience`, `key_id`, \
    `log_requests`";

impl RawConfig {
    /// Reads the configuration JSON: an object whose absent fields take
    /// their defaults. Unknown and repeated fields are refused, as serde's
    /// `deny_unknown_fields` would; an empty document means all defaults.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field (or `configuration` for a syntax
    /// error) and the reason; values longer than 24 characters are shown by
    /// length only.
    pub fn from_json(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
        let mut raw = RawConfig::default();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(raw);
        }
        let members = match serde_json::from_slice(bytes) {
            Ok(Document::Object(members)) => members,
            Ok(Document::Other(kind)) => {
                return Err(ConfigError::new(
                    "configuration",
                    format!("invalid type: {kind}, expected an object"),
                ));
            }
            Err(e) => return Err(ConfigError::new("configuration", e.to_string())),
        };
        let mut seen: Vec<String> = Vec::with_capacity(members.len());
        for (name, value) in members {
            let field = field_name_for_errors(&name);
            if seen.contains(&name) {
                return Err(ConfigError::new(
                    &field,
                    format!("duplicate field `{field}`"),
                ));
            }
            let f = field.as_str();
            match name.as_str() {
                "secret" => raw.secret = optional(f, value, string)?,
                "secret_env" => raw.secret_env = string(f, value)?,
                "secret_encoding" => raw.secret_encoding = encoding(f, value)?,
                "header" => raw.header = string(f, value)?,
                "sign_methods" => raw.sign_methods = strings(f, value)?,
                "user" => raw.user = string(f, value)?,
                "user_header" => raw.user_header = optional(f, value, string)?,
                "status_path" => raw.status_path = string(f, value)?,
                "ttl_seconds" => raw.ttl_seconds = optional(f, value, whole_number)?,
                "issuer" => raw.issuer = optional(f, value, string)?,
                "audience" => raw.audience = optional(f, value, string)?,
                "key_id" => raw.key_id = optional(f, value, string)?,
                "log_requests" => raw.log_requests = boolean(f, value)?,
                _ => {
                    return Err(ConfigError::new(
                        f,
                        format!("unknown field `{field}`, expected one of {FIELDS}"),
                    ));
                }
            }
            seen.push(name);
        }
        Ok(raw)
    }
}

/// The configuration document as `serde_json` reads it: an object's members
/// in document order, duplicates kept (a `serde_json::Value` object keeps
/// only the last of a repeated name, so a repeated field could not be
/// refused), or the kind of any other value.
enum Document {
    Object(Vec<(String, Value)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

/// Takes every kind of value: serde's default for a kind a visitor does not
/// take is an "invalid type" error, and formatting one links float
/// formatting (24 KB of Wasm).
struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry()? {
            members.push(member);
        }
        Ok(Document::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Document::Other("an array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Document, E> {
        Ok(Document::Other("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Document, E> {
        Ok(Document::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Other("null"))
    }
}

/// What kind of value this is, for "invalid type" messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field name as errors show it: long names (a key pasted as a name)
/// by length only, the empty name described.
fn field_name_for_errors(name: &str) -> String {
    let chars = name.chars().count();
    if name.is_empty() {
        "(empty field name)".to_owned()
    } else if chars > MAX_QUOTED {
        format!("<unknown field of {chars} characters>")
    } else {
        name.to_owned()
    }
}

/// "invalid type" for a value of the wrong kind; a string or a whole number
/// is quoted (or its length shown, see [`shown`]). Other numbers are not:
/// only their float value is known, and float formatting is 24 KB of Wasm.
fn invalid_type(field: &str, value: &Value, expected: &str) -> ConfigError {
    let found = match value {
        Value::String(s) => format!("string {}", shown(s)),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(n), _) => format!("number {}", shown(&n.to_string())),
            (_, Some(n)) => format!("number {}", shown(&n.to_string())),
            _ => "a number".to_owned(),
        },
        Value::Bool(b) => format!("boolean `{b}`"),
        other => kind(other).to_owned(),
    };
    ConfigError::new(field, format!("invalid type: {found}, expected {expected}"))
}

fn string(field: &str, value: Value) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(invalid_type(field, &other, "a string")),
    }
}

fn boolean(field: &str, value: Value) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(b) => Ok(b),
        other => Err(invalid_type(field, &other, "a boolean")),
    }
}

fn strings(field: &str, value: Value) -> Result<Vec<String>, ConfigError> {
    match value {
        Value::Array(items) => items.into_iter().map(|v| string(field, v)).collect(),
        other => Err(invalid_type(field, &other, "an array of strings")),
    }
}

/// `serde_json` reads a number with a fraction or an exponent, or beyond
/// the 64-bit integers, as a float; such a number is described, not shown.
fn whole_number(field: &str, value: Value) -> Result<u64, ConfigError> {
    let Value::Number(n) = &value else {
        return Err(invalid_type(field, &value, "a whole number"));
    };
    if let Some(n) = n.as_u64() {
        return Ok(n);
    }
    let found = match (n.as_i64(), n.as_f64()) {
        (Some(negative), _) => shown(&negative.to_string()),
        (_, Some(f)) if f >= 18_446_744_073_709_551_616.0 => {
            format!("a number larger than {}", u64::MAX)
        }
        (_, Some(f)) if f.is_sign_negative() => "a negative number".to_owned(),
        _ => "a number with a fraction or an exponent".to_owned(),
    };
    Err(ConfigError::new(
        field,
        format!("invalid value: {found}, expected a whole number"),
    ))
}

fn encoding(field: &str, value: Value) -> Result<SecretEncoding, ConfigError> {
    match string(field, value)?.as_str() {
        "utf8" => Ok(SecretEncoding::Utf8),
        "hex" => Ok(SecretEncoding::Hex),
        other => Err(ConfigError::new(
            field,
            format!("unknown variant {}, expected `utf8` or `hex`", shown(other)),
        )),
    }
}

/// `null` or absent is `None`; anything else must be what `read` reads.
fn optional<T>(
    field: &str,
    value: Value,
    read: fn(&str, Value) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    match value {
        Value::Null => Ok(None),
        other => read(field, other).map(Some),
    }
}

/// Longest accepted value of the `user_header` request header, in bytes.
pub const MAX_USER_LEN: usize = 256;

/// The validated configuration a filter runs with.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// HMAC key bytes (never printed).
    pub key: Vec<u8>,
    /// Where the key came from, for the start-up log line.
    pub key_source: KeySource,
    /// Lower-case name of the token header.
    pub header: String,
    /// Methods that get a token, as written (methods are case-sensitive).
    pub sign_methods: Vec<String>,
    /// Default `payload.user`.
    pub user: String,
    /// Lower-case name of the header that overrides `payload.user`.
    pub user_header: Option<String>,
    /// Path answered locally.
    pub status_path: String,
    /// Adds `exp` when set.
    pub ttl_seconds: Option<u64>,
    /// Adds `iss` when set.
    pub issuer: Option<String>,
    /// Adds `aud` when set.
    pub audience: Option<String>,
    /// Adds `kid` to the JOSE header when set.
    pub key_id: Option<String>,
    /// Whether to log one line per request.
    pub log_requests: bool,
}

/// Where the signing key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The `secret` field of the plugin configuration.
    Config,
    /// The named environment variable.
    Env(String),
}

/// A configuration error: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration field at fault (or `configuration` for the document).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration: field `{}`: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates the plugin configuration. `env` looks up an
    /// environment variable inside the VM (the host passes it in so tests can
    /// pin it). An empty configuration means all defaults.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field when the JSON is malformed, has an
    /// unknown field or a wrong type, or a value is invalid.
    pub fn parse(
        bytes: &[u8],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = RawConfig::from_json(bytes)?;
        Config::from_raw(raw, env)
    }

    /// Validates a parsed configuration; see [`Config::parse`].
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field.
    pub fn from_raw(
        raw: RawConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        if raw.secret_env.is_empty() {
            return Err(ConfigError::new("secret_env", "must not be empty"));
        }
        let (text, key_source, field) = match env(&raw.secret_env).filter(|v| !v.is_empty()) {
            Some(value) => (value, KeySource::Env(raw.secret_env.clone()), "secret_env"),
            None => match raw.secret {
                Some(value) => (value, KeySource::Config, "secret"),
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
        if text.is_empty() {
            return Err(ConfigError::new(field, "the key is empty"));
        }
        let key = match raw.secret_encoding {
            SecretEncoding::Utf8 => text.into_bytes(),
            SecretEncoding::Hex => hex::decode(text.trim()).map_err(|e| {
                ConfigError::new(
                    field,
                    format!("not valid hex ({e}) with secret_encoding \"hex\""),
                )
            })?,
        };
        if key.len() < MIN_KEY_LEN {
            return Err(ConfigError::new(
                field,
                format!(
                    "the key is {} bytes; HS512 needs at least {MIN_KEY_LEN} (RFC 7518 section 3.2)",
                    key.len()
                ),
            ));
        }

        let header = header_name("header", &raw.header)?;
        let user_header = raw
            .user_header
            .as_deref()
            .map(|h| header_name("user_header", h))
            .transpose()?;
        if raw.sign_methods.is_empty() {
            return Err(ConfigError::new(
                "sign_methods",
                "must name at least one method",
            ));
        }
        if let Some(bad) = raw.sign_methods.iter().find(|m| !is_token(m)) {
            return Err(ConfigError::new(
                "sign_methods",
                format!("{} is not an HTTP method", shown(bad)),
            ));
        }
        if !raw.status_path.starts_with('/') || raw.status_path.contains(['?', '#', ' ']) {
            return Err(ConfigError::new(
                "status_path",
                format!(
                    "{} must be an absolute path without query",
                    shown(&raw.status_path)
                ),
            ));
        }
        if raw.ttl_seconds == Some(0) {
            return Err(ConfigError::new("ttl_seconds", "must be at least 1"));
        }
        for (field, value) in [
            ("issuer", &raw.issuer),
            ("audience", &raw.audience),
            ("key_id", &raw.key_id),
        ] {
            if value.as_deref() == Some("") {
                return Err(ConfigError::new(field, "must not be empty when set"));
            }
        }

        Ok(Config {
            key,
            key_source,
            header,
            sign_methods: raw.sign_methods,
            user: raw.user,
            user_header,
            status_path: raw.status_path,
            ttl_seconds: raw.ttl_seconds,
            issuer: raw.issuer,
            audience: raw.audience,
            key_id: raw.key_id,
            log_requests: raw.log_requests,
        })
    }

    /// Whether requests with this method get a token.
    pub fn signs(&self, method: &str) -> bool {
        self.sign_methods.iter().any(|m| m == method)
    }

    /// A short, non-reversible fingerprint of the key: the first 8 hex digits
    /// of its SHA-512. Enough to tell two deployments' keys apart in logs.
    pub fn key_fingerprint(&self) -> String {
        let digest = Sha512::digest(&self.key);
        hex::encode(&digest[..4])
    }
}

/// The configuration as logged at start, one line of `field=value`: every
/// field but the key, which shows only as its length, source and
/// fingerprint. Strings are JSON-quoted (control characters escaped).
/// Written without `Debug` formatting, whose Unicode tables would add
/// kilobytes to the module for this one line.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.key_source {
            KeySource::Config => "secret".to_owned(),
            KeySource::Env(name) => format!("env {}", env_name_for_logs(name)),
        };
        let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "none".to_owned(), quoted);
        let methods: Vec<String> = self.sign_methods.iter().map(|m| quoted(m)).collect();
        write!(
            f,
            "key=<redacted: {} bytes from {source}, fingerprint {}> header={} sign_methods=[{}] \
             user={} user_header={} status_path={} ttl_seconds={} issuer={} audience={} \
             key_id={} log_requests={}",
            self.key.len(),
            self.key_fingerprint(),
            quoted(&self.header),
            methods.join(","),
            quoted(&self.user),
            opt(&self.user_header),
            quoted(&self.status_path),
            self.ttl_seconds
                .map_or_else(|| "none".to_owned(), |t| t.to_string()),
            opt(&self.issuer),
            opt(&self.audience),
            opt(&self.key_id),
            self.log_requests,
        )
    }
}

/// `Debug` is the start-up line too: the key never shows.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Config {{ {self} }}")
    }
}

/// `s` as a JSON string.
fn quoted(s: &str) -> String {
    // Serializing a `str` cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// Longest value an error message repeats: a key pasted into the wrong field
/// must not reach the log through it.
const MAX_QUOTED: usize = 24;

/// A value as an error message shows it: quoted, or only its length when it
/// is longer than [`MAX_QUOTED`] characters (it may be a misplaced key).
fn shown(value: &str) -> String {
    let chars = value.chars().count();
    if chars > MAX_QUOTED {
        format!("<{chars} characters>")
    } else {
        quoted(value)
    }
}

/// RFC 7230 `token`: what header names and methods are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A configured header name, lowercased. A name with `_` is refused (SPEC
/// section 7): servers that map headers to CGI-style variables (gunicorn
/// before 22, uwsgi, PHP-FPM) read `x_my_jwt` as `x-my-jwt`, and both hosts
/// drop request headers whose names contain `_`.
fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    if !is_token(name) {
        return Err(ConfigError::new(
            field,
            format!("{} is not a valid header name", shown(name)),
        ));
    }
    if name.contains('_') {
        return Err(ConfigError::new(
            field,
            format!(
                "{} contains `_`, which servers that map headers to CGI variables read as `-`",
                shown(name)
            ),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const SECRET: &str = "a9ddbcaba8c0ac1a0a812dc0c2f08514b23f2db0a68343cb8199ebb38a6d91e4ebfb378e22ad39c2d01d0b4ec9c34aa91056862ddace3fbbd6852ee60c36acbf";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::parse(json.as_bytes(), no_env)
    }

    fn err_field(json: &str) -> String {
        parse(json).unwrap_err().field
    }

    #[test]
    fn defaults() {
        let c = parse(&format!(r#"{{"secret":"{SECRET}"}}"#)).unwrap();
        assert_eq!(c.key, SECRET.as_bytes());
        assert_eq!(c.header, "x-my-jwt");
        assert_eq!(c.sign_methods, ["POST"]);
        assert_eq!(c.user, "username");
        assert_eq!(c.user_header, None);
        assert_eq!(c.status_path, "/status");
        assert!(c.log_requests);
        assert!(
            c.ttl_seconds.is_none()
                && c.issuer.is_none()
                && c.audience.is_none()
                && c.key_id.is_none()
        );
    }

    #[test]
    fn hex_secret_decodes() {
        let c = parse(&format!(
            r#"{{"secret":"{SECRET}","secret_encoding":"hex"}}"#
        ))
        .unwrap();
        assert_eq!(c.key.len(), 64);
        assert_eq!(c.key[0], 0xa9);
    }

    #[test]
    fn env_wins_over_config() {
        let env_key = "e".repeat(64);
        let c = Config::parse(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes(), |name| {
            (name == "JWT_SECRET").then(|| env_key.clone())
        })
        .unwrap();
        assert_eq!(c.key, env_key.as_bytes());
        assert_eq!(c.key_source, KeySource::Env("JWT_SECRET".into()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let s = format!(r#""secret":"{SECRET}""#);
        assert_eq!(err_field("{}"), "secret");
        assert_eq!(err_field(r#"{"secret":""}"#), "secret");
        assert_eq!(err_field(r#"{"secret":"short"}"#), "secret");
        assert_eq!(
            err_field(&format!(
                r#"{{"secret":"{}","secret_encoding":"hex"}}"#,
                "zz".repeat(64)
            )),
            "secret"
        );
        assert_eq!(
            err_field(&format!(
                r#"{{"secret":"{}","secret_encoding":"hex"}}"#,
                "ab".repeat(63)
            )),
            "secret"
        );
        assert_eq!(err_field(&format!(r#"{{{s},"bogus":1}}"#)), "bogus");
        assert_eq!(
            err_field(&format!(r#"{{{s},"header":"bad header"}}"#)),
            "header"
        );
        assert_eq!(err_field(&format!(r#"{{{s},"header":""}}"#)), "header");
        assert_eq!(
            err_field(&format!(r#"{{{s},"user_header":"a:b"}}"#)),
            "user_header"
        );
        assert_eq!(
            err_field(&format!(r#"{{{s},"sign_methods":[]}}"#)),
            "sign_methods"
        );
        assert_eq!(
            err_field(&format!(r#"{{{s},"sign_methods":["PO ST"]}}"#)),
            "sign_methods"
        );
        assert_eq!(
            err_field(&format!(r#"{{{s},"status_path":"status"}}"#)),
            "status_path"
        );
        assert_eq!(
            err_field(&format!(r#"{{{s},"ttl_seconds":0}}"#)),
            "ttl_seconds"
        );
        assert_eq!(err_field(&format!(r#"{{{s},"issuer":""}}"#)), "issuer");
        assert_eq!(
            err_field(&format!(r#"{{{s},"secret_env":""}}"#)),
            "secret_env"
        );
        assert_eq!(
            err_field(&format!(r#"{{{s},"secret_encoding":"base64"}}"#)),
            "secret_encoding"
        );
        assert_eq!(
            err_field(&format!(r#"{{{s},"sign_methods":"POST"}}"#)),
            "sign_methods"
        );
        assert_eq!(err_field(&format!(r#"{{{s},"user":7}}"#)), "user");
        assert_eq!(err_field("not json"), "configuration");
    }

    #[test]
    fn wrong_types_are_refused() {
        let err = parse(&format!(r#"{{"secret":"{SECRET}","log_requests":"yes"}}"#)).unwrap_err();
        assert_eq!(err.field, "log_requests");
        assert!(err.reason.contains("invalid type"), "{err}");
        let err = parse(&format!(r#"{{"secret":"{SECRET}","ttl_seconds":-1}}"#)).unwrap_err();
        assert_eq!(err.field, "ttl_seconds");
        assert!(err.reason.contains("invalid value"), "{err}");
        assert_eq!(err.to_string().lines().count(), 1);
    }

    #[test]
    fn empty_env_secret_counts_as_unset() {
        let c = Config::parse(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes(), |_| {
            Some(String::new())
        })
        .unwrap();
        assert_eq!(c.key_source, KeySource::Config);
        let err = Config::parse(b"{}", |_| Some(String::new())).unwrap_err();
        assert_eq!(err.field, "secret");
    }

    #[test]
    fn short_env_secret_is_named_as_secret_env() {
        let err = Config::parse(format!(r#"{{"secret":"{SECRET}"}}"#).as_bytes(), |_| {
            Some("short".into())
        })
        .unwrap_err();
        assert_eq!(err.field, "secret_env");
    }

    #[test]
    fn long_values_are_elided_from_errors() {
        let err = parse(&format!(r#"{{"secret_encoding":"{SECRET}"}}"#)).unwrap_err();
        assert_eq!(err.field, "secret_encoding");
        assert!(!err.reason.contains(&SECRET[..16]), "{err}");
        assert_eq!(
            err.reason,
            "unknown variant <128 characters>, expected `utf8` or `hex`"
        );
        let err = parse(r#"{"secret_encoding":"base64"}"#).unwrap_err();
        assert_eq!(
            err.reason,
            r#"unknown variant "base64", expected `utf8` or `hex`"#
        );
    }

    #[test]
    fn messages_say_what_was_found_and_expected() {
        let s = format!(r#""secret":"{SECRET}""#);
        let reason = |json: String| parse(&json).unwrap_err().reason;
        assert_eq!(
            reason(format!(r#"{{{s},"log_requests":"yes"}}"#)),
            r#"invalid type: string "yes", expected a boolean"#
        );
        assert_eq!(
            reason(format!(r#"{{{s},"user":[1]}}"#)),
            "invalid type: an array, expected a string"
        );
        assert_eq!(
            reason(format!(r#"{{{s},"ttl_seconds":-1}}"#)),
            r#"invalid value: "-1", expected a whole number"#
        );
        assert_eq!(
            reason(format!(r#"{{{s},"user":7}}"#)),
            r#"invalid type: number "7", expected a string"#
        );
        assert_eq!(
            reason(format!(r#"{{{s},"user":-7}}"#)),
            r#"invalid type: number "-7", expected a string"#
        );
        assert_eq!(
            reason("[]".to_owned()),
            "invalid type: an array, expected an object"
        );
        for (doc, found) in [
            ("true", "a boolean"),
            ("null", "null"),
            ("1.5", "a number"),
            (r#""{}""#, "a string"),
        ] {
            assert_eq!(
                reason(doc.to_owned()),
                format!("invalid type: {found}, expected an object")
            );
        }
        assert_eq!(
            reason(format!(r#"{{{s},"sign_methods":["POST",false]}}"#)),
            "invalid type: boolean `false`, expected a string"
        );
        assert!(
            reason(format!(r#"{{{s},"x":1}}"#))
                .starts_with("unknown field `x`, expected one of `secret`, ")
        );
        assert_eq!(
            reason(format!(r#"{{{s},"user":"a","user":"b"}}"#)),
            "duplicate field `user`"
        );
        assert_eq!(
            reason("{\"secret\": }".to_owned()),
            "expected value at line 1 column 12"
        );
    }

    #[test]
    fn null_means_unset_for_optional_fields_only() {
        let c = parse(&format!(
            r#"{{"secret":"{SECRET}","ttl_seconds":null,"issuer":null,"user_header":null}}"#
        ))
        .unwrap();
        assert!(c.ttl_seconds.is_none() && c.issuer.is_none() && c.user_header.is_none());
        assert_eq!(
            err_field(&format!(r#"{{"secret":"{SECRET}","user":null}}"#)),
            "user"
        );
        assert_eq!(parse("  \n").unwrap_err().field, "secret");
    }

    #[test]
    fn debug_redacts_the_key() {
        let c = parse(&format!(r#"{{"secret":"{SECRET}"}}"#)).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains(SECRET));
        assert!(!shown.contains(&SECRET[..16]));
        assert!(
            shown.contains("<redacted: 128 bytes from secret, fingerprint "),
            "{shown}"
        );
    }

    #[test]
    fn the_start_line_shows_every_field_but_the_key() {
        let c = parse(&format!(
            r#"{{"secret":"{SECRET}","user":"a\nb","issuer":"me","ttl_seconds":60}}"#
        ))
        .unwrap();
        let line = c.to_string();
        let fingerprint = c.key_fingerprint();
        assert_eq!(
            line,
            format!(
                "key=<redacted: 128 bytes from secret, fingerprint {fingerprint}> \
                 header=\"x-my-jwt\" sign_methods=[\"POST\"] user=\"a\\nb\" user_header=none \
                 status_path=\"/status\" ttl_seconds=60 issuer=\"me\" audience=none \
                 key_id=none log_requests=true"
            )
        );
        assert!(!line.contains(SECRET) && !line.contains('\n'));
    }

    /// `serde_json` reads these as floats, which are never printed (float
    /// formatting is 24 KB of Wasm): they are described instead.
    #[test]
    fn numbers_that_are_not_whole_are_described_not_shown() {
        let s = format!(r#""secret":"{SECRET}""#);
        let reason = |json: String| parse(&json).unwrap_err().reason;
        for (ttl, found) in [
            ("1.5", "a number with a fraction or an exponent"),
            ("1e3", "a number with a fraction or an exponent"),
            ("1.0", "a number with a fraction or an exponent"),
            ("-0", "a negative number"),
            ("-1.5", "a negative number"),
            ("-99999999999999999999", "a negative number"),
            (
                "99999999999999999999",
                "a number larger than 18446744073709551615",
            ),
            ("1e300", "a number larger than 18446744073709551615"),
        ] {
            assert_eq!(
                reason(format!(r#"{{{s},"ttl_seconds":{ttl}}}"#)),
                format!("invalid value: {found}, expected a whole number"),
                "{ttl}"
            );
        }
        assert_eq!(
            parse(&format!(r#"{{{s},"ttl_seconds":18446744073709551615}}"#))
                .unwrap()
                .ttl_seconds,
            Some(u64::MAX)
        );
        assert_eq!(
            reason(format!(r#"{{{s},"user":1.5}}"#)),
            "invalid type: a number, expected a string"
        );
    }

    #[test]
    fn nested_values_are_named_by_kind() {
        let s = format!(r#""secret":"{SECRET}""#);
        let reason = |json: String| parse(&json).unwrap_err().reason;
        assert_eq!(
            reason(format!(r#"{{{s},"user":{{"a":[1,{{}}]}}}}"#)),
            "invalid type: an object, expected a string"
        );
        assert_eq!(
            reason(format!(r#"{{{s},"sign_methods":["POST",["GET"]]}}"#)),
            "invalid type: an array, expected a string"
        );
        assert_eq!(
            reason(format!(r#"{{{s},"sign_methods":null}}"#)),
            "invalid type: null, expected an array of strings"
        );
        // Deeper than serde_json's recursion limit: refused, not overflowed.
        let deep = format!(r#"{{"user":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(err_field(&deep), "configuration");
        assert_eq!(err_field(&"[".repeat(1_000_000)), "configuration");
    }

    #[test]
    fn a_repeated_field_is_refused_even_with_the_same_value() {
        let doc = format!(r#"{{"secret":"{SECRET}","secret":"{SECRET}"}}"#);
        let err = parse(&doc).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            ("secret", "duplicate field `secret`")
        );
        // Only the document's own members: a nested repeat is a value.
        let err = parse(&format!(
            r#"{{"secret":"{SECRET}","user":{{"a":1,"a":2}}}}"#
        ));
        assert_eq!(err.unwrap_err().field, "user");
    }

    #[test]
    fn syntax_errors_say_where_and_never_quote() {
        for (doc, reason) in [
            ("{\"secret\": }", "expected value at line 1 column 12"),
            (
                "{\n  \"user\": [1 2]\n}",
                "expected `,` or `]` at line 2 column 14",
            ),
            ("{} x", "trailing characters at line 1 column 4"),
            (
                "{\"user\":\"a",
                "EOF while parsing a string at line 1 column 10",
            ),
            ("{\"user\":\"\\x\"}", "invalid escape at line 1 column 11"),
        ] {
            let err = parse(doc).unwrap_err();
            assert_eq!(
                (err.field.as_str(), err.reason.as_str()),
                ("configuration", reason)
            );
        }
        let err = Config::parse(b"{\"user\":\"\xff\"}", no_env).unwrap_err();
        assert_eq!(err.field, "configuration");
        // A key written where JSON expects a value: only its position shows.
        let err = parse(&format!(r#"{{"secret":{SECRET}}}"#)).unwrap_err();
        assert_eq!(err.field, "configuration");
        assert!(!err.reason.contains(&SECRET[..8]), "{err}");
    }

    /// SPEC section 7: servers that map headers to CGI-style variables
    /// (gunicorn before 22, uwsgi, PHP-FPM) read `x_my_jwt` as `x-my-jwt`.
    #[test]
    fn header_names_with_underscores_are_refused() {
        for field in ["header", "user_header"] {
            for name in ["x_my_jwt", "X_User", "_", "x-my_jwt"] {
                let err =
                    parse(&format!(r#"{{"secret":"{SECRET}","{field}":"{name}"}}"#)).unwrap_err();
                assert_eq!(err.field, field, "{name}");
                assert!(err.reason.contains("contains `_`"), "{err}");
                assert_eq!(err.to_string().lines().count(), 1);
            }
        }
        let err = parse(&format!(
            r#"{{"secret":"{SECRET}","header":"x_{}"}}"#,
            "a".repeat(40)
        ))
        .unwrap_err();
        assert!(
            err.reason.starts_with("<42 characters> contains `_`"),
            "{err}"
        );
        // The defaults and dashed names are fine.
        let c = parse(&format!(
            r#"{{"secret":"{SECRET}","header":"X-My-Jwt","user_header":"x-user"}}"#
        ))
        .unwrap();
        assert_eq!(
            (c.header.as_str(), c.user_header.as_deref()),
            ("x-my-jwt", Some("x-user"))
        );
    }

    #[test]
    fn header_names_are_lowercased() {
        let c = parse(&format!(
            r#"{{"secret":"{SECRET}","header":"X-Token","user_header":"X-User"}}"#
        ))
        .unwrap();
        assert_eq!(c.header, "x-token");
        assert_eq!(c.user_header.as_deref(), Some("x-user"));
    }
}
