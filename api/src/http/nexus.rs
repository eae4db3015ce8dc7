//! REST adapters of Nexus under `/api/nexus`: the operation registry, patterns (list, read,
//! register) and runs (start, list, read with per-step state). RBAC is the service's
//! (resource `nexus`: `run` to start runs and read one's own, `read` for every run and the
//! registry, `write` to register patterns).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use services::nexus::{OperationInfo, Pattern, PatternDef, Run, RunFilter, RunStatus, StartRun};
use services::page::Page;
use utoipa::IntoParams;

use super::AppState;
use super::auth::SignedIn;
use super::params::Params;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;

/// Which version of a pattern. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A stored version (default: the latest).
    #[param(minimum = 1)]
    version: Option<i64>,
}

/// Which runs a list returns. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs of this pattern.
    pattern: Option<String>,
    /// Only runs in this state.
    #[param(value_type = Option<RunStatus>)]
    status: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Every operation services registered, with its input and output schemas. Needs `read`.
#[utoipa::path(
    get,
    path = "/api/nexus/operations",
    operation_id = "list_nexus_operations",
    tag = "nexus",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The registry, by name", body = Vec<OperationInfo>),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub async fn list_operations(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.services.nexus.operations(&caller)?))
}

/// The latest version of every pattern, its steps in run order with their services. Needs
/// `run`.
#[utoipa::path(
    get,
    path = "/api/nexus/patterns",
    operation_id = "list_nexus_patterns",
    tag = "nexus",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The patterns, by name", body = Vec<Pattern>),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    )
)]
pub async fn list_patterns(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.services.nexus.patterns(&caller).await?))
}

/// Registers a pattern (admins: `write`), checked against the registry: an unknown
/// operation, a mapping to a field or step that does not exist, or a cycle is a 400 naming
/// it. A changed definition is the name's next version (201); the same one is its latest
/// version (200).
#[utoipa::path(
    post,
    path = "/api/nexus/patterns",
    operation_id = "register_nexus_pattern",
    tag = "nexus",
    request_body = PatternDef,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A new version", body = Pattern),
        (status = 200, description = "The same definition as the latest version", body = Pattern),
        (status = 400, description = "Malformed JSON, unknown field or invalid definition (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 409, description = "Registered concurrently: try again", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn register_pattern(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<PatternDef>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(def) = body?;
    let (p, new) = app.services.nexus.register_pattern(&caller, def).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(p)))
}

/// One pattern, its latest or a given version. Needs `run`.
#[utoipa::path(
    get,
    path = "/api/nexus/patterns/{name}",
    operation_id = "get_nexus_pattern",
    tag = "nexus",
    params(("name" = String, Path, description = "Pattern name, like campaign.launch"), VersionQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The pattern", body = Pattern),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such pattern or version", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_pattern(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    name: IdPath,
    Params(q): Params<VersionQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(name) = name?;
    Ok(Json(
        app.services
            .nexus
            .pattern(&caller, &name, q.version)
            .await?,
    ))
}

/// Starts a run of the pattern's latest version as the caller (each step is authorised by
/// its own service). With an `idempotency_key`, a second start is the first run (200). The
/// run goes on in the background: read it for its steps' state.
#[utoipa::path(
    post,
    path = "/api/nexus/patterns/{name}/runs",
    operation_id = "start_nexus_run",
    tag = "nexus",
    params(("name" = String, Path, description = "Pattern name")),
    request_body = StartRun,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The run, just started", body = Run),
        (status = 200, description = "The run its idempotency key already started", body = Run),
        (status = 400, description = "Malformed JSON, unknown field, or an input the pattern refuses (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such pattern", body = ErrorBody),
        (status = 409, description = "The idempotency key belongs to a run with another input", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn start_run(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    name: IdPath,
    body: JsonBody<StartRun>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(name) = name?;
    let Json(req) = body?;
    let (run, new) = app.services.nexus.start(&caller, &name, req).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(run)))
}

/// Runs newest first, without their steps: the caller's own, or (for `read`) everyone's.
/// Needs `run`.
#[utoipa::path(
    get,
    path = "/api/nexus/runs",
    operation_id = "list_nexus_runs",
    tag = "nexus",
    params(RunsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of runs", body = Page<Run>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_runs(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<RunsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = RunFilter {
        pattern: q.pattern,
        status: q
            .status
            .as_deref()
            .map(|s| RunStatus::parse("status", s))
            .transpose()?,
        started_by: None,
    };
    Ok(Json(
        app.services
            .nexus
            .runs(&caller, filter, q.cursor.as_deref(), q.limit)
            .await?,
    ))
}

/// One run with each step's status, attempts, timings, input, output and errors (and its
/// compensation's): one's own, or any for `read`. Needs `run`.
#[utoipa::path(
    get,
    path = "/api/nexus/runs/{id}",
    operation_id = "get_nexus_run",
    tag = "nexus",
    params(("id" = String, Path, description = "Run id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run", body = Run),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such run (or not the caller's)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_run(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.nexus.run(&caller, &id).await?))
}
