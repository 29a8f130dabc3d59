//! The claims of `claims_from_headers` (SPEC section 2.7): the map as read,
//! its reserved names and the header each is read from.

use serde_json::Value;

use super::*;

/// Claim names `claims_from_headers` cannot take (SPEC section 2.7): the
/// registered claims the filter sets or a verifier checks, the task's
/// `payload`, request binding's `htm` / `htu`, and `kid` (the JOSE header's).
pub const RESERVED_CLAIMS: [&str; 10] = [
    "iat", "jti", "exp", "nbf", "iss", "aud", "payload", "htm", "htu", "kid",
];

/// How errors name a claim of `claims_from_headers`:
/// `claims_from_headers.NAME`, a long name (a key pasted in) by its length
/// only.
fn claim_field(claim: &str) -> String {
    let chars = claim.chars().count();
    if chars > MAX_QUOTED {
        format!("claims_from_headers.<a claim of {chars} characters>")
    } else {
        format!("claims_from_headers.{claim}")
    }
}

/// `claims_from_headers` validated: each claim named, not reserved, its
/// header a valid header name (as `user_header`: no `_`) and not the token
/// header (`token_header`, which the filter always replaces: its value is the
/// client's). Header names lowercased.
pub(super) fn claim_headers(
    claims: &[(String, String)],
    token_header: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    const FIELD: &str = "claims_from_headers";
    claims
        .iter()
        .map(|(claim, header)| {
            if claim.is_empty() {
                return Err(ConfigError::new(FIELD, "a claim name must not be empty"));
            }
            let field = claim_field(claim);
            if RESERVED_CLAIMS.contains(&claim.as_str()) {
                return Err(ConfigError::new(
                    &field,
                    format!(
                        "`{claim}` is reserved (the filter or a verifier gives it its own \
                         meaning): {}",
                        RESERVED_CLAIMS.join(", ")
                    ),
                ));
            }
            let header = header_name(&field, header)?;
            if header == token_header {
                return Err(ConfigError::new(
                    &field,
                    format!(
                        "{} is the token header, which only a client can have set",
                        shown(&header)
                    ),
                ));
            }
            Ok((claim.clone(), header))
        })
        .collect()
}

/// `claims_from_headers`: claim name to header name, in document order; a
/// repeated claim is refused, each value must be a string (checked as a
/// header name by `Config::from_raw`).
pub(super) fn read_claim_headers(
    field: &str,
    members: Option<Result<Vec<(String, Value)>, &'static str>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let members = match members {
        None => return Ok(Vec::new()),
        Some(Err(kind)) => {
            return Err(ConfigError::new(
                field,
                format!("invalid type: {kind}, expected an object of claim names to header names"),
            ));
        }
        Some(Ok(members)) => members,
    };
    let mut claims: Vec<(String, String)> = Vec::with_capacity(members.len());
    for (claim, value) in members {
        let sub = claim_field(&claim);
        if claims.iter().any(|(c, _)| *c == claim) {
            return Err(ConfigError::new(&sub, format!("duplicate claim `{sub}`")));
        }
        let header = read::string(&sub, value)?;
        claims.push((claim, header));
    }
    Ok(claims)
}
