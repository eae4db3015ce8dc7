//! gRPC on `:8080`: thin adapters from the generated `proto` services to the same service
//! methods the REST handlers call, plus the standard `grpc.health.v1` service (one status per
//! service, refreshed from the services' health checks) and server reflection (v1 and v1alpha).
//!
//! Callers authenticate with the `authorization: Bearer <token>` metadata; every call runs as
//! that [`Caller`] (anonymous without it), seen from the peer's address, so RBAC and the audit
//! log work exactly as over REST.

mod babel;
mod broadcast;
mod campaign;
mod commerce;
mod content;
mod localization;
mod nexus;
mod notification;
mod observe;
mod referral;
mod scheduler;
mod security;
mod talent;
mod user;

use std::time::Duration;

use engine::Node;
use services::security::Caller;
use services::{Provider, ServiceError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};

/// What the adapters share.
#[derive(Clone)]
pub struct GrpcState {
    pub services: Provider,
    pub node: Node,
}

/// How often the health statuses are refreshed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Maps a service failure to a gRPC status.
pub fn status(e: ServiceError) -> Status {
    match &e {
        ServiceError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        ServiceError::NotFound { .. } => Status::not_found(e.to_string()),
        ServiceError::Duplicate { .. } => Status::already_exists(e.to_string()),
        ServiceError::Conflict { .. } => Status::failed_precondition(e.to_string()),
        ServiceError::Unprocessable { code, .. } => {
            Status::invalid_argument(format!("{code}: {e}"))
        }
        ServiceError::Unauthenticated { .. } => Status::unauthenticated(e.to_string()),
        ServiceError::Forbidden { .. } => Status::permission_denied(e.to_string()),
        ServiceError::RateLimited { .. } => Status::resource_exhausted(e.to_string()),
        ServiceError::Unavailable(_)
        | ServiceError::Broadcast {
            unavailable: true, ..
        } => Status::unavailable(e.to_string()),
        ServiceError::Database(source) => {
            tracing::error!(error = %source, "database error");
            Status::internal("internal error")
        }
        ServiceError::Broadcast { .. } => Status::internal(e.to_string()),
    }
}

/// The caller of a request: its bearer token's user (anonymous without one), from the
/// peer's address.
///
/// # Errors
/// `UNAUTHENTICATED` for malformed metadata or a bad or expired token.
pub fn caller<T>(state: &GrpcState, req: &Request<T>) -> Result<Caller, Status> {
    authenticate(state, req).map(|(c, _)| c)
}

/// As [`caller`], with the account and token generation a live stream is closed by when the
/// account's tokens are revoked (`None` for anonymous callers).
///
/// # Errors
/// As [`caller`].
pub fn authenticate<T>(
    state: &GrpcState,
    req: &Request<T>,
) -> Result<(Caller, Option<engine::Principal>), Status> {
    let (caller, principal) = match req.metadata().get("authorization") {
        None => (Caller::anonymous(), None),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
            let token = v
                .split_once(' ')
                .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.is_empty())
                .map(|(_, t)| t.trim())
                .ok_or_else(|| {
                    Status::unauthenticated("authorization must be \"Bearer <token>\"")
                })?;
            let (caller, token) = state
                .services
                .users
                .authenticate_session(token)
                .map_err(status)?;
            let principal = crate::http::ws::principal(&caller, token);
            (caller, principal)
        }
    };
    let caller = match req.remote_addr() {
        Some(addr) => caller.from_addr(addr.to_string()),
        None => caller,
    };
    Ok((caller, principal))
}

/// `0` means "the default page size".
pub fn limit(l: u32) -> Option<u32> {
    (l != 0).then_some(l)
}

/// An empty string means "no cursor".
pub fn cursor(c: &str) -> Option<&str> {
    (!c.is_empty()).then_some(c)
}

/// A JSON conversion failure on the way in.
pub fn bad_json(field: &str, e: proto::convert::ConvertError) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

/// A JSON conversion failure on the way out (a stored value protobuf cannot carry).
pub fn internal_json(e: proto::convert::ConvertError) -> Status {
    tracing::error!(error = %e, "a stored value cannot be sent over gRPC");
    Status::internal(format!("cannot encode the answer: {e}"))
}

/// Every gRPC service name the node serves, by the registration that owns it.
fn service_names() -> Vec<(&'static str, &'static str)> {
    services::provider::registrations()
        .into_iter()
        .flat_map(|r| r.endpoints.grpc.into_iter().map(move |g| (r.name, g)))
        .collect()
}

/// Serves gRPC on `listener` until `stop` is cancelled.
///
/// # Errors
/// When reflection cannot read the descriptor set.
pub async fn serve(
    state: GrpcState,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // Both reflection versions: grpcurl speaks v1, many other tools still only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let health_task = tokio::spawn({
        let services = state.services.clone();
        let stop = stop.clone();
        async move {
            loop {
                let mut all = true;
                for (owner, name) in service_names() {
                    let ok = services.healthy(owner).await;
                    all &= ok;
                    let s = if ok {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    reporter.set_service_status(name, s).await;
                }
                let overall = if all {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter.set_service_status("", overall).await;
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(HEALTH_INTERVAL) => {}
                }
            }
        }
    });
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut known: Vec<&str> = service_names().into_iter().map(|(_, n)| n).collect();
    known.extend([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]);
    let result = Server::builder()
        .layer(observe::MetricsLayer::new(known))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(user::user_server(state.clone()))
        .add_service(user::admin_server(state.clone()))
        .add_service(security::server(state.clone()))
        .add_service(campaign::server(state.clone()))
        .add_service(broadcast::server(state.clone()))
        .add_service(content::server(state.clone()))
        .add_service(localization::server(state.clone()))
        .add_service(babel::server(state.clone()))
        .add_service(notification::server(state.clone()))
        .add_service(scheduler::server(state.clone()))
        .add_service(talent::server(state.clone()))
        .add_service(commerce::server(state.clone()))
        .add_service(nexus::server(state.clone()))
        .add_service(referral::server(state))
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await;
    health_task.abort();
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server failed");
    }
    Ok(())
}
