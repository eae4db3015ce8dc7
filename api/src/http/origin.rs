//! Allowed origins (`allowed_origins`): the web pages that may call the REST API from a
//! browser (CORS, preflight included) and open WebSockets (the upgrade's `Origin` header).
//!
//! A page is always allowed on its own origin (the `Origin` of a WebSocket upgrade naming the
//! request's own `Host`; same-origin REST calls need no CORS). Other origins need to be listed
//! (`https://app.example.com`, scheme and host and port as the browser sends them), or `*` for
//! any. Requests without an `Origin` (non-browser clients) are not affected. A refused upgrade
//! is answered 403; a refused REST call gets no CORS headers, so the browser withholds the
//! answer from the page.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The allowed origins, normalised (lowercase, no trailing slash).
#[derive(Debug, Clone, Default)]
pub struct Origins {
    any: bool,
    list: Vec<String>,
}

/// Why an `allowed_origins` entry is not an origin; `None` when it is one.
pub fn invalid(entry: &str) -> Option<&'static str> {
    if entry == "*" {
        return None;
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Some("expected scheme://host[:port], e.g. https://app.example.com, or *");
    };
    if !matches!(scheme, "http" | "https") {
        return Some("the scheme must be http or https");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '*']) {
        return Some("an origin is scheme://host[:port], without path, query or wildcard");
    }
    if HeaderValue::from_str(entry).is_err() {
        return Some("not a valid header value");
    }
    None
}

fn normalise(origin: &str) -> String {
    let o = origin.trim();
    o.strip_suffix('/').unwrap_or(o).to_ascii_lowercase()
}

impl Origins {
    /// From the configured entries (already checked with [`invalid`]).
    pub fn new(entries: &[String]) -> Self {
        Self {
            any: entries.iter().any(|e| e == "*"),
            list: entries
                .iter()
                .filter(|e| *e != "*")
                .map(|e| normalise(e))
                .collect(),
        }
    }

    /// Whether a request with `Origin: origin` (to `host`, its `Host` header) may go on.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let origin = normalise(origin);
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if let (Some(authority), Some(host)) = (authority, host)
            && authority.eq_ignore_ascii_case(host.trim())
        {
            return true;
        }
        self.list.contains(&origin)
    }

    /// The CORS layer of the REST API: `None` when only same-origin pages may call it.
    pub fn cors(&self) -> Option<CorsLayer> {
        let allow = if self.any {
            AllowOrigin::any()
        } else if self.list.is_empty() {
            return None;
        } else {
            let list = self.list.clone();
            AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin
                    .to_str()
                    .is_ok_and(|o| list.iter().any(|l| *l == normalise(o)))
            })
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("idempotency-key"),
                ])
                .expose_headers([header::RETRY_AFTER])
                .max_age(PREFLIGHT_MAX_AGE),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_origins_or_a_star() {
        for ok in [
            "*",
            "https://app.example.com",
            "http://127.0.0.1:5173",
            "https://a.b/",
        ] {
            assert_eq!(invalid(ok), None, "{ok}");
        }
        for bad in [
            "app.example.com",
            "ftp://x",
            "https://",
            "https://a.b/path",
            "https://*.example.com",
            "https://a.b?q",
        ] {
            assert!(invalid(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn same_origin_listed_or_any() {
        let none = Origins::new(&[]);
        assert!(
            none.allows("http://node:8090", Some("node:8090")),
            "same origin"
        );
        assert!(none.allows("HTTP://Node:8090/", Some("node:8090")));
        assert!(!none.allows("http://evil.example", Some("node:8090")));
        assert!(!none.allows("http://node:8090", None));
        assert!(!none.allows("null", Some("node:8090")));
        assert!(none.cors().is_none());

        let listed = Origins::new(&["https://App.example.com/".into()]);
        assert!(listed.allows("https://app.example.com", Some("node:8090")));
        assert!(!listed.allows("https://app.example.com.evil", Some("node:8090")));
        assert!(
            !listed.allows("http://app.example.com", Some("node:8090")),
            "scheme counts"
        );
        assert!(listed.cors().is_some());

        let any = Origins::new(&["*".into()]);
        assert!(any.allows("https://anything", None));
    }
}
