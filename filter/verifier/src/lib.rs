//! The verifier kit (SPEC sections 2.6 and 2.7): from the filter's own
//! configuration, the Envoy `jwt_authn` filter an upstream puts in front of
//! itself to verify the tokens. A provider reads the configured header
//! (`forward: true`, so the upstream still sees it) and a rule requires a
//! valid token on every method the filter signs.
//!
//! Where the provider's keys come from depends on the ring:
//! - HMAC keys (`HS512`) are secrets: every one goes inline, as an `oct` JWK
//!   with its `kid`, in a local JWKS. They are never published.
//! - Asymmetric keys (`EdDSA`, `ES256`) are public: by default the provider
//!   fetches the proxy's own JWKS endpoint ([`Jwks::Remote`]: `remote_jwks`
//!   with its cluster, `async_fetch` so the upstream starts while the proxy
//!   is down, a `cache_duration`), or inlines the very document the filter
//!   serves ([`Jwks::Local`]), computed by the filter crate's JWKS code.
//! - A mixed ring (the migration from HS512) gets both providers, the rule
//!   requiring either of them (`requires_any`).
//!
//! Tokens signed before and after a rotation both verify while both keys
//! are in the ring (for a remote JWKS: once the verifier's cache holds it).

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_filter::config::{Alg, Config};
use serde_json::json;

/// The provider's name in the generated config: the HMAC one for an HMAC
/// ring, the asymmetric one otherwise.
pub const PROVIDER: &str = "jwt_proxy";

/// The HMAC provider's name when the ring also holds asymmetric keys.
pub const HMAC_PROVIDER: &str = "jwt_proxy_hmac";

/// The cluster `remote_jwks` fetches the JWKS through.
pub const JWKS_CLUSTER: &str = "jwt_proxy_jwks";

/// How long the verifier waits for the JWKS, and after a failed fetch
/// before the next one (Envoy's `failed_refetch_duration`).
const FETCH_TIMEOUT: &str = "5s";
const FAILED_REFETCH: &str = "1s";

/// Where the verifier takes the asymmetric keys from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwks {
    /// Fetched from the proxy's JWKS endpoint (`remote_jwks`).
    Remote(Remote),
    /// The JWKS inline (`local_jwks`): a new key needs a new verifier config.
    Local,
}

/// A remote JWKS: the URL and how long the verifier caches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or IP literal (an IPv6 one without brackets).
    pub host: String,
    /// TCP port (default 80 / 443).
    pub port: u16,
    /// The URL as given.
    pub url: String,
    /// Envoy's `cache_duration` in seconds: how long a fetched JWKS is used
    /// before the next fetch.
    pub cache_seconds: u64,
}

/// Why a JWKS URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JWKS_URL: {}", self.0)
    }
}

impl std::error::Error for UrlError {}

impl Remote {
    /// The JWKS at `url` (`http://HOST[:PORT]/PATH` or `https://...`),
    /// cached for `cache_seconds`.
    ///
    /// # Errors
    /// A [`UrlError`] saying what is wrong with the URL.
    pub fn new(url: &str, cache_seconds: u64) -> Result<Remote, UrlError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| UrlError(format!("{url:?} is not a URL ({e})")))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s.to_owned(),
            _ => {
                return Err(UrlError(format!(
                    "{url:?} must start with http:// or https://"
                )));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| UrlError(format!("{url:?} has no host")))?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(UrlError(format!("{url:?} must not carry user information")));
        }
        if !uri.path().starts_with('/') || uri.path() == "/" {
            return Err(UrlError(format!("{url:?} needs the JWKS path")));
        }
        if cache_seconds == 0 {
            return Err(UrlError("the cache duration must be at least 1 s".into()));
        }
        // `Uri::port` is `None` for a port out of range: read it as written.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let written = (!authority.ends_with(']'))
            .then(|| authority.rsplit_once(':').map(|(_, p)| p))
            .flatten();
        let port = match written {
            None => {
                if scheme == "https" {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| UrlError(format!("{url:?}: the port must be 1 to 65535")))?,
        };
        Ok(Remote {
            scheme,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            url: url.to_owned(),
            cache_seconds,
        })
    }

    /// `make verifier`'s default: the local `make run` on `http_port`, the
    /// filter's `jwks_path`, cached for `jwks_max_age_seconds` (what the
    /// proxy tells other clients to cache it for).
    ///
    /// # Errors
    /// As [`Remote::new`].
    pub fn local_run(config: &Config, http_port: u16) -> Result<Remote, UrlError> {
        Remote::new(
            &format!("http://127.0.0.1:{http_port}{}", jwks_path(config)),
            jwks_max_age(config),
        )
    }
}

/// The verifier's pieces: the `http_filters` entry and, for a remote JWKS,
/// the `clusters` entry it fetches through. Each is one YAML list item
/// (`- name: ...`) at indentation 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// The `jwt_authn` filter, for the upstream's `http_filters`, before its
    /// router.
    pub filter: String,
    /// The JWKS cluster, for the upstream's `static_resources.clusters`.
    pub cluster: Option<String>,
}

/// The ring's HMAC keys as `oct` JWKs with their `kid` (the single `secret`
/// gets the configured `key_id`, or none): `{"keys":[...]}`, or `None`
/// when the ring has no HMAC key.
#[must_use]
pub fn hmac_jwks(config: &Config) -> Option<String> {
    let keys: Vec<_> = config
        .ring
        .iter()
        .filter(|k| is_hmac(k))
        .map(|k| {
            let mut jwk = json!({
                "kty": "oct",
                "alg": "HS512",
                "k": URL_SAFE_NO_PAD.encode(&k.key),
            });
            if let Some(kid) = k.id.as_ref().or(config.key_id.as_ref()) {
                jwk["kid"] = json!(kid);
            }
            jwk
        })
        .collect();
    (!keys.is_empty()).then(|| json!({ "keys": keys }).to_string())
}

/// The JWKS document the filter serves for the ring's asymmetric keys (the
/// filter crate's own code, so both are the same bytes), or `None` when the
/// ring has none.
#[must_use]
pub fn public_jwks(config: &Config) -> Option<String> {
    published(config)
}

/// The verifier for `config`, its asymmetric keys from `jwks`.
#[must_use]
pub fn verifier(config: &Config, jwks: &Jwks) -> Verifier {
    let hmac = hmac_jwks(config);
    let public = public_jwks(config);
    // (provider name, its key source as YAML lines at indentation 8)
    let mut providers: Vec<(&str, String)> = Vec::new();
    let mut cluster = None;
    if let Some(public) = &public {
        let source = match jwks {
            Jwks::Local => local_source(public),
            Jwks::Remote(remote) => {
                cluster = Some(jwks_cluster(remote));
                remote_source(remote)
            }
        };
        providers.push((PROVIDER, source));
    }
    if let Some(hmac) = &hmac {
        let name = if public.is_some() {
            HMAC_PROVIDER
        } else {
            PROVIDER
        };
        providers.push((name, local_source(hmac)));
    }
    let mut out = String::from(
        "- name: envoy.filters.http.jwt_authn\n  \
           typed_config:\n    \
             \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication\n    \
             providers:\n",
    );
    for (name, source) in &providers {
        let _ = write!(
            out,
            "      {name}:\n        from_headers:\n        - name: {}\n        forward: true\n",
            q(&config.header)
        );
        if let Some(iss) = &config.issuer {
            let _ = writeln!(out, "        issuer: {}", q(iss));
        }
        if let Some(aud) = &config.audience {
            let _ = writeln!(out, "        audiences: [{}]", q(aud));
        }
        out.push_str(source);
    }
    let requires = match providers.as_slice() {
        [(only, _)] => format!("{{ provider_name: {only} }}"),
        all => {
            let names: Vec<String> = all
                .iter()
                .map(|(name, _)| format!("{{ provider_name: {name} }}"))
                .collect();
            format!(
                "{{ requires_any: {{ requirements: [{}] }} }}",
                names.join(", ")
            )
        }
    };
    out.push_str("    rules:\n");
    for method in &config.sign_methods {
        let _ = write!(
            out,
            "    - match:\n        prefix: \"/\"\n        headers:\n        - name: \":method\"\n          \
             string_match: {{ exact: {} }}\n      requires: {requires}\n",
            q(method)
        );
    }
    Verifier {
        filter: out,
        cluster,
    }
}

/// The file `make verifier` writes: a comment saying what it is, then the
/// filter under `http_filters:` and, for a remote JWKS, its cluster under
/// `clusters:`, each ready to be merged into the upstream's Envoy config.
/// `source` names the configuration it came from.
#[must_use]
pub fn render(config: &Config, source: &str, jwks: &Jwks) -> String {
    let v = verifier(config, jwks);
    let mut out = format!(
        "# Generated by `make verifier` from {source}.\n\
         # Envoy's jwt_authn filter verifying jwt-proxy's tokens: put the\n\
         # http_filters entry in the upstream's http_filters, before the router.\n"
    );
    if hmac_jwks(config).is_some() {
        out.push_str(
            "# It holds the HMAC keys: keep it as secret as the proxy's own\n\
             # configuration.\n",
        );
    }
    if let (Some(_), Jwks::Remote(remote)) = (&v.cluster, jwks) {
        let _ = write!(
            out,
            "# The public keys are fetched from {} (every {} s, cache_duration)\n\
             # through the cluster below: add it to static_resources.clusters.\n",
            remote.url, remote.cache_seconds
        );
    }
    out.push_str("http_filters:\n");
    out.push_str(&v.filter);
    if let Some(cluster) = &v.cluster {
        out.push_str("clusters:\n");
        out.push_str(cluster);
    }
    out
}

/// `local_jwks` with `document` inline, at the provider's indentation.
fn local_source(document: &str) -> String {
    format!(
        "        local_jwks:\n          inline_string: {}\n",
        q(document)
    )
}

/// `remote_jwks` on `remote`'s URL, at the provider's indentation. The
/// fetch runs on the main thread (`async_fetch`), before the listener
/// takes requests and again each `cache_duration`; a failed one (the proxy
/// down) does not hold the listener back and is retried every second.
fn remote_source(remote: &Remote) -> String {
    format!(
        "        remote_jwks:\n          \
           http_uri:\n            \
             uri: {}\n            \
             cluster: {JWKS_CLUSTER}\n            \
             timeout: {FETCH_TIMEOUT}\n          \
           cache_duration: {}s\n          \
           async_fetch:\n            \
             fast_listener: false\n            \
             failed_refetch_duration: {FAILED_REFETCH}\n",
        q(&remote.url),
        remote.cache_seconds
    )
}

/// The cluster for `remote`'s host: `STATIC` for an IP literal, else
/// `STRICT_DNS`; TLS with the host as SNI for `https`.
fn jwks_cluster(remote: &Remote) -> String {
    let ip = remote.host.parse::<std::net::IpAddr>().is_ok();
    let mut out = format!(
        "- name: {JWKS_CLUSTER}\n  \
           type: {}\n  \
           connect_timeout: 2s\n  \
           load_assignment:\n    \
             cluster_name: {JWKS_CLUSTER}\n    \
             endpoints:\n    \
             - lb_endpoints:\n      \
               - endpoint:\n          \
                   address:\n            \
                     socket_address: {{ address: {}, port_value: {} }}\n",
        if ip { "STATIC" } else { "STRICT_DNS" },
        q(&remote.host),
        remote.port
    );
    if remote.scheme == "https" {
        let _ = write!(
            out,
            "  transport_socket:\n    \
               name: envoy.transport_sockets.tls\n    \
               typed_config:\n      \
                 \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n      \
                 sni: {}\n",
            q(&remote.host)
        );
    }
    out
}

/// A JSON string: also a valid YAML double-quoted scalar.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

// The filter crate's view of the ring, in one place.

/// Whether `key` is an HMAC key (verified with the key itself).
fn is_hmac(key: &jwt_filter::config::RingKey) -> bool {
    key.alg == Alg::Hs512
}

/// The JWKS the filter publishes (its own document, made once per
/// configuration), if the ring holds an asymmetric key.
fn published(config: &Config) -> Option<String> {
    config.jwks.as_ref().map(|jwks| jwks.body.clone())
}

/// The filter's `jwks_path`.
fn jwks_path(config: &Config) -> String {
    config.jwks_path.clone()
}

/// The filter's `jwks_max_age_seconds`: how long clients may cache its JWKS.
#[must_use]
pub fn jwks_max_age(config: &Config) -> u64 {
    config.jwks_max_age_seconds
}

#[cfg(test)]
mod tests;
