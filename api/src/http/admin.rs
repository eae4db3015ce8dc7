//! REST adapters of the admin and security services: user management under `/api/admin`,
//! the audit log and the RBAC policies under `/api/security`.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use services::security::Role;
use services::security::audit::AuditFilter;
use services::user::UserFilter;

use super::AppState;
use super::auth::Auth;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    role: Option<String>,
    disabled: Option<bool>,
    query: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list_users(
    State(app): State<AppState>,
    Auth(caller): Auth,
    q: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
    let filter = UserFilter {
        role: q.role.as_deref().map(Role::parse).transpose()?,
        disabled: q.disabled,
        query: q.query,
    };
    Ok(Json(
        app.services
            .users
            .list(&caller, &filter, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: String,
}

pub async fn grant_role(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<RoleBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(b)) = (id?, body?);
    let role = Role::parse(&b.role)?;
    Ok(Json(
        app.services
            .users
            .set_role(&caller, &id, role, true)
            .await?,
    ))
}

pub async fn revoke_role(
    State(app): State<AppState>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path((id, role)) = path?;
    let role = Role::parse(&role)?;
    Ok(Json(
        app.services
            .users
            .set_role(&caller, &id, role, false)
            .await?,
    ))
}

pub async fn disable(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        app.services.users.set_disabled(&caller, &id, true).await?,
    ))
}

pub async fn enable(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        app.services.users.set_disabled(&caller, &id, false).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    entity_type: Option<String>,
    entity_id: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
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

pub async fn audit(
    State(app): State<AppState>,
    Auth(caller): Auth,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
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
pub async fn export(
    State(app): State<AppState>,
    Auth(caller): Auth,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    let (filter, limit, cursor) = q.split();
    if limit.is_some() {
        return Err(ApiError::bad_request(
            "the export has no limit: it streams every matching row",
        ));
    }
    let first = app
        .services
        .audit
        .export_page(&caller, &filter, cursor.as_deref())
        .await?;
    let stream = futures_util::stream::unfold(Some(first), move |page| {
        let app = app.clone();
        let caller = caller.clone();
        let filter = filter.clone();
        async move {
            let (lines, next) = page?;
            let mut chunk = String::new();
            for l in lines {
                chunk.push_str(&l);
                chunk.push('\n');
            }
            let following = match next {
                None => None,
                Some(cursor) => match app
                    .services
                    .audit
                    .export_page(&caller, &filter, Some(&cursor))
                    .await
                {
                    Ok(p) => Some(p),
                    Err(e) => {
                        // The status line is gone: say it in the stream, as a last line.
                        tracing::warn!(error = %e, "audit export stopped");
                        let err = json!({"error": {"code": "export_interrupted", "message": e.to_string()}});
                        chunk.push_str(&err.to_string());
                        chunk.push('\n');
                        None
                    }
                },
            };
            Some((Ok::<_, std::convert::Infallible>(chunk), following))
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

pub async fn policies(
    State(app): State<AppState>,
    Auth(caller): Auth,
) -> Result<impl IntoResponse, ApiError> {
    app.services.policies.require(&caller, "policy", "read")?;
    Ok(Json(json!({"items": app.services.policies.list()})))
}
