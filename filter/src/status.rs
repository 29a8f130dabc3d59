//! The `/status` page: figures in, JSON or HTML out. Pure; no `proxy_wasm`.

use crate::jwt::utc_date;

/// The figures the status page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// When the proxy started, in nanoseconds since the epoch.
    pub started_at_nanos: u64,
    /// Now, in nanoseconds since the epoch.
    pub now_nanos: u64,
    /// Requests forwarded (the status page itself not counted).
    pub requests_processed: u64,
    /// Requests that got a token.
    pub requests_signed: u64,
    /// The signing key's `kid`, when tokens carry one (letters, digits,
    /// `.`, `_`, `-`: nothing to escape).
    pub kid: Option<String>,
}

impl Figures {
    /// Seconds since start, to the millisecond, as a JSON number: the
    /// shortest decimal (`12.5`, `3.0`, `0.001`), as `serde_json` prints the
    /// same value as an `f64`. Formatted from integers: float formatting is
    /// about 24 KB of Wasm.
    pub fn uptime_seconds(&self) -> String {
        let millis = self.now_nanos.saturating_sub(self.started_at_nanos) / 1_000_000;
        let mut out = format!("{}.{:03}", millis / 1000, millis % 1000);
        // Trailing zeros go, but one digit stays after the point.
        while out.ends_with('0') && !out.ends_with(".0") {
            out.pop();
        }
        out
    }

    /// The JSON document: `{"status":"ok","started_at":...,"uptime_seconds":...,...}`.
    /// No string in it needs escaping: a timestamp is digits, `-`, `:`, `T`, `Z`.
    pub fn to_json(&self) -> String {
        let kid = self
            .kid
            .as_ref()
            .map_or_else(String::new, |k| format!(r#","kid":"{k}""#));
        format!(
            r#"{{"status":"ok","started_at":"{}","uptime_seconds":{},"requests_processed":{},"requests_signed":{}{kid}}}"#,
            rfc3339(self.started_at_nanos / 1_000_000_000),
            self.uptime_seconds(),
            self.requests_processed,
            self.requests_signed,
        )
    }

    /// A small HTML page with the same figures.
    pub fn to_html(&self) -> String {
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>jwt-proxy status</title></head>\n\
             <body><h1>jwt-proxy: ok</h1>\n<table>\n\
             <tr><th>started at</th><td>{}</td></tr>\n\
             <tr><th>uptime (s)</th><td>{}</td></tr>\n\
             <tr><th>requests processed</th><td>{}</td></tr>\n\
             <tr><th>requests signed</th><td>{}</td></tr>\n{}\
             </table></body></html>\n",
            rfc3339(self.started_at_nanos / 1_000_000_000),
            self.uptime_seconds(),
            self.requests_processed,
            self.requests_signed,
            self.kid.as_ref().map_or_else(String::new, |k| format!(
                "<tr><th>signing key</th><td>{k}</td></tr>\n"
            )),
        )
    }
}

/// Whether an `Accept` header asks for HTML before JSON.
pub fn wants_html(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .map(|part| part.split(';').next().unwrap_or("").trim())
            .any(|media| media.eq_ignore_ascii_case("text/html"))
    })
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let date = utc_date(secs).unwrap_or_else(|_| "9999-12-31".to_owned());
    let day = secs % 86_400;
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        day / 3600,
        day / 60 % 60,
        day % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FIGS: Figures = Figures {
        started_at_nanos: 1_795_435_200_000_000_000,
        now_nanos: 1_795_435_212_500_000_000,
        requests_processed: 42,
        requests_signed: 40,
        kid: None,
    };

    #[test]
    fn json_has_every_figure() {
        let v: serde_json::Value = serde_json::from_str(&FIGS.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status":"ok","started_at":"2026-11-23T12:00:00Z","uptime_seconds":12.5,
                "requests_processed":42,"requests_signed":40})
        );
    }

    #[test]
    fn uptime_is_the_shortest_decimal_like_serde_json() {
        for millis in [
            0u64,
            1,
            10,
            100,
            999,
            1000,
            1500,
            12_345,
            86_400_000,
            1 << 40,
        ] {
            let f = Figures {
                started_at_nanos: 5,
                now_nanos: 5 + millis * 1_000_000 + 999_999,
                requests_processed: 0,
                requests_signed: 0,
                kid: None,
            };
            let expected = serde_json::to_string(&(millis as f64 / 1000.0)).unwrap();
            assert_eq!(f.uptime_seconds(), expected, "{millis} ms");
        }
    }

    #[test]
    fn the_signing_kid_shows_when_tokens_carry_one() {
        let f = Figures {
            kid: Some("k-2".to_owned()),
            ..FIGS
        };
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(v["kid"], "k-2");
        assert!(f.to_html().contains("<td>k-2</td>"));
        assert!(!FIGS.to_json().contains("kid"));
    }

    #[test]
    fn html_has_every_figure() {
        let html = FIGS.to_html();
        for needle in ["2026-11-23T12:00:00Z", "12.5", ">42<", ">40<"] {
            assert!(html.contains(needle), "{needle} missing from {html}");
        }
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_html(Some("text/html")));
        assert!(wants_html(Some(
            "text/html,application/xhtml+xml,*/*;q=0.8"
        )));
        assert!(wants_html(Some("application/json, Text/HTML;q=0.5")));
        assert!(!wants_html(Some("application/json")));
        assert!(!wants_html(Some("*/*")));
        assert!(!wants_html(None));
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_478_399), "2026-11-23T23:59:59Z");
    }
}
