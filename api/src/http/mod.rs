//! The public HTTP surface on `:8090`: REST under `/api`, WebSockets under `/ws`, and the web
//! page at `/`.

mod admin;
pub mod auth;
pub mod campaigns;
mod content;
mod page;
mod ws;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use engine::Node;
use services::Provider;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::error::ApiError;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub services: Provider,
    pub config: Arc<Config>,
}

/// The router of `:8090`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_size;
    Router::new()
        .route("/", get(page::index))
        .route(
            "/api/campaigns",
            get(campaigns::list).post(campaigns::create),
        )
        .route(
            "/api/campaigns/{id}",
            get(campaigns::get)
                .patch(campaigns::update)
                .delete(campaigns::end),
        )
        .route(
            "/api/campaigns/{id}/state",
            put(campaigns::put_state).patch(campaigns::patch_state),
        )
        .route("/api/campaigns/{id}/events", post(campaigns::publish))
        .route(
            "/api/campaigns/{id}/users/{user_id}/messages",
            post(campaigns::message),
        )
        .route("/api/campaigns/{id}/stats", get(campaigns::stats))
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/users/me", get(auth::me).patch(auth::update_me))
        .route("/api/users/{id}", get(auth::get_user))
        .route("/api/admin/users", get(admin::list_users))
        .route("/api/admin/users/{id}/roles", post(admin::grant_role))
        .route(
            "/api/admin/users/{id}/roles/{role}",
            delete(admin::revoke_role),
        )
        .route("/api/admin/users/{id}/disable", post(admin::disable))
        .route("/api/admin/users/{id}/enable", post(admin::enable))
        .route("/api/admin/audit", get(admin::audit))
        .route("/api/security/audit", get(admin::audit))
        .route("/api/security/audit/export", get(admin::export))
        .route("/api/security/policies", get(admin::policies))
        .route("/api/content", get(content::list).post(content::create))
        .route("/api/content/search", get(content::search))
        .route(
            "/api/content/{id}",
            get(content::get)
                .patch(content::update)
                .delete(content::delete),
        )
        .route(
            "/api/content/{id}/comments",
            get(content::comments).post(content::add_comment),
        )
        .route(
            "/api/content/comments/{id}",
            get(content::get_comment)
                .patch(content::update_comment)
                .delete(content::delete_comment),
        )
        .route("/api/content/{id}/reactions", get(content::reactions))
        .route(
            "/api/content/{id}/reactions/{kind}",
            put(content::react).delete(content::unreact),
        )
        .route("/api/services", get(services_list))
        .route("/ws/{campaign_id}/{user_id}", get(ws::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every service's registration (name, version, capabilities, dependencies, endpoints, health
/// check, metrics prefix) and whether it is healthy now.
async fn services_list(
    axum::extract::State(app): axum::extract::State<AppState>,
) -> impl IntoResponse {
    let mut items = Vec::new();
    for r in services::provider::registrations() {
        let healthy = app.services.healthy(r.name).await;
        let mut v = serde_json::to_value(&r).unwrap_or_default();
        v["healthy"] = serde_json::Value::Bool(healthy);
        items.push(v);
    }
    Json(serde_json::json!({ "items": items }))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// Longest accepted user id.
const MAX_USER_ID: usize = 128;

/// A user id from a path: 1–128 characters, none of them control characters or spaces.
fn check_user_id(user: &str) -> Result<(), ApiError> {
    let ok = !user.is_empty()
        && user.len() <= MAX_USER_ID
        && !user.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "user_id must have 1-{MAX_USER_ID} characters without spaces or control characters"
        )))
    }
}
