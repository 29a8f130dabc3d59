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

mod claims;
mod keys;
mod read;
mod show;

pub use claims::RESERVED_CLAIMS;
use claims::claim_headers;
pub use keys::{Jwks, MAX_KID_LEN, RingKey};
use keys::{Keys, fingerprint, jwks_document, kid_rules, resolve};

pub use crate::keys::Alg;
/// Minimum HS512 key length in bytes (RFC 7518 section 3.2: a key of the
/// same size as the hash output or larger).
pub use crate::keys::hmac::MIN_KEY_LEN;

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
    /// A key ring (SPEC section 2.6), instead of `secret`.
    pub keys: Option<Vec<RawKey>>,
    /// The `id` of the ring's key that signs (default: the first).
    pub signing_key: Option<String>,
    /// Whether to log one line per request.
    pub log_requests: bool,
    /// Claims from request headers (SPEC section 2.7): claim name and header
    /// name, in the order written.
    pub claims_from_headers: Vec<(String, String)>,
    /// Claims of `claims_from_headers` a signed request must carry.
    pub require_claims: Vec<String>,
    /// Whether tokens carry `htm` and `htu` (SPEC section 2.7).
    pub bind_request: bool,
    /// Path answered with the JWKS when the ring holds an asymmetric key.
    pub jwks_path: String,
    /// The JWKS reply's `cache-control: public, max-age=N`.
    pub jwks_max_age_seconds: u64,
}

/// One key of a ring as written. Its `Debug` shows `secret` as `<redacted>`.
#[derive(Default)]
pub struct RawKey {
    /// The key's `kid`.
    pub id: Option<String>,
    /// HMAC key text.
    pub secret: Option<String>,
    /// Environment variable (inside the VM) holding the key text.
    pub secret_env: Option<String>,
    /// How the key text becomes key bytes (HS512 only; `utf8` when absent).
    pub encoding: Option<SecretEncoding>,
    /// The JOSE `alg` (`HS512` when absent).
    pub alg: Option<String>,
    /// PKCS#8 PEM private key (EdDSA, ES256).
    pub private_key: Option<String>,
    /// Environment variable (inside the VM) holding the PKCS#8 PEM.
    pub private_key_env: Option<String>,
    /// SPKI PEM public key: published, never signs.
    pub public_key: Option<String>,
}

impl fmt::Debug for RawKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawKey")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field(
                "secret_env",
                &self.secret_env.as_deref().map(env_name_for_logs),
            )
            .field("encoding", &self.encoding)
            .field("alg", &self.alg)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "private_key_env",
                &self.private_key_env.as_deref().map(env_name_for_logs),
            )
            .field(
                "public_key",
                &self.public_key.as_ref().map(|_| "<public key>"),
            )
            .finish()
    }
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
            .field("keys", &self.keys)
            .field("signing_key", &self.signing_key)
            .field("log_requests", &self.log_requests)
            .field("claims_from_headers", &self.claims_from_headers)
            .field("require_claims", &self.require_claims)
            .field("bind_request", &self.bind_request)
            .field("jwks_path", &self.jwks_path)
            .field("jwks_max_age_seconds", &self.jwks_max_age_seconds)
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
            keys: None,
            signing_key: None,
            log_requests: true,
            claims_from_headers: Vec::new(),
            require_claims: Vec::new(),
            bind_request: false,
            jwks_path: "/.well-known/jwks.json".to_owned(),
            jwks_max_age_seconds: 300,
        }
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
    /// The `kid` of the JOSE header: `key_id`, or the signing key's `id`
    /// with a ring.
    pub key_id: Option<String>,
    /// Every key a verifier needs: the ring's, or the one `secret` (with no
    /// `id` of its own: its `kid` is `key_id`).
    pub ring: Vec<RingKey>,
    /// Whether to log one line per request.
    pub log_requests: bool,
    /// Claims from request headers: claim name and lower-case header name,
    /// in the order written, which is their order in the token (after the
    /// claims of SPEC section 2.1).
    pub claims_from_headers: Vec<(String, String)>,
    /// Claims of `claims_from_headers` a signed request must carry, else 401.
    pub require_claims: Vec<String>,
    /// Whether tokens carry `htm` and `htu`, after the claims from headers.
    pub bind_request: bool,
    /// The signing key's `alg`; `key` holds its HMAC key, Ed25519 seed or
    /// P-256 scalar.
    pub alg: Alg,
    /// Path answered with the JWKS when `jwks` is set.
    pub jwks_path: String,
    /// The JWKS reply's `max-age`.
    pub jwks_max_age_seconds: u64,
    /// The JWKS reply, made once: set when the ring holds an asymmetric
    /// key (SPEC section 2.7).
    pub jwks: Option<Jwks>,
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
        mut raw: RawConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let ring_form = raw.keys.is_some();
        let Keys {
            key,
            source: key_source,
            kid: key_id,
            ring,
            alg,
        } = resolve(&mut raw, &env)?;
        if let Some(kid) = &key_id {
            kid_rules(if ring_form { "signing_key" } else { "key_id" }, kid)?;
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
        // Methods are case-sensitive, and a case variant of a signed method is refused (SPEC
        // 7): a lower-case entry would match no HTTP/1 request (Envoy's codec refuses them) and
        // turn every request of the upper-case method into a 400.
        if let Some(bad) = raw
            .sign_methods
            .iter()
            .find(|m| m.bytes().any(|b| b.is_ascii_lowercase()))
        {
            return Err(ConfigError::new(
                "sign_methods",
                format!(
                    "{} must be written in upper case, as clients send it ({})",
                    shown(bad),
                    shown(&bad.to_ascii_uppercase())
                ),
            ));
        }
        for (field, path) in [
            ("status_path", &raw.status_path),
            ("jwks_path", &raw.jwks_path),
        ] {
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                return Err(ConfigError::new(
                    field,
                    format!("{} must be an absolute path without query", shown(path)),
                ));
            }
        }
        if raw.jwks_path == raw.status_path {
            return Err(ConfigError::new(
                "jwks_path",
                "must differ from `status_path`",
            ));
        }
        let jwks = jwks_document(&ring).map(|body| Jwks {
            body,
            cache_control: format!("public, max-age={}", raw.jwks_max_age_seconds),
        });
        if raw.ttl_seconds == Some(0) {
            return Err(ConfigError::new("ttl_seconds", "must be at least 1"));
        }
        for (field, value) in [("issuer", &raw.issuer), ("audience", &raw.audience)] {
            if value.as_deref() == Some("") {
                return Err(ConfigError::new(field, "must not be empty when set"));
            }
        }

        let claims_from_headers = claim_headers(&raw.claims_from_headers, &header)?;
        if let Some(bad) = raw
            .require_claims
            .iter()
            .find(|r| !claims_from_headers.iter().any(|(c, _)| c == *r))
        {
            return Err(ConfigError::new(
                "require_claims",
                format!("{} is not a claim of claims_from_headers", shown(bad)),
            ));
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
            key_id,
            ring,
            log_requests: raw.log_requests,
            claims_from_headers,
            require_claims: raw.require_claims,
            bind_request: raw.bind_request,
            alg,
            jwks_path: raw.jwks_path,
            jwks_max_age_seconds: raw.jwks_max_age_seconds,
            jwks,
        })
    }

    /// Whether requests with this method get a token.
    pub fn signs(&self, method: &str) -> bool {
        self.sign_methods.iter().any(|m| m == method)
    }

    /// A short, non-reversible fingerprint of the key: the first 8 hex digits
    /// of its SHA-512. Enough to tell two deployments' keys apart in logs.
    pub fn key_fingerprint(&self) -> String {
        fingerprint(&self.key)
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
pub(crate) fn shown(value: &str) -> String {
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
mod tests;
