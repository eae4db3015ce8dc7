//! REST adapters of the scheduler service under `/api/scheduler`: the jobs entities declare
//! (filtered, a page at a time), one job, its runs, and the admin operations pause, resume and
//! trigger. RBAC is the service's (resource `scheduler`: `read` for lists, jobs and runs,
//! `write` for the rest).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use services::scheduler::{Job, JobFilter, JobRun, JobStatus, Page};
use utoipa::IntoParams;

use super::AppState;
use super::auth::SignedIn;
use super::params::{PageQuery, Params};
use crate::error::ApiError;
use crate::openapi::ErrorBody;

type IdPath = Result<Path<String>, PathRejection>;

/// Which jobs a list returns; every parameter narrows it. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// Only the jobs of entities of this type (`campaign`).
    entity_type: Option<String>,
    /// Only the jobs of the entity with this id.
    entity_id: Option<String>,
    /// Only the jobs of this kind (`notification.send`).
    kind: Option<String>,
    /// Only the jobs with this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Scheduled jobs, oldest first, a page at a time (needs `read`).
#[utoipa::path(
    get,
    path = "/api/scheduler/jobs",
    operation_id = "list_jobs",
    tag = "scheduler",
    params(JobQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of jobs", body = Page<Job>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<JobQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| JobStatus::parse("status", s))
        .transpose()?;
    let filter = JobFilter {
        entity_type: q.entity_type,
        entity_id: q.entity_id,
        status,
        kind: q.kind,
    };
    Ok(Json(
        app.services
            .scheduler
            .list(&caller, filter, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// One job (needs `read`).
#[utoipa::path(
    get,
    path = "/api/scheduler/jobs/{id}",
    operation_id = "get_job",
    tag = "scheduler",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path?;
    Ok(Json(app.services.scheduler.get(&caller, &id).await?))
}

/// The runs of one job (and its skipped occurrences), newest first, a page at a time (needs
/// `read`).
#[utoipa::path(
    get,
    path = "/api/scheduler/jobs/{id}/runs",
    operation_id = "list_job_runs",
    tag = "scheduler",
    params(("id" = String, Path, description = "Job id"), PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of runs", body = Page<JobRun>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn runs(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
    Params(q): Params<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path?;
    Ok(Json(
        app.services
            .scheduler
            .runs(&caller, &id, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// Pauses an active job: it keeps its next run time and is not run until resumed (a run in
/// progress finishes). Needs `write`.
#[utoipa::path(
    post,
    path = "/api/scheduler/jobs/{id}/pause",
    operation_id = "pause_job",
    tag = "scheduler",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The job, paused", body = Job),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not active (paused, done or failed)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn pause(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path?;
    Ok(Json(app.services.scheduler.pause(&caller, &id).await?))
}

/// Resumes a paused job as it was (due at its next run time), or a failed one: due now, from
/// its first attempt. Needs `write`.
#[utoipa::path(
    post,
    path = "/api/scheduler/jobs/{id}/resume",
    operation_id = "resume_job",
    tag = "scheduler",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The job, active", body = Job),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is neither paused nor failed", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn resume(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path?;
    Ok(Json(app.services.scheduler.resume(&caller, &id).await?))
}

/// Makes a job due now (a done or failed one too: it runs once more, from its first attempt).
/// Needs `write`.
#[utoipa::path(
    post,
    path = "/api/scheduler/jobs/{id}/trigger",
    operation_id = "trigger_job",
    tag = "scheduler",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The job, due now", body = Job),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is paused (resume it first) or running now", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn trigger(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path?;
    Ok(Json(app.services.scheduler.trigger(&caller, &id).await?))
}
