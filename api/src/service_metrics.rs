//! Per-service call metrics under each service's registered `metrics_prefix`:
//! `{prefix}_calls_total{transport,outcome}` and `{prefix}_call_duration_seconds{transport}`,
//! where `transport` is `http` or `grpc` and `outcome` is `ok`, `client_error` or
//! `server_error`. A REST route belongs to the service whose registered path prefix it starts
//! with (the longest), a gRPC call to the service that registers its protobuf service.

use std::sync::LazyLock;
use std::time::Duration;

use metrics::{counter, histogram};

struct Owner {
    rest: Vec<&'static str>,
    grpc: Vec<&'static str>,
    /// Built once per service for the life of the process, so a call allocates no name.
    calls: &'static str,
    duration: &'static str,
}

static OWNERS: LazyLock<Vec<Owner>> = LazyLock::new(|| {
    services::provider::registrations()
        .into_iter()
        .map(|r| Owner {
            rest: r.endpoints.rest,
            grpc: r.endpoints.grpc,
            calls: format!("{}_calls_total", r.metrics_prefix).leak(),
            duration: format!("{}_call_duration_seconds", r.metrics_prefix).leak(),
        })
        .collect()
});

/// The service owning the REST route pattern `route` (`/api/campaigns/{id}`).
fn rest_owner(route: &str) -> Option<&'static Owner> {
    OWNERS
        .iter()
        .flat_map(|o| o.rest.iter().map(move |p| (o, *p)))
        .filter(|(_, p)| {
            route == *p
                || route
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|(_, p)| p.len())
        .map(|(o, _)| o)
}

fn record(owner: &Owner, transport: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(owner.calls, "transport" => transport, "outcome" => outcome).increment(1);
    histogram!(owner.duration, "transport" => transport).record(elapsed.as_secs_f64());
}

/// Records a REST call of `route` answered with `status`.
pub fn http(route: &str, status: u16, elapsed: Duration) {
    if let Some(owner) = rest_owner(route) {
        let outcome = match status {
            500.. => "server_error",
            400..=499 => "client_error",
            _ => "ok",
        };
        record(owner, "http", outcome, elapsed);
    }
}

/// Records a gRPC call of `path` (`/campaign.v0.CampaignService/Create`) that ended with `code`.
pub fn grpc(path: &str, code: &str, elapsed: Duration) {
    let Some((service, _)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return;
    };
    if let Some(owner) = OWNERS.iter().find(|o| o.grpc.contains(&service)) {
        let outcome = match code {
            "OK" => "ok",
            "INTERNAL" | "UNAVAILABLE" | "UNKNOWN" | "DATA_LOSS" | "DEADLINE_EXCEEDED" => {
                "server_error"
            }
            _ => "client_error",
        };
        record(owner, "grpc", outcome, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_belong_to_the_longest_registered_prefix() {
        let name = |r: &str| rest_owner(r).map(|o| o.calls);
        assert_eq!(
            name("/api/campaigns/{id}/stats"),
            Some("ovasabi_campaign_calls_total")
        );
        assert_eq!(name("/api/campaigns"), Some("ovasabi_campaign_calls_total"));
        assert_eq!(name("/api/babel/price"), Some("ovasabi_babel_calls_total"));
        assert_eq!(name("/api/admin/users"), Some("ovasabi_admin_calls_total"));
        assert_eq!(name("/api/campaignsx"), None);
        assert_eq!(name("/api/openapi.json"), None);
    }
}
