//! Named clusters (Envoy's `static_resources.clusters` beyond the route's): what
//! `proxy_http_call` and `proxy_grpc_call` / `proxy_grpc_stream` name, each an authority and
//! the protocol to speak to it; plus the tokio runtime their I/O runs on. Leaf: no guest
//! memory, no wasmtime.
//!
//! Spec syntax (the command line's `--cluster NAME=SPEC`, [`crate::HostBuilder::cluster`]'s
//! `spec`, and `envoy/render.sh`'s `CLUSTERS`): `HOST:PORT` is an HTTP/1.1 cluster,
//! `h2c://HOST:PORT` speaks HTTP/2 with prior knowledge (what Envoy's gRPC client needs).
//! The route's upstream is also the cluster [`UPSTREAM`], as `envoy/envoy.yaml` names it.

use std::collections::BTreeMap;

use crate::error::Error;

/// The name of the route's upstream as a cluster (`envoy/envoy.yaml`'s `clusters[0].name`).
pub(crate) const UPSTREAM: &str = "upstream";

/// How to speak to a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1 (`HOST:PORT`): Envoy's `http_protocol_options`.
    Http1,
    /// HTTP/2 with prior knowledge (`h2c://HOST:PORT`): Envoy's `http2_protocol_options`.
    H2c,
}

/// One cluster: its endpoint and protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cluster {
    /// `HOST:PORT` (a hostname or an address; resolved at each connection).
    pub(crate) authority: String,
    /// HTTP/1.1 or h2c.
    pub(crate) protocol: Protocol,
}

impl Cluster {
    /// Parses `spec` (`HOST:PORT` or `h2c://HOST:PORT`); `Err` says why, for
    /// [`Error::Invalid`].
    pub(crate) fn parse(spec: &str) -> Result<Self, String> {
        let (protocol, authority) = match spec.split_once("://") {
            None => (Protocol::Http1, spec),
            Some(("h2c", rest)) => (Protocol::H2c, rest),
            Some(("http", rest)) => (Protocol::Http1, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "unknown scheme \"{scheme}://\": expected HOST:PORT (HTTP/1.1) or h2c://HOST:PORT (HTTP/2)"
                ));
            }
        };
        let parsed: http::uri::Authority = authority
            .parse()
            .map_err(|e: http::uri::InvalidUri| format!("{e}: expected HOST:PORT"))?;
        if parsed.port_u16().is_none() || parsed.host().is_empty() || authority.contains('@') {
            return Err("expected HOST:PORT".to_owned());
        }
        Ok(Self {
            authority: parsed.as_str().to_owned(),
            protocol,
        })
    }
}

/// Whether `name` can name a cluster (Envoy accepts any non-empty string; `render.sh` puts
/// it in YAML unquoted, so the test host takes what that can carry).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The clusters of a host, and the runtime their calls run on.
#[derive(Debug, Default)]
pub(crate) struct Clusters {
    map: BTreeMap<String, Cluster>,
    runtime: Option<tokio::runtime::Handle>,
}

impl Clusters {
    /// Clusters from `(name, spec)` pairs, plus the route's `upstream` when there is one;
    /// `runtime` is where their I/O runs (`None`: the direct Plugin API, no network).
    ///
    /// # Errors
    /// [`Error::Invalid`] (`what: "cluster"`) for a bad name or spec, a name given twice, or
    /// a cluster named `upstream` (that is the route's).
    pub(crate) fn new(
        specs: &[(String, String)],
        upstream: Option<&str>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Result<Self, Error> {
        let invalid = |name: &str, spec: &str, reason: String| Error::Invalid {
            what: "cluster",
            value: format!("{name}={spec}"),
            reason,
        };
        let mut map = BTreeMap::new();
        for (name, spec) in specs {
            if !valid_name(name) {
                return Err(invalid(
                    name,
                    spec,
                    "the name must be non-empty letters, digits, '_', '-' or '.'".to_owned(),
                ));
            }
            if name == UPSTREAM {
                return Err(invalid(
                    name,
                    spec,
                    "\"upstream\" is the route's cluster (--upstream)".to_owned(),
                ));
            }
            let cluster = Cluster::parse(spec).map_err(|reason| invalid(name, spec, reason))?;
            if map.insert(name.clone(), cluster).is_some() {
                return Err(invalid(name, spec, "the name is given twice".to_owned()));
            }
        }
        if let Some(authority) = upstream {
            map.insert(
                UPSTREAM.to_owned(),
                Cluster {
                    authority: authority.to_owned(),
                    protocol: Protocol::Http1,
                },
            );
        }
        Ok(Self { map, runtime })
    }

    /// The cluster called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Cluster> {
        self.map.get(name)
    }

    /// The runtime calls run on; `None` in the direct Plugin API.
    pub(crate) fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.as_ref()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_their_protocol() {
        let c = Cluster::parse("127.0.0.1:80").unwrap();
        assert_eq!(
            (c.authority.as_str(), c.protocol),
            ("127.0.0.1:80", Protocol::Http1)
        );
        let c = Cluster::parse("h2c://localhost:9000").unwrap();
        assert_eq!(
            (c.authority.as_str(), c.protocol),
            ("localhost:9000", Protocol::H2c)
        );
        for bad in ["127.0.0.1", "h2://a:1", "a:b", "", "h2c://", "u@a:1"] {
            assert!(Cluster::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_clusters_are_invalid_and_named() {
        let specs = |n: &str, s: &str| vec![(n.to_owned(), s.to_owned())];
        for (name, spec) in [("a b", "x:1"), ("upstream", "x:1"), ("a", "x")] {
            let e = Clusters::new(&specs(name, spec), None, None).unwrap_err();
            assert!(
                matches!(&e, Error::Invalid { what: "cluster", value, .. } if *value == format!("{name}={spec}")),
                "{e}"
            );
        }
        let twice = [("a".into(), "x:1".into()), ("a".into(), "y:2".into())];
        assert!(Clusters::new(&twice, None, None).is_err());
        let ok = Clusters::new(&specs("a", "h2c://x:1"), Some("u:2"), None).unwrap();
        assert_eq!(ok.get("a").unwrap().protocol, Protocol::H2c);
        assert_eq!(ok.get(UPSTREAM).unwrap().authority, "u:2");
        assert!(ok.get("b").is_none());
    }
}
