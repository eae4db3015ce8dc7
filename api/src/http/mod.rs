//! The public HTTP surface on `:8090`: REST under `/api`, WebSockets under `/ws`, and the web
//! page at `/`.
//!
//! Every route but the web page is registered through `utoipa_axum::routes!` in
//! [`api_router`], which takes its path, method, parameters, body and responses from the
//! `#[utoipa::path(...)]` on its handler: the same call gives the axum router and the OpenAPI
//! document served at `GET /api/openapi.json`, so a route cannot exist undocumented.
//!
//! Handlers take their caller first ([`auth::Auth`], or [`auth::SignedIn`] where a token is
//! needed), then their path, query ([`params::Params`]) and body: extractors run in that order,
//! so a call without a token is refused before its input is looked at.

mod admin;
pub mod auth;
mod babel;
pub mod body;
pub mod campaigns;
mod commerce;
mod content;
mod kg;
mod localization;
mod nexus;
mod notifications;
mod observe;
pub mod origin;
mod page;
pub mod params;
mod referral;
mod scheduler;
mod talent;
pub mod ws;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Extension};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Json, Router};
use bytes::Bytes;
use engine::Node;
use serde::Serialize;
use services::Provider;
use services::provider::ServiceRegistration;
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::error::ApiError;
use crate::openapi::ApiDoc;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub services: Provider,
    pub config: Arc<Config>,
    /// `allowed_origins`, parsed once.
    pub origins: Arc<origin::Origins>,
}

impl AppState {
    pub fn new(node: Node, services: Provider, config: Arc<Config>) -> Self {
        let origins = Arc::new(origin::Origins::new(&config.allowed_origins));
        Self {
            node,
            services,
            config,
            origins,
        }
    }
}

/// The routes of `:8090` that the OpenAPI document describes, with the document. One
/// `routes!` per path: the handlers of its methods.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(campaigns::list, campaigns::create))
        .routes(routes!(campaigns::get, campaigns::update, campaigns::end))
        .routes(routes!(campaigns::put_state, campaigns::patch_state))
        .routes(routes!(campaigns::publish))
        .routes(routes!(campaigns::publish_batch))
        .routes(routes!(campaigns::message))
        .routes(routes!(campaigns::stats))
        .routes(routes!(campaigns::stats_history))
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::me, auth::update_me))
        .routes(routes!(auth::get_user))
        .routes(routes!(admin::list_users))
        .routes(routes!(admin::grant_role))
        .routes(routes!(admin::revoke_role))
        .routes(routes!(admin::disable))
        .routes(routes!(admin::enable))
        .routes(routes!(admin::admin_audit))
        .routes(routes!(admin::audit))
        .routes(routes!(admin::export))
        .routes(routes!(admin::policies))
        .routes(routes!(content::list, content::create))
        .routes(routes!(content::search))
        .routes(routes!(content::get, content::update, content::delete))
        .routes(routes!(content::comments, content::add_comment))
        .routes(routes!(
            content::get_comment,
            content::update_comment,
            content::delete_comment
        ))
        .routes(routes!(content::reactions))
        .routes(routes!(content::react, content::unreact))
        .routes(routes!(localization::list))
        .routes(routes!(
            localization::get,
            localization::put,
            localization::delete
        ))
        .routes(routes!(localization::export, localization::import))
        .routes(routes!(localization::namespace))
        .routes(routes!(localization::missing))
        .routes(routes!(localization::format))
        .routes(routes!(babel::list_markets, babel::create_market))
        .routes(routes!(
            babel::get_market,
            babel::update_market,
            babel::delete_market
        ))
        .routes(routes!(babel::list_rules, babel::create_rule))
        .routes(routes!(
            babel::get_rule,
            babel::replace_rule,
            babel::delete_rule
        ))
        .routes(routes!(babel::price))
        .routes(routes!(notifications::inbox, notifications::send))
        .routes(routes!(notifications::unread))
        .routes(routes!(notifications::read_all))
        .routes(routes!(notifications::get, notifications::delete))
        .routes(routes!(notifications::mark_read))
        .routes(routes!(notifications::deliveries))
        .routes(routes!(notifications::batch_deliveries))
        .routes(routes!(
            notifications::preferences,
            notifications::update_preferences
        ))
        .routes(routes!(
            notifications::webhooks,
            notifications::create_webhook
        ))
        .routes(routes!(notifications::delete_webhook))
        .routes(routes!(notifications::templates))
        .routes(routes!(
            notifications::template,
            notifications::put_template,
            notifications::delete_template
        ))
        .routes(routes!(scheduler::list))
        .routes(routes!(scheduler::get))
        .routes(routes!(scheduler::runs))
        .routes(routes!(scheduler::pause))
        .routes(routes!(scheduler::resume))
        .routes(routes!(scheduler::trigger))
        .routes(routes!(talent::search, talent::create_profile))
        .routes(routes!(
            talent::get_profile,
            talent::update_profile,
            talent::delete_profile
        ))
        .routes(routes!(talent::profile_of_user))
        .routes(routes!(talent::set_availability))
        .routes(routes!(talent::slots))
        .routes(routes!(talent::profile_bookings, talent::book))
        .routes(routes!(talent::my_bookings))
        .routes(routes!(talent::get_booking))
        .routes(routes!(talent::confirm))
        .routes(routes!(talent::decline))
        .routes(routes!(talent::cancel))
        .routes(routes!(talent::complete))
        .routes(routes!(commerce::list_products, commerce::create_product))
        .routes(routes!(commerce::get_product, commerce::update_product))
        .routes(routes!(commerce::list_orders, commerce::place_order))
        .routes(routes!(commerce::get_order))
        .routes(routes!(commerce::cancel_order))
        .routes(routes!(commerce::fulfil_order))
        .routes(routes!(commerce::pay))
        .routes(routes!(commerce::refund))
        .routes(routes!(commerce::order_invoice))
        .routes(routes!(commerce::order_invoice_html))
        .routes(routes!(commerce::get_payment))
        .routes(routes!(commerce::confirm_payment))
        .routes(routes!(commerce::reject_payment))
        .routes(routes!(commerce::invoice_numbers))
        .routes(routes!(commerce::get_invoice))
        .routes(routes!(commerce::ledger_entries))
        .routes(routes!(commerce::record_movement))
        .routes(routes!(commerce::ledger_balances))
        .routes(routes!(commerce::webhook))
        .routes(routes!(referral::list_codes, referral::create_code))
        .routes(routes!(referral::get_code))
        .routes(routes!(referral::deactivate_code))
        .routes(routes!(referral::code_stats))
        .routes(routes!(referral::campaign_stats))
        .routes(routes!(referral::list_referrals))
        .routes(routes!(referral::get_referral))
        .routes(routes!(referral::approve))
        .routes(routes!(referral::reject))
        .routes(routes!(nexus::list_operations))
        .routes(routes!(nexus::list_patterns, nexus::register_pattern))
        .routes(routes!(nexus::get_pattern))
        .routes(routes!(nexus::start_run))
        .routes(routes!(nexus::list_runs))
        .routes(routes!(nexus::get_run))
        .routes(routes!(services_list))
        .routes(routes!(kg::get, kg::annotate))
        .routes(routes!(kg::service))
        .routes(routes!(kg::impact))
        .routes(routes!(kg::mermaid))
        .routes(routes!(openapi_json))
        .routes(routes!(ws::upgrade))
        .routes(routes!(ws::upgrade_as_subject))
}

/// The router of `:8090`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_size;
    let cors = state.origins.cors();
    let (api, doc) = api_router().split_for_parts();
    let doc = OpenApiJson(Bytes::from(
        serde_json::to_vec(&crate::openapi::finish(doc)).expect("the OpenAPI document serialises"),
    ));
    Router::new()
        .merge(page::routes())
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(doc))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            body::BodyLimits::new(body_limit, state.config.body_timeout),
            body::read_body,
        ))
        .layer(axum::middleware::from_fn(observe::record))
        .layer(tower::util::option_layer(cors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The serialised OpenAPI document, built once with the router.
#[derive(Clone)]
struct OpenApiJson(Bytes);

/// This document: the OpenAPI 3.1 description of every route of this API.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "node",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object),
    )
)]
async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
}

/// `{"items": [...]}`: a list that is never paged.
#[derive(Serialize, ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// A service's registration, what it depends on, and whether it is healthy now.
#[derive(Serialize, ToSchema)]
pub struct ServiceStatus {
    #[serde(flatten)]
    pub registration: ServiceRegistration,
    /// The services and infrastructure it was handed when it was built.
    #[schema(value_type = Vec<String>)]
    pub dependencies: Vec<&'static str>,
    pub healthy: bool,
}

/// Every service's registration (name, version, capabilities, endpoints, health check, metrics
/// prefix), what it depends on (as wired), and whether it is healthy now.
#[utoipa::path(
    get,
    path = "/api/services",
    operation_id = "list_services",
    tag = "node",
    responses(
        (status = 200, description = "Every service", body = Items<ServiceStatus>),
    )
)]
async fn services_list(
    axum::extract::State(app): axum::extract::State<AppState>,
) -> impl IntoResponse {
    let mut items = Vec::new();
    let mut dependencies = app.services.wiring.dependencies();
    for registration in services::provider::registrations() {
        let healthy = app.services.healthy(registration.name).await;
        items.push(ServiceStatus {
            dependencies: dependencies.remove(registration.name).unwrap_or_default(),
            registration,
            healthy,
        });
    }
    Json(Items { items })
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

/// Longest accepted user id, in characters.
pub const MAX_USER_ID: usize = 128;

/// Whether `user` is an acceptable user id: 1–128 characters, no control characters or
/// spaces.
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty()
        && user.chars().count() <= MAX_USER_ID
        && !user.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// A user id from a path: 1–128 characters, none of them control characters or spaces.
fn check_user_id(user: &str) -> Result<(), ApiError> {
    if valid_user_id(user) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "user_id must have 1-{MAX_USER_ID} characters without spaces or control characters"
        )))
    }
}
