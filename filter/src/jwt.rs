//! JSON Web Tokens: the claims and the compact JWS the filter sends, signed
//! by a [`SigningKey`] (HS512, EdDSA or ES256; the JOSE header's `alg` and
//! `kid` follow it).
//!
//! Pure functions of the configuration, the time and a nonce: the host's
//! clock and random source are read by the caller and passed in, so tests pin
//! them and compare exact tokens. This module does not touch `proxy_wasm`.

use std::fmt::{self, Write as _};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::Config;
use crate::keys::SigningKey;

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
    /// The signing key was refused (HMAC accepts any length; a validated
    /// configuration's asymmetric keys are valid).
    InvalidKey,
    /// The claims could not be serialized.
    Claims,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::TimeOutOfRange(t) => write!(f, "time {t} is out of range for a date"),
            SignError::InvalidKey => f.write_str("the signing key was refused by its algorithm"),
            SignError::Claims => f.write_str("the claims could not be serialized"),
        }
    }
}

impl std::error::Error for SignError {}

/// Makes tokens for one configuration. Everything that does not change per
/// request is computed once, here: the encoded JOSE header, the keyed HMAC
/// state and the JSON text of the constant claims.
#[derive(Clone)]
pub struct Signer {
    /// `base64url(header)` followed by `.`.
    header_prefix: String,
    key: SigningKey,
    ttl_seconds: Option<u64>,
    /// `{` plus the `iss` and `aud` members, each followed by `,`.
    claims_prefix: String,
}

impl Signer {
    /// Prepares a signer for `config`.
    ///
    /// # Errors
    /// [`SignError::InvalidKey`] if the MAC refuses the key (HMAC accepts any
    /// length, so this does not happen with a validated [`Config`]).
    pub fn new(config: &Config) -> Result<Signer, SignError> {
        let key = SigningKey::new(config.alg, &config.key).map_err(|_| SignError::InvalidKey)?;
        let mut header = String::from(r#"{"alg":"#);
        push_json_string(&mut header, key.alg());
        header.push_str(r#","typ":"JWT""#);
        if let Some(kid) = &config.key_id {
            header.push_str(r#","kid":"#);
            push_json_string(&mut header, kid);
        }
        header.push('}');
        let mut header_prefix = URL_SAFE_NO_PAD.encode(header);
        header_prefix.push('.');
        let mut claims_prefix = String::from("{");
        for (name, value) in [("iss", &config.issuer), ("aud", &config.audience)] {
            if let Some(value) = value {
                claims_prefix.push('"');
                claims_prefix.push_str(name);
                claims_prefix.push_str("\":");
                push_json_string(&mut claims_prefix, value);
                claims_prefix.push(',');
            }
        }
        Ok(Signer {
            header_prefix,
            key,
            ttl_seconds: config.ttl_seconds,
            claims_prefix,
        })
    }

    /// The claims as compact JSON, members in the order `iss`, `aud`, `iat`,
    /// `exp`, `jti`, `payload` (the order PyJWT and serde keep).
    fn claims(&self, iat: u64, jti: &str, user: &str, date: &str) -> String {
        let mut json = String::with_capacity(self.claims_prefix.len() + 120 + user.len());
        json.push_str(&self.claims_prefix);
        json.push_str(r#""iat":"#);
        push_u64(&mut json, iat);
        if let Some(ttl) = self.ttl_seconds {
            json.push_str(r#","exp":"#);
            push_u64(&mut json, iat.saturating_add(ttl));
        }
        json.push_str(r#","jti":""#);
        json.push_str(jti);
        json.push_str(r#"","payload":{"user":"#);
        push_json_string(&mut json, user);
        json.push_str(r#","date":""#);
        json.push_str(date);
        json.push_str("\"}}");
        json
    }

    /// Signs a token issued at `iat` (seconds since the epoch) for `user`,
    /// with `nonce` as its `jti`.
    ///
    /// # Errors
    /// [`SignError::TimeOutOfRange`] when `iat` has no calendar date.
    pub fn sign(&self, iat: u64, nonce: &[u8; NONCE_LEN], user: &str) -> Result<Signed, SignError> {
        let date = utc_date(iat)?;
        let jti = hex::encode(nonce);
        let json = self.claims(iat, &jti, user, &date);

        let mut token = String::with_capacity(self.header_prefix.len() + json.len() * 4 / 3 + 90);
        token.push_str(&self.header_prefix);
        URL_SAFE_NO_PAD.encode_string(json, &mut token);
        self.key.sign_into(&mut token);
        Ok(Signed { token, jti })
    }
}

/// Appends `s` as a JSON string, escaped exactly as `serde_json` does:
/// `"` and `\`, the short forms `\b \f \n \r \t`, other control characters
/// as `\u00XX`; everything else as is.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if short.is_empty() {
            // Writing to a `String` cannot fail.
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The UTC calendar date of `secs` since the epoch, as `YYYY-MM-DD`.
///
/// # Errors
/// [`SignError::TimeOutOfRange`] beyond the year 9999.
pub fn utc_date(secs: u64) -> Result<String, SignError> {
    // 253402300800 is 10000-01-01T00:00:00Z.
    if secs >= 253_402_300_800 {
        return Err(SignError::TimeOutOfRange(secs));
    }
    let (year, month, day) = civil_from_days(secs / 86_400);
    // By hand, not `format!`: this runs for every token, and core::fmt's
    // padding machinery costs more than the rest of the date.
    let mut date = String::with_capacity(10);
    push_digits(&mut date, year, 4);
    date.push('-');
    push_digits(&mut date, month, 2);
    date.push('-');
    push_digits(&mut date, day, 2);
    Ok(date)
}

/// Appends the last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u64, width: u32) {
    for i in (0..width).rev() {
        let digit = n / 10u64.pow(i) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Appends `n` in decimal, as `write!(out, "{n}")` does, without core::fmt
/// (once or twice per request).
pub fn push_u64(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
    use serde_json::Value;

    use crate::test_support::{SECRET, config};

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
    fn known_answer_with_a_kid_and_every_optional_claim() {
        // Computed independently with Python's hmac, base64 and json
        // (separators (",", ":")), the header's members in our order.
        let c = config(
            r#","secret_encoding":"hex","ttl_seconds":300,"issuer":"gw","audience":"api","key_id":"k1""#,
        );
        let signed = Signer::new(&c)
            .unwrap()
            .sign(1_700_000_000, &[0x0f; 16], "alice")
            .unwrap();
        assert_eq!(
            signed.token,
            "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJpc3MiOiJndyIsImF1ZCI6ImFwaSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAwMzAwLCJqdGkiOiIwZjBmMGYwZjBmMGYwZjBmMGYwZjBmMGYwZjBmMGYwZiIsInBheWxvYWQiOnsidXNlciI6ImFsaWNlIiwiZGF0ZSI6IjIwMjMtMTEtMTQifX0.cc0yhmnSSq2mjhocQDKP0R1znpUayCuFU0cuAJd8nZGf-FJzhMPGNPdez7tlY6sRTlZEl1vK2CYLr6s9HWEttA"
        );
    }

    #[test]
    fn json_strings_are_escaped_like_serde_json() {
        for s in [
            "",
            "username",
            "a\"b\\c",
            "\r\n\t\u{8}\u{c}\0\u{1f}\u{7f}",
            "é</script>\u{2028}",
        ] {
            let mut out = String::new();
            push_json_string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn claims_match_serde_json_with_every_optional_claim() {
        let c = config(r#","ttl_seconds":300,"issuer":"g\"w","audience":"api""#);
        let signer = Signer::new(&c).unwrap();
        let json = signer.claims(1000, "ab", "u\n", "1970-01-01");
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            serde_json::json!({"iss": "g\"w", "aud": "api", "iat": 1000, "exp": 1300,
                "jti": "ab", "payload": {"user": "u\n", "date": "1970-01-01"}})
        );
        assert!(json.starts_with(r#"{"iss":"#), "{json}");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_date(0).unwrap(), "1970-01-01");
        assert_eq!(utc_date(951_782_400).unwrap(), "2000-02-29");
        assert_eq!(utc_date(1_795_478_399).unwrap(), "2026-11-23");
        assert_eq!(utc_date(1_795_478_400).unwrap(), "2026-11-24");
        assert_eq!(utc_date(253_402_300_799).unwrap(), "9999-12-31");
        assert_eq!(utc_date(4_107_542_400).unwrap(), "2100-03-01");
        assert_eq!(utc_date(68_169_600).unwrap(), "1972-02-29");
        assert!(utc_date(253_402_300_800).is_err());
        assert!(utc_date(u64::MAX).is_err());
    }

    #[test]
    fn digits_by_hand_match_format() {
        for n in [0, 1, 9, 10, 99, 1000, 1_795_435_200, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mut out = String::new();
        push_digits(&mut out, 7, 4);
        push_digits(&mut out, 12, 2);
        assert_eq!(out, "000712");
    }

    #[test]
    fn the_default_token_keeps_its_exact_shape() {
        // SPEC 2.1: the header segment is exactly this JSON; the claims are
        // exactly these names, in this order.
        let signed = Signer::new(&config(""))
            .unwrap()
            .sign(1_700_000_000, &[0; 16], "username")
            .unwrap();
        let mut parts = signed.token.split('.');
        let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        assert_eq!(header, br#"{"alg":"HS512","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(claims).unwrap(),
            format!(
                r#"{{"iat":1700000000,"jti":"{}","payload":{{"user":"username","date":"2023-11-14"}}}}"#,
                "0".repeat(32)
            )
        );
    }

    /// The header and claims of a token, and whether `key` verifies it.
    fn asymmetric(config: &Config, alg: Algorithm, key: &DecodingKey) -> (String, Value) {
        let signed = Signer::new(config)
            .unwrap()
            .sign(1_700_000_000, &[0x11; 16], "alice")
            .unwrap();
        let header = URL_SAFE_NO_PAD
            .decode(signed.token.split('.').next().unwrap())
            .unwrap();
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        let claims = decode::<Value>(&signed.token, key, &v).unwrap().claims;
        (String::from_utf8(header).unwrap(), claims)
    }

    #[test]
    fn the_jose_header_follows_the_signing_key() {
        use crate::test_support::keys::{ED_A, ED_A_PUB, P256_A, P256_A_PUB};
        use crate::test_support::ring_config;
        use serde_json::json;
        let c = ring_config(
            json!([{"id": "p1", "alg": "ES256", "private_key": P256_A},
                   {"id": "e1", "alg": "EdDSA", "private_key": ED_A}]),
            json!({"signing_key": "e1", "ttl_seconds": 60}),
        );
        let (header, claims) = asymmetric(
            &c,
            Algorithm::EdDSA,
            &DecodingKey::from_ed_pem(ED_A_PUB.as_bytes()).unwrap(),
        );
        assert_eq!(header, r#"{"alg":"EdDSA","typ":"JWT","kid":"e1"}"#);
        assert_eq!(claims["payload"]["user"], "alice");
        assert_eq!(claims["exp"], 1_700_000_060);
        let c = ring_config(
            json!([{"id": "p1", "alg": "ES256", "private_key": P256_A}]),
            json!({}),
        );
        let (header, claims) = asymmetric(
            &c,
            Algorithm::ES256,
            &DecodingKey::from_ec_pem(P256_A_PUB.as_bytes()).unwrap(),
        );
        assert_eq!(header, r#"{"alg":"ES256","typ":"JWT","kid":"p1"}"#);
        assert_eq!(claims["jti"], "11".repeat(16));
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
