//! REST adapters of the referral service under `/api/referral`: codes (create, list, read,
//! deactivate, stats), referrals (list, read, approve, reject) and campaign stats. Sign-ups
//! with a code go through `POST /api/auth/register` (`referral_code`). RBAC is the
//! service's (resource `referral`: `refer` for one's own codes and referrals, `manage` for
//! everyone's, reviews and campaign stats).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use services::referral::{
    Approval, Code, NewCode, Page, Referral, ReferralFilter, ReferralStatus, Rejection, Stats,
};
use utoipa::IntoParams;

use super::AppState;
use super::auth::SignedIn;
use super::params::Params;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;

/// Which codes a list returns. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CodesQuery {
    /// Only this owner's codes (another user's needs `manage`; users see their own anyway).
    owner_id: Option<String>,
    /// Only codes of this campaign (id).
    campaign_id: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Which referrals a list returns. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReferralsQuery {
    /// Only this referrer's (another user's needs `manage`; users see their own anyway).
    referrer_id: Option<String>,
    /// Only sign-ups with this code.
    code: Option<String>,
    /// Only referrals of this campaign (id).
    campaign_id: Option<String>,
    /// Only referrals in this state (`held`: the review queue).
    #[param(value_type = Option<ReferralStatus>)]
    status: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Creates a referral code of the caller, for a campaign (its `custom_rules` say the
/// reward) or global. Needs `refer`.
#[utoipa::path(
    post,
    path = "/api/referral/codes",
    operation_id = "create_referral_code",
    tag = "referral",
    request_body = NewCode,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The code", body = Code),
        (status = 400, description = "Malformed JSON, unknown field or invalid value (the error names it), or no such campaign", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 409, description = "The code is taken", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create_code(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewCode>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let c = app.services.referrals.create_code(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// Codes by code: the caller's own, or (for `manage`) anyone's. Needs `refer`.
#[utoipa::path(
    get,
    path = "/api/referral/codes",
    operation_id = "list_referral_codes",
    tag = "referral",
    params(CodesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of codes", body = Page<Code>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it, or another owner without `manage`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_codes(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<CodesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        app.services
            .referrals
            .codes(
                &caller,
                q.owner_id.as_deref(),
                q.campaign_id.as_deref(),
                q.cursor.as_deref(),
                q.limit,
            )
            .await?,
    ))
}

/// One code (one's own, or any for `manage`). Needs `refer`.
#[utoipa::path(
    get,
    path = "/api/referral/codes/{code}",
    operation_id = "get_referral_code",
    tag = "referral",
    params(("code" = String, Path, description = "The code (case-insensitive)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The code", body = Code),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such code (or not the caller's)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_code(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    code: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(code) = code?;
    Ok(Json(app.services.referrals.code(&caller, &code).await?))
}

/// Deactivates a code: sign-ups with it are refused from now on; its referrals stay.
/// Deactivating an inactive code changes nothing. Needs `refer`.
#[utoipa::path(
    post,
    path = "/api/referral/codes/{code}/deactivate",
    operation_id = "deactivate_referral_code",
    tag = "referral",
    params(("code" = String, Path, description = "The code (case-insensitive)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The code, inactive", body = Code),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such code (or not the caller's)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn deactivate_code(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    code: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(code) = code?;
    Ok(Json(
        app.services
            .referrals
            .deactivate_code(&caller, &code)
            .await?,
    ))
}

/// The counts of a code's referrals: sign-ups, converted, rewarded, held, rejected. Needs
/// `refer` (one's own code) or `manage`.
#[utoipa::path(
    get,
    path = "/api/referral/codes/{code}/stats",
    operation_id = "referral_code_stats",
    tag = "referral",
    params(("code" = String, Path, description = "The code (case-insensitive)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The code's counts", body = Stats),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such code (or not the caller's)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn code_stats(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    code: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(code) = code?;
    Ok(Json(
        app.services.referrals.code_stats(&caller, &code).await?,
    ))
}

/// The counts of a campaign's referrals. Needs `manage`.
#[utoipa::path(
    get,
    path = "/api/referral/campaigns/{id}/stats",
    operation_id = "referral_campaign_stats",
    tag = "referral",
    params(("id" = String, Path, description = "Campaign id or slug")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The campaign's counts", body = Stats),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn campaign_stats(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        app.services.referrals.campaign_stats(&caller, &id).await?,
    ))
}

/// Referrals by id: the caller's own as referrer (with the reasons of held ones), or (for
/// `manage`) anyone's — `status=held` is the review queue. Needs `refer`.
#[utoipa::path(
    get,
    path = "/api/referral/referrals",
    operation_id = "list_referrals",
    tag = "referral",
    params(ReferralsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of referrals", body = Page<Referral>),
        (status = 400, description = "Bad or unknown query parameter (the error names it)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it, or another referrer without `manage`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_referrals(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<ReferralsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = ReferralFilter {
        referrer_id: q.referrer_id,
        code: q.code,
        campaign_id: q.campaign_id,
        status: q
            .status
            .as_deref()
            .map(|s| ReferralStatus::parse("status", s))
            .transpose()?,
    };
    Ok(Json(
        app.services
            .referrals
            .referrals(&caller, filter, q.cursor.as_deref(), q.limit)
            .await?,
    ))
}

/// One referral (as its referrer, or any for `manage`). Needs `refer`.
#[utoipa::path(
    get,
    path = "/api/referral/referrals/{id}",
    operation_id = "get_referral",
    tag = "referral",
    params(("id" = String, Path, description = "Referral id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The referral", body = Referral),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such referral (or not the caller's)", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_referral(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.referrals.referral(&caller, &id).await?))
}

/// Approves a held referral: it becomes `pending`, and is rewarded at once when its
/// condition was met (approving a `pending` one that is due completes a payment a stopped
/// node left half-done, never paying twice). Audited. Needs `manage`.
#[utoipa::path(
    post,
    path = "/api/referral/referrals/{id}/approve",
    operation_id = "approve_referral",
    tag = "referral",
    params(("id" = String, Path, description = "Referral id")),
    request_body = Approval,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The referral, pending or rewarded", body = Referral),
        (status = 400, description = "Malformed JSON, unknown field or invalid note", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such referral", body = ErrorBody),
        (status = 409, description = "The referral is not held (the error names its state)", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn approve(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<Approval>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(body)) = (id?, body?);
    Ok(Json(
        app.services.referrals.approve(&caller, &id, body).await?,
    ))
}

/// Rejects a held referral with a reason: no reward is paid. Audited. Needs `manage`.
#[utoipa::path(
    post,
    path = "/api/referral/referrals/{id}/reject",
    operation_id = "reject_referral",
    tag = "referral",
    params(("id" = String, Path, description = "Referral id")),
    request_body = Rejection,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The referral, rejected", body = Referral),
        (status = 400, description = "Malformed JSON, unknown field or invalid reason", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No such referral", body = ErrorBody),
        (status = 409, description = "The referral is not held (the error names its state)", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn reject(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<Rejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(body)) = (id?, body?);
    Ok(Json(
        app.services.referrals.reject(&caller, &id, body).await?,
    ))
}
