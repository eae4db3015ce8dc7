//! The campaign console at `/`: plain ES modules and CSS embedded in the binary (no build step,
//! no external assets), served from `/console/{file}`, with the official JavaScript client
//! (`clients/js/src/index.js`) as `/console/client.js`, the module the console's live view is
//! built on.
//!
//! Every answer says `cache-control: no-cache` (browsers revalidate, so a new binary's console
//! is picked up on the next load). The HTML page carries a content security policy that allows
//! nothing but this origin: the console needs no inline script or style and no other host.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::error::ApiError;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// What the HTML page may load and connect to: its own origin only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The console's files under `/console/`: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("console/app.js")),
    ("api.js", JS, include_str!("console/api.js")),
    ("dom.js", JS, include_str!("console/dom.js")),
    ("chart.js", JS, include_str!("console/chart.js")),
    ("campaigns.js", JS, include_str!("console/campaigns.js")),
    ("live.js", JS, include_str!("console/live.js")),
    ("admin.js", JS, include_str!("console/admin.js")),
    ("style.css", CSS, include_str!("console/style.css")),
    ("icon.svg", SVG, include_str!("console/icon.svg")),
    (
        "client.js",
        JS,
        include_str!("../../../clients/js/src/index.js"),
    ),
];

/// `/` (the console) and `/console/{file}` (its assets).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*file}", get(asset))
}

async fn index() -> Response {
    let mut res = served(HTML, include_str!("console/index.html"));
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| served(content_type, body))
        .ok_or_else(|| ApiError::not_found(format!("no console asset {file:?}")))
}

fn served(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
