//! Request metrics of `:8090`: `ovasabi_http_requests_total{method,route,status}` and
//! `ovasabi_http_request_duration_seconds{method,route}`, labelled with the route's pattern
//! (`/api/campaigns/{id}`), never the raw path, so that their number stays bounded whatever
//! clients send.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, histogram};

/// Counts and times one request.
pub async fn record(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    counter!("ovasabi_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    crate::service_metrics::http(&route, response.status().as_u16(), start.elapsed());
    histogram!("ovasabi_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}
