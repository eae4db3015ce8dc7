//! The OpenAPI 3 document of the REST API, served at `GET /api/openapi.json`.
//!
//! Nothing here lists routes: [`crate::http::router`] registers every `/api/...` handler through
//! `utoipa_axum::routes!`, which takes each route's path, method, parameters, request body and
//! responses from the `#[utoipa::path(...)]` on the handler, and the same call gives both the
//! axum router and this document. This module holds what every operation shares: the
//! document's info, the bearer security scheme, the tags and the error body; and [`rules`]
//! writes into the generated document what the server accepts beyond the types (lengths,
//! patterns, formats), from the validators' constants.

pub mod rules;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The body of every error answer (`4xx`/`5xx`).
// `crate::error::ApiError` writes it; `tests/openapi.rs` checks that real error answers have
// this shape.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "campaign \"spring-sale\" not found"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_argument`, `malformed_json`, `unsupported_media_type`,
    /// `payload_too_large`, `unauthenticated`, `forbidden`, `not_found`, `conflict`,
    /// `already_exists`, `method_not_allowed`, `upgrade_required`, `unavailable`, `internal`.
    pub code: String,
    /// For people; not meant to be parsed.
    pub message: String,
}

/// The name of the bearer security scheme operations refer to.
pub const BEARER: &str = "bearer";

/// The document's fixed parts; the paths and their schemas come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "OVASABI node API",
        version = env!("CARGO_PKG_VERSION"),
        description = "REST API of an OVASABI broadcast node (`:8090`). Errors are \
            `{\"error\":{\"code\":\"...\",\"message\":\"...\"}}` (`ErrorBody`). Unknown \
            query parameters, query parameters without a value and unknown JSON fields are \
            refused with 400. Calls that need a token (security `bearer` only) answer 401 \
            without one before they look at their input; calls that accept a token refuse a \
            bad or expired one with 401 even where anonymous calls are allowed; what a caller \
            may do is decided by the RBAC policies (`GET /api/security/policies`). A request \
            that is valid but does not fit the resource as it is gets 409."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "campaigns", description = "Campaigns, their state, events and stats"),
        (name = "auth", description = "Registration, login and token refresh"),
        (name = "users", description = "The signed-in user and user lookup"),
        (name = "admin", description = "User management (needs `manage` on `user`)"),
        (name = "security", description = "Audit log and RBAC policies"),
        (name = "content", description = "Posts, search, threaded comments and reactions"),
        (name = "notification", description = "Notifications: templates, sends to users or roles on in_app/realtime/email/webhook, the inbox, preferences, webhooks, delivery status"),
        (name = "localization", description = "Fluent translations: messages, import/export, missing keys, formatted lookups with fallback"),
        (name = "nexus", description = "The operation registry, versioned multi-service patterns, and their durable runs with per-step state, retries and compensations"),
        (name = "referral", description = "Referral codes, sign-ups attributed to them, fraud rules holding rewards for review, rewards credited once to both sides, stats"),
        (name = "talent", description = "Talent profiles, weekly availability in their time zone, free slots, and bookings that never overlap"),
        (name = "scheduler", description = "Scheduled jobs that entities declare in `metadata.scheduling.jobs`: lists, runs, pause, resume and trigger"),
        (name = "babel", description = "Markets, price rules and prices for a country (integer minor units)"),
        (name = "node", description = "Service registrations and this document"),
        (name = "websocket", description = "The live campaign stream"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` scheme: `Authorization: Bearer <access token>` (a JWT from
/// `/api/auth/login` or `/api/auth/refresh`).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from /api/auth/login or /api/auth/refresh (HS256 JWT).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, generated from the router's handlers (without starting anything).
pub fn document() -> serde_json::Value {
    finish(crate::http::api_router().into_openapi())
}

/// The document as served: `doc` (the router's) with the [`rules`] written in.
pub fn finish(doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serialises");
    rules::apply(&mut doc);
    doc
}
