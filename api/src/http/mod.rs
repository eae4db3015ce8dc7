//! The public HTTP surface on `:8090`: REST under `/api`, WebSockets under `/ws`, and the web
//! page at `/`.

mod campaigns;
mod page;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use engine::Node;
use services::campaign::CampaignService;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::error::ApiError;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub campaigns: CampaignService,
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
        .route("/ws/{campaign_id}/{user_id}", get(ws::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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
