//! HS512 JSON Web Tokens: the claims and the compact JWS the filter sends.
//!
//! Pure functions of the configuration, the time and a nonce: the host's
//! clock and random source are read by the caller and passed in, so tests pin
//! them and compare exact tokens. This module does not touch `proxy_wasm`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha512;

use crate::config::Config;

/// Bytes of randomness in a `jti` (128 bits, rendered as 32 lowercase hex digits).
pub const NONCE_LEN: usize = 16;

/// A token and the `jti` it carries (the `jti` is what gets logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    /// The compact JWS: `header.claims.signature`.
    pub token: String,
    /// The token's `jti` claim.
    pub jti: String,
}

/// Tokens are bearer credentials: never print one whole.
impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("token", &"<redacted>")
            .field("jti", &self.jti)
            .finish()
    }
}

/// Why a token could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// The clock is outside the range a calendar date can be computed for.
    TimeOutOfRange(u64),
    /// The MAC refused the key.
    InvalidKey,
    /// The claims could not be serialized.
    Claims,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::TimeOutOfRange(t) => write!(f, "time {t} is out of range for a date"),
            SignError::InvalidKey => f.write_str("the key was refused by HMAC-SHA512"),
            SignError::Claims => f.write_str("the claims could not be serialized"),
        }
    }
}

impl std::error::Error for SignError {}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

#[derive(Serialize)]
struct Claims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    jti: &'a str,
    payload: Payload<'a>,
}

#[derive(Serialize)]
struct Payload<'a> {
    user: &'a str,
    date: &'a str,
}

/// Makes tokens for one configuration. The encoded JOSE header and the keyed
/// HMAC state are computed once, here, not per request.
#[derive(Clone)]
pub struct Signer {
    /// `base64url(header)` followed by `.`.
    header_prefix: String,
    mac: Hmac<Sha512>,
    ttl_seconds: Option<u64>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Signer {
    /// Prepares a signer for `config`.
    ///
    /// # Errors
    /// [`SignError::InvalidKey`] if the MAC refuses the key (HMAC accepts any
    /// length, so this does not happen with a validated [`Config`]).
    pub fn new(config: &Config) -> Result<Signer, SignError> {
        let header = Header {
            alg: "HS512",
            typ: "JWT",
            kid: config.key_id.as_deref(),
        };
        // Serializing a struct of strings cannot fail; fall back to the fixed
        // header rather than panic in the guest.
        let json = serde_json::to_vec(&header)
            .unwrap_or_else(|_| br#"{"alg":"HS512","typ":"JWT"}"#.to_vec());
        let mut header_prefix = URL_SAFE_NO_PAD.encode(json);
        header_prefix.push('.');
        Ok(Signer {
            header_prefix,
            mac: <Hmac<Sha512> as Mac>::new_from_slice(&config.key)
                .map_err(|_| SignError::InvalidKey)?,
            ttl_seconds: config.ttl_seconds,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// Signs a token issued at `iat` (seconds since the epoch) for `user`,
    /// with `nonce` as its `jti`.
    ///
    /// # Errors
    /// [`SignError::TimeOutOfRange`] when `iat` has no calendar date.
    pub fn sign(&self, iat: u64, nonce: &[u8; NONCE_LEN], user: &str) -> Result<Signed, SignError> {
        let date = utc_date(iat)?;
        let jti = hex::encode(nonce);
        let claims = Claims {
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            iat,
            exp: self.ttl_seconds.map(|ttl| iat.saturating_add(ttl)),
            jti: &jti,
            payload: Payload { user, date: &date },
        };
        let json = serde_json::to_vec(&claims).map_err(|_| SignError::Claims)?;

        let mut token = String::with_capacity(self.header_prefix.len() + json.len() * 4 / 3 + 90);
        token.push_str(&self.header_prefix);
        URL_SAFE_NO_PAD.encode_string(json, &mut token);
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let signature = mac.finalize().into_bytes();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(Signed { token, jti })
    }
}

/// The UTC calendar date of `secs` since the epoch, as `YYYY-MM-DD`.
///
/// # Errors
/// [`SignError::TimeOutOfRange`] beyond the year 9999.
pub fn utc_date(secs: u64) -> Result<String, SignError> {
    let out_of_range = || SignError::TimeOutOfRange(secs);
    let t = i64::try_from(secs).map_err(|_| out_of_range())?;
    let date = time::OffsetDateTime::from_unix_timestamp(t)
        .map_err(|_| out_of_range())?
        .date();
    if date.year() > 9999 {
        return Err(out_of_range());
    }
    Ok(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
    use serde_json::Value;

    const SECRET: &str = "a9ddbcaba8c0ac1a0a812dc0c2f08514b23f2db0a68343cb8199ebb38a6d91e4ebfb378e22ad39c2d01d0b4ec9c34aa91056862ddace3fbbd6852ee60c36acbf";

    fn config(extra: &str) -> Config {
        Config::parse(
            format!(r#"{{"secret":"{SECRET}"{extra}}}"#).as_bytes(),
            |_| None,
        )
        .unwrap()
    }

    fn verify(token: &str, key: &[u8]) -> Value {
        let mut v = Validation::new(Algorithm::HS512);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_aud = false;
        decode::<Value>(token, &DecodingKey::from_secret(key), &v)
            .unwrap()
            .claims
    }

    #[test]
    fn token_verifies_with_an_independent_implementation() {
        let signed = Signer::new(&config(""))
            .unwrap()
            .sign(1_795_435_200, &[0xab; 16], "username")
            .unwrap();
        let header = decode_header(&signed.token).unwrap();
        assert_eq!(header.alg, Algorithm::HS512);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid, None);
        let claims = verify(&signed.token, SECRET.as_bytes());
        assert_eq!(
            claims,
            serde_json::json!({
                "iat": 1_795_435_200u64,
                "jti": "ab".repeat(16),
                "payload": {"user": "username", "date": "2026-11-23"}
            })
        );
        assert_eq!(signed.jti, "ab".repeat(16));
    }

    #[test]
    fn wrong_key_fails_verification() {
        let signed = Signer::new(&config(""))
            .unwrap()
            .sign(1_795_435_200, &[1; 16], "u")
            .unwrap();
        let mut v = Validation::new(Algorithm::HS512);
        v.required_spec_claims.clear();
        let other = DecodingKey::from_secret(&[7; 64]);
        assert!(decode::<Value>(&signed.token, &other, &v).is_err());
    }

    #[test]
    fn hex_key_signs_with_decoded_bytes() {
        let signed = Signer::new(&config(r#","secret_encoding":"hex""#))
            .unwrap()
            .sign(0, &[0; 16], "u")
            .unwrap();
        let key = hex::decode(SECRET).unwrap();
        assert_eq!(verify(&signed.token, &key)["payload"]["date"], "1970-01-01");
    }

    #[test]
    fn optional_claims() {
        let c = config(r#","ttl_seconds":300,"issuer":"gw","audience":"api","key_id":"k1""#);
        let signed = Signer::new(&c).unwrap().sign(1000, &[0; 16], "u").unwrap();
        assert_eq!(
            decode_header(&signed.token).unwrap().kid.as_deref(),
            Some("k1")
        );
        let claims = verify(&signed.token, SECRET.as_bytes());
        assert_eq!(claims["exp"], 1300);
        assert_eq!(claims["iss"], "gw");
        assert_eq!(claims["aud"], "api");
    }

    #[test]
    fn user_is_escaped_whatever_it_holds() {
        let nasty = "a\"b\\c\r\n\0d\u{7f}é</script>";
        let signed = Signer::new(&config(""))
            .unwrap()
            .sign(1000, &[0; 16], nasty)
            .unwrap();
        assert_eq!(
            verify(&signed.token, SECRET.as_bytes())["payload"]["user"],
            nasty
        );
    }

    #[test]
    fn known_answer() {
        // Computed independently with PyJWT 2.15:
        // jwt.encode({"iat":1700000000,"jti":"00"*16,"payload":{"user":"username","date":"2023-11-14"}},
        //            SECRET, algorithm="HS512")
        // PyJWT keeps the claims' order and uses separators (",", ":"), like serde_json.
        let signed = Signer::new(&config(""))
            .unwrap()
            .sign(1_700_000_000, &[0; 16], "username")
            .unwrap();
        assert_eq!(
            signed.token,
            "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3MDAwMDAwMDAsImp0aSI6IjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwIiwicGF5bG9hZCI6eyJ1c2VyIjoidXNlcm5hbWUiLCJkYXRlIjoiMjAyMy0xMS0xNCJ9fQ.CHiENCPqlvUMU9QW-mg0yjyDeyoHCz9fJg828vmK0TUfQF1am9zW2V3DHlOC1R_sakCM4RXe9oBW4OGh-61IRw"
        );
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_date(0).unwrap(), "1970-01-01");
        assert_eq!(utc_date(951_782_400).unwrap(), "2000-02-29");
        assert_eq!(utc_date(1_795_478_399).unwrap(), "2026-11-23");
        assert_eq!(utc_date(1_795_478_400).unwrap(), "2026-11-24");
        assert_eq!(utc_date(253_402_300_799).unwrap(), "9999-12-31");
        assert!(utc_date(253_402_300_800).is_err());
        assert!(utc_date(u64::MAX).is_err());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let signed = Signer::new(&config(""))
            .unwrap()
            .sign(1000, &[0; 16], "u")
            .unwrap();
        assert!(!format!("{signed:?}").contains(&signed.token));
    }
}
