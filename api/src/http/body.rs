//! Request bodies on `:8090`, read before any handler runs: a declared `Content-Length` above
//! `max_body_size` is answered 413 without reading a byte, and a body that has not fully
//! arrived `body_timeout` after the headers is answered 408. Both close the connection, so a
//! client that sends headers and one byte holds its socket for `body_timeout` at most.
//! Requests without a body (WebSocket upgrades among them) pass untouched.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use metrics::{counter, describe_counter};

use crate::error::ApiError;

/// Requests answered without reaching a handler, by `reason`: `body_too_large`,
/// `body_timeout` or `body_unreadable` (the client went away mid-body, or bad chunking).
pub const REFUSED: &str = "ovasabi_http_requests_refused_total";

/// What [`read_body`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body, in bytes (`max_body_size`).
    pub max_size: usize,
    /// Longest time to receive it (`body_timeout`).
    pub timeout: Duration,
}

impl BodyLimits {
    pub fn new(max_size: usize, timeout: Duration) -> Self {
        describe_counter!(
            REFUSED,
            "REST requests refused before their handler, by reason (body_too_large, body_timeout, body_unreadable)"
        );
        Self { max_size, timeout }
    }
}

/// Why a request body was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive within {}", humantime::format_duration(*.after))]
    Timeout { after: Duration },
    #[error("the request body could not be read: {0}")]
    Unreadable(#[source] axum::Error),
}

impl BodyError {
    fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "body_too_large",
            Self::Timeout { .. } => "body_timeout",
            Self::Unreadable(_) => "body_unreadable",
        }
    }
}

/// The middleware: reads the whole body under the limits, then calls the handler with it.
pub async fn read_body(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    // With a Content-Length the body's lower size bound is that length; chunked bodies say 0
    // and are measured as they come.
    if body.size_hint().lower() > limits.max_size as u64 {
        let limit = limits.max_size;
        return refuse(&parts, BodyError::TooLarge { limit });
    }
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let read = tokio::time::timeout(limits.timeout, collect(body, limits.max_size)).await;
    match read {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => refuse(&parts, e),
        Err(_) => {
            let after = limits.timeout;
            refuse(&parts, BodyError::Timeout { after })
        }
    }
}

/// The body's bytes, or [`BodyError::TooLarge`] as soon as they pass `limit`.
async fn collect(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Unreadable)?;
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Counts and logs the refusal, and answers it with `Connection: close` (what is left of the
/// body is never read).
fn refuse(req: &Parts, e: BodyError) -> Response {
    let reason = e.reason();
    counter!(REFUSED, "reason" => reason).increment(1);
    let peer = req
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    tracing::debug!(
        peer = peer.as_deref().unwrap_or("-"),
        method = %req.method,
        path = req.uri.path(),
        reason,
        error = %e,
        "request body refused"
    );
    let mut res = ApiError::from(e).into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}
