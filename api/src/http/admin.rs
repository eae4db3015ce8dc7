//! REST adapters of the admin and security services: user management under `/api/admin`,
//! the audit log and the RBAC policies under `/api/security`.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use services::page::Page;
use services::security::audit::{AuditEntry, AuditFilter};
use services::security::{Policy, Role};
use services::user::{User, UserFilter};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::SignedIn;
use super::params::Params;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

/// Which users a list returns; every parameter narrows it. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Only users holding this role.
    #[param(value_type = Option<Role>)]
    role: Option<String>,
    /// Only disabled (`true`) or enabled (`false`) accounts.
    disabled: Option<bool>,
    /// A substring of the username, email or display name (case-insensitive, 1–100
    /// characters).
    query: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists users, a page at a time.
#[utoipa::path(
    get,
    path = "/api/admin/users",
    operation_id = "list_users",
    tag = "admin",
    params(UsersQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of users", body = Page<User>),
        (status = 400, description = "Bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow managing users", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_users(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<UsersQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = UserFilter {
        role: q.role.as_deref().map(Role::parse).transpose()?,
        disabled: q.disabled,
        query: q.query,
    };
    Ok(Json(
        app.services
            .admin
            .users
            .list(&caller, &filter, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// The role to grant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    #[schema(value_type = Role)]
    role: String,
}

/// Grants a role (granting one the user holds changes nothing).
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/roles",
    operation_id = "grant_role",
    tag = "admin",
    params(("id" = String, Path, description = "User id")),
    request_body = RoleBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user after the change", body = User),
        (status = 400, description = "Malformed JSON, unknown field or unknown role", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow managing users", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn grant_role(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<RoleBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(b)) = (id?, body?);
    let role = Role::parse(&b.role)?;
    Ok(Json(
        app.services
            .admin
            .users
            .set_role(&caller, &id, role, true)
            .await?,
    ))
}

/// Revokes a role; an admin cannot revoke their own admin role.
#[utoipa::path(
    delete,
    path = "/api/admin/users/{id}/roles/{role}",
    operation_id = "revoke_role",
    tag = "admin",
    params(
        ("id" = String, Path, description = "User id"),
        ("role" = Role, Path, description = "The role to revoke"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user after the change", body = User),
        (status = 400, description = "Unknown role", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow managing users", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Revoking the caller's own admin role", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn revoke_role(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path((id, role)) = path?;
    let role = Role::parse(&role)?;
    Ok(Json(
        app.services
            .admin
            .users
            .set_role(&caller, &id, role, false)
            .await?,
    ))
}

/// Disables an account: it cannot log in or refresh, and its access tokens run out within
/// their lifetime. Nobody can disable themselves.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/disable",
    operation_id = "disable_user",
    tag = "admin",
    params(("id" = String, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user after the change", body = User),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow managing users", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "Disabling the caller's own account", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn disable(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        app.services
            .admin
            .users
            .set_disabled(&caller, &id, true)
            .await?,
    ))
}

/// Enables a disabled account.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/enable",
    operation_id = "enable_user",
    tag = "admin",
    params(("id" = String, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user after the change", body = User),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow managing users", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn enable(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        app.services
            .admin
            .users
            .set_disabled(&caller, &id, false)
            .await?,
    ))
}

/// Which audit rows to read; every parameter narrows it. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// A user id, `anonymous` or `system`.
    actor: Option<String>,
    /// `campaign`, `user`, `content`, ...
    entity_type: Option<String>,
    entity_id: Option<String>,
    /// `campaign.create`, `user.grant_role`, ...
    action: Option<String>,
    /// RFC 3339, inclusive.
    since: Option<String>,
    /// RFC 3339, exclusive.
    until: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl AuditQuery {
    fn split(self) -> (AuditFilter, Option<u32>, Option<String>) {
        (
            AuditFilter {
                actor: self.actor,
                entity_type: self.entity_type,
                entity_id: self.entity_id,
                action: self.action,
                since: self.since,
                until: self.until,
            },
            self.limit,
            self.cursor,
        )
    }
}

/// Which audit rows to export: the filters of [`AuditQuery`] without `limit` (the export has
/// no pages, so a `limit` is refused like any unknown parameter).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// A user id, `anonymous` or `system`.
    actor: Option<String>,
    /// `campaign`, `user`, `content`, ...
    entity_type: Option<String>,
    entity_id: Option<String>,
    /// `campaign.create`, `user.grant_role`, ...
    action: Option<String>,
    /// RFC 3339, inclusive.
    since: Option<String>,
    /// RFC 3339, exclusive.
    until: Option<String>,
    /// Start after this row: the `id` of the last row seen, or a `next_cursor` of the audit
    /// log.
    cursor: Option<String>,
}

impl ExportQuery {
    fn split(self) -> (AuditFilter, Option<String>) {
        (
            AuditFilter {
                actor: self.actor,
                entity_type: self.entity_type,
                entity_id: self.entity_id,
                action: self.action,
                since: self.since,
                until: self.until,
            },
            self.cursor,
        )
    }
}

/// The audit log under its admin path; the same as `GET /api/security/audit`.
#[utoipa::path(
    get,
    path = "/api/admin/audit",
    operation_id = "admin_audit",
    tag = "admin",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of audit rows, oldest first", body = Page<AuditEntry>),
        (status = 400, description = "Bad or unknown query parameter, bad time or limit", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading the audit log", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn admin_audit(
    state: State<AppState>,
    caller: SignedIn,
    query: Params<AuditQuery>,
) -> Result<impl IntoResponse, ApiError> {
    audit(state, caller, query).await
}

/// A page of the audit log: every mutating call, with the entity before and after.
#[utoipa::path(
    get,
    path = "/api/security/audit",
    operation_id = "audit",
    tag = "security",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of audit rows, oldest first", body = Page<AuditEntry>),
        (status = 400, description = "Bad or unknown query parameter, bad time or limit", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading the audit log", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn audit(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<AuditQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (filter, limit, cursor) = q.split();
    Ok(Json(
        app.services
            .audit
            .query(&caller, &filter, limit, cursor.as_deref())
            .await?,
    ))
}

/// The compliance export: every matching row as JSON lines (`application/x-ndjson`), oldest
/// first, streamed a page at a time. The first page is read before answering, so that a bad
/// filter or a refused caller gets a JSON error instead of a broken stream.
#[utoipa::path(
    get,
    path = "/api/security/audit/export",
    operation_id = "export_audit",
    tag = "security",
    params(ExportQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every matching row, one JSON object (`AuditEntry`) a line. \
            If reading stops half-way, the last line is an `ErrorBody` with code `export_interrupted`.",
            content_type = "application/x-ndjson", body = AuditEntry),
        (status = 400, description = "Bad or unknown query parameter (`limit` among them), or a bad time", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow exporting the audit log", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn export(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<ExportQuery>,
) -> Result<Response, ApiError> {
    let (filter, cursor) = q.split();
    let pages = app
        .services
        .audit
        .export(&caller, &filter, cursor.as_deref())
        .await?;
    let stream = futures_util::StreamExt::map(pages, |page| {
        let mut chunk = String::new();
        match page {
            Ok(lines) => {
                for l in lines {
                    chunk.push_str(&l);
                    chunk.push('\n');
                }
            }
            Err(e) => {
                // The status line is gone: say it in the stream, as a last line.
                tracing::warn!(error = %e, "audit export stopped");
                let err =
                    json!({"error": {"code": "export_interrupted", "message": e.to_string()}});
                chunk.push_str(&err.to_string());
                chunk.push('\n');
            }
        }
        Ok::<_, std::convert::Infallible>(chunk)
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The RBAC rules: `role` may do `action` on `resource` (`*` matches any).
#[utoipa::path(
    get,
    path = "/api/security/policies",
    operation_id = "list_policies",
    tag = "security",
    params(super::params::PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the rules, sorted by role, resource and action", body = Page<Policy>),
        (status = 400, description = "Bad limit or unknown query parameter", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading policies", body = ErrorBody),
    )
)]
pub async fn policies(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<super::params::PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.services.policies.page(
        &caller,
        q.limit,
        q.cursor.as_deref(),
    )?))
}
