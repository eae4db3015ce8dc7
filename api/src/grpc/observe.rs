//! Request metrics of `:8080`: `ovasabi_grpc_requests_total{method,code}` and
//! `ovasabi_grpc_request_duration_seconds{method}`, as a tower layer under tonic.
//!
//! `method` is the call's path (`/campaign.v0.CampaignService/Create`) when it names a service
//! the node serves and the call was not `UNIMPLEMENTED`, else `unknown`, so that the number of
//! series stays bounded whatever clients send. `code` is the gRPC status name (`OK`,
//! `INVALID_ARGUMENT`, …), read from the response headers (errors answered at once) or from the
//! trailers (after the last message); a call whose response is dropped before its trailers
//! (the client went away) counts as `CANCELLED`. A streaming call (`Subscribe`) is timed until
//! its stream ends.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{self, HeaderMap};
use metrics::{counter, histogram};

/// The status names, by code (0–16).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The status name in `grpc-status` of `headers`, if it has one.
fn status_of(headers: &HeaderMap) -> Option<&'static str> {
    let v = headers.get("grpc-status")?;
    let code: usize = v.to_str().ok()?.parse().ok()?;
    Some(CODES.get(code).copied().unwrap_or("UNKNOWN"))
}

/// Adds the metrics to every call of the services named in `known` (full protobuf names).
#[derive(Clone)]
pub struct MetricsLayer {
    known: Arc<HashSet<String>>,
}

impl MetricsLayer {
    pub fn new<'a>(known: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            known: Arc::new(known.into_iter().map(str::to_owned).collect()),
        }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            known: self.known.clone(),
        }
    }
}

/// The service [`MetricsLayer`] wraps.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    known: Arc<HashSet<String>>,
}

/// The `method` label of a call to `path`, before its status is known.
fn method_label(path: &str, known: &HashSet<String>) -> Option<String> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let plain = !method.is_empty()
        && method.len() <= 64
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (plain && known.contains(service)).then(|| path.to_owned())
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Metered<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let mut call = Call {
            method: method_label(req.uri().path(), &self.known),
            start: Instant::now(),
            done: false,
        };
        let future = self.inner.call(req);
        Box::pin(async move {
            let res = future.await?;
            if let Some(code) = status_of(res.headers()) {
                call.finish(code);
            }
            let (parts, body) = res.into_parts();
            Ok(http::Response::from_parts(parts, Observed { body, call }))
        })
    }
}

/// One call, recorded once.
struct Call {
    method: Option<String>,
    start: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let method = match self.method.take() {
            Some(m) if code != "UNIMPLEMENTED" => m,
            _ => "unknown".to_owned(),
        };
        crate::service_metrics::grpc(&method, code, self.start.elapsed());
        counter!("ovasabi_grpc_requests_total", "method" => method.clone(), "code" => code)
            .increment(1);
        histogram!("ovasabi_grpc_request_duration_seconds", "method" => method)
            .record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

/// A response body that records its call when the trailers pass (or when it is dropped).
pub struct Observed<B> {
    body: B,
    call: Call,
}

impl<B> http_body::Body for Observed<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    this.call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish("INTERNAL"),
            // Ended without a status: tonic always sends one, so this is a broken stream.
            Poll::Ready(None) => this.call.finish("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let known = HashSet::from(["campaign.v0.CampaignService".to_owned()]);
        assert_eq!(
            method_label("/campaign.v0.CampaignService/Create", &known).as_deref(),
            Some("/campaign.v0.CampaignService/Create")
        );
        assert_eq!(method_label("/made.up.Service/Create", &known), None);
        assert_eq!(method_label("/campaign.v0.CampaignService/", &known), None);
        assert_eq!(
            method_label("/campaign.v0.CampaignService/a/b", &known),
            None
        );
        assert_eq!(method_label("nothing", &known), None);
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "16".parse().expect("value"));
        assert_eq!(status_of(&h), Some("UNAUTHENTICATED"));
        h.insert("grpc-status", "99".parse().expect("value"));
        assert_eq!(status_of(&h), Some("UNKNOWN"));
    }
}
