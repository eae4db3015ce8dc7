//! REST adapters of the notification service under `/api/notifications`: sending, the
//! caller's inbox, preferences and webhooks, delivery status, and templates.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use services::notification::{
    Delivery, InboxFilter, MarkedRead, NewWebhook, Notification, Page, Preferences,
    PreferencesUpdate, SendRequest, SendResult, Template, TemplateInput, UnreadCount, Webhook,
};
use utoipa::IntoParams;

use super::AppState;
use super::auth::SignedIn;
use super::params::{PageQuery, Params};
use crate::error::ApiError;
use crate::openapi::ErrorBody;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;
type TemplatePath = Result<Path<(String, String)>, PathRejection>;

/// Which inbox notifications a list returns. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// Only unread ones.
    unread: Option<bool>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Whose webhooks. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookQuery {
    /// A campaign's (needs `send`); absent: the caller's own.
    campaign_id: Option<String>,
}

/// Which templates. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TemplateQuery {
    /// Only this key's.
    key: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Renders a template for its recipients and queues the deliveries (one transaction): for
/// named users or every user with a role, on in_app, realtime, email and/or webhook.
#[utoipa::path(
    post,
    path = "/api/notifications",
    operation_id = "send",
    tag = "notification",
    request_body = SendRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Queued", body = SendResult),
        (status = 400, description = "Malformed JSON, unknown field, a missing template variable (`variables.<name>`), bad recipients or channels", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "No template with this key", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn send(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<SendRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    let r = app.services.notifications.send(&caller, body).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// The caller's inbox, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/notifications",
    operation_id = "inbox",
    tag = "notification",
    params(InboxQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of notifications", body = Page<Notification>),
        (status = 400, description = "Bad input (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn inbox(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<InboxQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = InboxFilter {
        unread_only: q.unread.unwrap_or(false),
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(Json(
        app.services.notifications.inbox(&caller, filter).await?,
    ))
}

/// How many of the caller's inbox notifications are unread.
#[utoipa::path(
    get,
    path = "/api/notifications/unread",
    operation_id = "unread",
    tag = "notification",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The count", body = UnreadCount),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn unread(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.services.notifications.unread(&caller).await?))
}

/// Marks every notification of the caller's inbox read.
#[utoipa::path(
    post,
    path = "/api/notifications/read-all",
    operation_id = "read_all",
    tag = "notification",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many were marked", body = MarkedRead),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn read_all(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        app.services.notifications.mark_all_read(&caller).await?,
    ))
}

/// One notification of the caller's inbox.
#[utoipa::path(
    get,
    path = "/api/notifications/{id}",
    operation_id = "get",
    tag = "notification",
    params(("id" = String, Path, description = "Notification id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The notification", body = Notification),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
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
    Ok(Json(app.services.notifications.get(&caller, &id).await?))
}

/// Removes a notification from the caller's inbox (its delivery record stays).
#[utoipa::path(
    delete,
    path = "/api/notifications/{id}",
    operation_id = "delete",
    tag = "notification",
    params(("id" = String, Path, description = "Notification id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path?;
    app.services.notifications.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks one notification read (again: no change).
#[utoipa::path(
    post,
    path = "/api/notifications/{id}/read",
    operation_id = "mark_read",
    tag = "notification",
    params(("id" = String, Path, description = "Notification id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The notification", body = Notification),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn mark_read(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path?;
    Ok(Json(
        app.services.notifications.mark_read(&caller, &id).await?,
    ))
}

/// Where each delivery of one notification stands: its user's own, or any with `send`.
#[utoipa::path(
    get,
    path = "/api/notifications/{id}/deliveries",
    operation_id = "deliveries",
    tag = "notification",
    params(("id" = String, Path, description = "Notification id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The deliveries", body = Vec<Delivery>),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn deliveries(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path?;
    Ok(Json(
        app.services.notifications.deliveries(&caller, &id).await?,
    ))
}

/// The deliveries of one send, a page at a time (needs `send`).
#[utoipa::path(
    get,
    path = "/api/notifications/batches/{batch_id}/deliveries",
    operation_id = "batch_deliveries",
    tag = "notification",
    params(("batch_id" = String, Path, description = "The send's `batch_id`"), PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of deliveries", body = Page<Delivery>),
        (status = 400, description = "Bad input (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn batch_deliveries(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
    Params(q): Params<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(batch) = path?;
    Ok(Json(
        app.services
            .notifications
            .batch_deliveries(&caller, &batch, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// The caller's channel opt-ins (`marketing` notifications respect them).
#[utoipa::path(
    get,
    path = "/api/notifications/preferences",
    operation_id = "preferences",
    tag = "notification",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The preferences", body = Preferences),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn preferences(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.services.notifications.preferences(&caller).await?))
}

/// Changes the caller's channel opt-ins; answers them all.
#[utoipa::path(
    patch,
    path = "/api/notifications/preferences",
    operation_id = "update_preferences",
    tag = "notification",
    request_body = PreferencesUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The preferences", body = Preferences),
        (status = 400, description = "Bad input (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update_preferences(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<PreferencesUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    Ok(Json(
        app.services
            .notifications
            .set_preferences(&caller, body)
            .await?,
    ))
}

/// The caller's webhooks, or a campaign's (`?campaign_id=`, needs `send`).
#[utoipa::path(
    get,
    path = "/api/notifications/webhooks",
    operation_id = "webhooks",
    tag = "notification",
    params(WebhookQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The webhooks (without secrets)", body = Vec<Webhook>),
        (status = 400, description = "Bad input (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn webhooks(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<WebhookQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        app.services
            .notifications
            .webhooks(&caller, q.campaign_id.as_deref())
            .await?,
    ))
}

/// Registers a webhook for the caller's notifications, or a campaign's; the answer carries
/// the signing secret, shown only here.
#[utoipa::path(
    post,
    path = "/api/notifications/webhooks",
    operation_id = "create_webhook",
    tag = "notification",
    request_body = NewWebhook,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered (with its `secret`)", body = Webhook),
        (status = 400, description = "Bad input (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 409, description = "The owner has 10 webhooks already", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create_webhook(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(body) = body?;
    let w = app
        .services
        .notifications
        .create_webhook(&caller, body)
        .await?;
    Ok((StatusCode::CREATED, Json(w)))
}

/// Deletes a webhook; its pending deliveries then fail.
#[utoipa::path(
    delete,
    path = "/api/notifications/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "notification",
    params(("id" = String, Path, description = "Webhook id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete_webhook(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = path?;
    app.services
        .notifications
        .delete_webhook(&caller, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Templates, by key then locale, a page at a time (of one key with `?key=`).
#[utoipa::path(
    get,
    path = "/api/notifications/templates",
    operation_id = "templates",
    tag = "notification",
    params(TemplateQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of templates", body = Page<Template>),
        (status = 400, description = "Bad input (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn templates(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    Params(q): Params<TemplateQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        app.services
            .notifications
            .templates(&caller, q.key.as_deref(), q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// One template, exactly as stored for this locale.
#[utoipa::path(
    get,
    path = "/api/notifications/templates/{key}/{locale}",
    operation_id = "template",
    tag = "notification",
    params(("key" = String, Path, description = "Template key: `[A-Za-z0-9._-]`, 1–128"), ("locale" = String, Path, description = "BCP 47 language tag")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The template", body = Template),
        (status = 400, description = "Bad input (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn template(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: TemplatePath,
) -> Result<impl IntoResponse, ApiError> {
    let Path((key, locale)) = path?;
    Ok(Json(
        app.services
            .notifications
            .template(&caller, &key, &locale)
            .await?,
    ))
}

/// Creates or replaces a template; each part is compiled first.
#[utoipa::path(
    put,
    path = "/api/notifications/templates/{key}/{locale}",
    operation_id = "put_template",
    tag = "notification",
    params(("key" = String, Path, description = "Template key: `[A-Za-z0-9._-]`, 1–128"), ("locale" = String, Path, description = "BCP 47 language tag")),
    request_body = TemplateInput,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaced", body = Template),
        (status = 201, description = "Created", body = Template),
        (status = 400, description = "Malformed JSON, unknown field, bad key or locale, a part that does not parse (named, with its line)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn put_template(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: TemplatePath,
    body: JsonBody<TemplateInput>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path((key, locale)), Json(body)) = (path?, body?);
    let (t, created) = app
        .services
        .notifications
        .put_template(&caller, &key, &locale, body)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(t)))
}

/// Deletes a template.
#[utoipa::path(
    delete,
    path = "/api/notifications/templates/{key}/{locale}",
    operation_id = "delete_template",
    tag = "notification",
    params(("key" = String, Path, description = "Template key: `[A-Za-z0-9._-]`, 1–128"), ("locale" = String, Path, description = "BCP 47 language tag")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad input (the error names the field)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow it", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete_template(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: TemplatePath,
) -> Result<impl IntoResponse, ApiError> {
    let Path((key, locale)) = path?;
    app.services
        .notifications
        .delete_template(&caller, &key, &locale)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
