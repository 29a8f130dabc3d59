//! The configuration as the start line and `Debug` show it: never a key.

use std::fmt;

use super::*;

/// The configuration as logged at start, one line of `field=value`: every
/// field but the key, which shows only as its length, source and
/// fingerprint. Strings are JSON-quoted (control characters escaped).
/// Written without `Debug` formatting, whose Unicode tables would add
/// kilobytes to the module for this one line.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = source_shown(&self.key_source, self.alg);
        let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "none".to_owned(), quoted);
        let methods: Vec<String> = self.sign_methods.iter().map(|m| quoted(m)).collect();
        // With a ring: every key's id, length, source and fingerprint.
        let ring: Vec<String> = self
            .ring
            .iter()
            .filter_map(|k| {
                let id = k.id.as_deref()?;
                let from = source_shown(&k.source, k.alg);
                Some(if !k.alg.is_asymmetric() {
                    format!(
                        "{id}:<{} bytes from {from}, fingerprint {}>",
                        k.key.len(),
                        fingerprint(&k.key)
                    )
                } else if k.can_sign() {
                    format!(
                        "{id}:<{} private key from {from}, public key fingerprint {}>",
                        k.alg.name(),
                        fingerprint(&k.public)
                    )
                } else {
                    format!(
                        "{id}:<{} public key only, fingerprint {}>",
                        k.alg.name(),
                        fingerprint(&k.public)
                    )
                })
            })
            .collect();
        if !ring.is_empty() {
            write!(f, "keys=[{}] ", ring.join(","))?;
        }
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
        )?;
        let claims: Vec<String> = self
            .claims_from_headers
            .iter()
            .map(|(claim, header)| format!("{}:{}", quoted(claim), quoted(header)))
            .collect();
        let required: Vec<String> = self.require_claims.iter().map(|c| quoted(c)).collect();
        write!(
            f,
            " claims_from_headers={{{}}} require_claims=[{}] bind_request={}",
            claims.join(","),
            required.join(","),
            self.bind_request
        )?;
        // Only with a JWKS: the default line stays as it was.
        if self.jwks.is_some() {
            write!(
                f,
                " alg={} jwks_path={} jwks_max_age_seconds={}",
                self.alg.name(),
                quoted(&self.jwks_path),
                self.jwks_max_age_seconds
            )?;
        }
        Ok(())
    }
}

/// Where a key came from, as the start line shows it.
fn source_shown(source: &KeySource, alg: Alg) -> String {
    match (source, alg.is_asymmetric()) {
        (KeySource::Config, false) => "secret".to_owned(),
        (KeySource::Config, true) => "private_key".to_owned(),
        (KeySource::Env(name), _) => format!("env {}", env_name_for_logs(name)),
    }
}

/// `Debug` is the start-up line too: the key never shows.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Config {{ {self} }}")
    }
}
