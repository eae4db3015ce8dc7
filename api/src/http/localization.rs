//! REST adapters of the localization service under `/api/localization`: messages, bulk
//! import/export per namespace and locale, the namespace report, missing keys, and the lookup
//! that formats a message for a locale.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use services::localization::{
    Export, FormatRequest, Formatted, Import, ImportResult, Message, MessageFilter, MessageText,
    MissingKey, NamespaceSummary, Page,
};
use utoipa::IntoParams;

use super::AppState;
use super::auth::{Auth, SignedIn};
use super::params::Params;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type MessagePath = Result<Path<(String, String, String)>, PathRejection>;
type LocalePath = Result<Path<(String, String)>, PathRejection>;
type NamespacePath = Result<Path<String>, PathRejection>;

/// Which messages a list returns. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The namespace (required).
    namespace: String,
    /// Only this locale (BCP 47).
    locale: Option<String>,
    /// Only keys that start with this.
    key_prefix: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists a namespace's messages, by locale then key, a page at a time.
#[utoipa::path(
    get,
    path = "/api/localization/messages",
    operation_id = "list_messages",
    tag = "localization",
    params(ListQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of messages", body = Page<Message>),
        (status = 400, description = "Missing namespace, bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading translations", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = MessageFilter {
        namespace: q.namespace,
        locale: q.locale,
        key_prefix: q.key_prefix,
    };
    Ok(Json(
        app.services
            .localization
            .list(&caller, filter, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// One stored message, exactly as stored for this locale (no fallback; see
/// `POST /api/localization/format` for lookups).
#[utoipa::path(
    get,
    path = "/api/localization/messages/{namespace}/{locale}/{key}",
    operation_id = "get_message",
    tag = "localization",
    params(
        ("namespace" = String, Path, description = "Namespace: `[a-z0-9._-]`, 1–64"),
        ("locale" = String, Path, description = "BCP 47 language tag (`fr-CA`)"),
        ("key" = String, Path, description = "Message key: a Fluent identifier"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The message", body = Message),
        (status = 400, description = "Bad namespace, locale or key", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading translations", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    path: MessagePath,
) -> Result<impl IntoResponse, ApiError> {
    let Path((namespace, locale, key)) = path?;
    Ok(Json(
        app.services
            .localization
            .get(&caller, &namespace, &locale, &key)
            .await?,
    ))
}

/// Creates or replaces a message; its Fluent syntax is checked first.
#[utoipa::path(
    put,
    path = "/api/localization/messages/{namespace}/{locale}/{key}",
    operation_id = "put_message",
    tag = "localization",
    params(
        ("namespace" = String, Path, description = "Namespace: `[a-z0-9._-]`, 1–64"),
        ("locale" = String, Path, description = "BCP 47 language tag (`fr-CA`)"),
        ("key" = String, Path, description = "Message key: a Fluent identifier"),
    ),
    request_body = MessageText,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaced", body = Message),
        (status = 201, description = "Created", body = Message),
        (status = 400, description = "Malformed JSON, unknown field, bad namespace, locale or key, a value that is not valid Fluent (the error names the key and the parser's error)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow writing translations", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn put(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: MessagePath,
    body: JsonBody<MessageText>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path((namespace, locale, key)), Json(body)) = (path?, body?);
    let (m, created) = app
        .services
        .localization
        .put(&caller, &namespace, &locale, &key, body)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(m)))
}

/// Deletes a message.
#[utoipa::path(
    delete,
    path = "/api/localization/messages/{namespace}/{locale}/{key}",
    operation_id = "delete_message",
    tag = "localization",
    params(
        ("namespace" = String, Path, description = "Namespace"),
        ("locale" = String, Path, description = "BCP 47 language tag"),
        ("key" = String, Path, description = "Message key"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad namespace, locale or key", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow writing translations", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: MessagePath,
) -> Result<impl IntoResponse, ApiError> {
    let Path((namespace, locale, key)) = path?;
    app.services
        .localization
        .delete(&caller, &namespace, &locale, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every message of a namespace in one locale, as `{"messages": {key: value}}` (the shape
/// an import takes).
#[utoipa::path(
    get,
    path = "/api/localization/namespaces/{namespace}/locales/{locale}",
    operation_id = "export_messages",
    tag = "localization",
    params(
        ("namespace" = String, Path, description = "Namespace"),
        ("locale" = String, Path, description = "BCP 47 language tag"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The messages", body = Export),
        (status = 400, description = "Bad namespace or locale", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading translations", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn export(
    State(app): State<AppState>,
    Auth(caller): Auth,
    path: LocalePath,
) -> Result<impl IntoResponse, ApiError> {
    let Path((namespace, locale)) = path?;
    Ok(Json(
        app.services
            .localization
            .export(&caller, &namespace, &locale)
            .await?,
    ))
}

/// Imports the messages of a namespace in one locale, all or none (each one checked first);
/// with `replace`, the ones not named are deleted.
#[utoipa::path(
    put,
    path = "/api/localization/namespaces/{namespace}/locales/{locale}",
    operation_id = "import_messages",
    tag = "localization",
    params(
        ("namespace" = String, Path, description = "Namespace"),
        ("locale" = String, Path, description = "BCP 47 language tag"),
    ),
    request_body = Import,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What changed", body = ImportResult),
        (status = 400, description = "Malformed JSON, unknown field, bad namespace or locale, too many messages, a bad key or a message that is not valid Fluent (named as `messages.<key>`)", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow writing translations", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn import(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: LocalePath,
    body: JsonBody<Import>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path((namespace, locale)), Json(import)) = (path?, body?);
    Ok(Json(
        app.services
            .localization
            .import(&caller, &namespace, &locale, import)
            .await?,
    ))
}

/// A namespace: its number of keys, its locales and how many keys each lacks.
#[utoipa::path(
    get,
    path = "/api/localization/namespaces/{namespace}",
    operation_id = "get_namespace",
    tag = "localization",
    params(("namespace" = String, Path, description = "Namespace")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The namespace", body = NamespaceSummary),
        (status = 400, description = "Bad namespace", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading translations", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn namespace(
    State(app): State<AppState>,
    Auth(caller): Auth,
    path: NamespacePath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(namespace) = path?;
    Ok(Json(
        app.services
            .localization
            .summary(&caller, &namespace)
            .await?,
    ))
}

/// The locale whose missing keys to list. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MissingQuery {
    /// BCP 47 (required).
    locale: String,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The keys of a namespace (in any locale) that a locale lacks, by key.
#[utoipa::path(
    get,
    path = "/api/localization/namespaces/{namespace}/missing",
    operation_id = "list_missing_keys",
    tag = "localization",
    params(("namespace" = String, Path, description = "Namespace"), MissingQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of missing keys", body = Page<MissingKey>),
        (status = 400, description = "Bad namespace or locale, bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading translations", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn missing(
    State(app): State<AppState>,
    Auth(caller): Auth,
    path: NamespacePath,
    Params(q): Params<MissingQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(namespace) = path?;
    Ok(Json(
        app.services
            .localization
            .missing(&caller, &namespace, &q.locale, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// Formats a message for a locale with arguments: the first locale of the chain `fr-CA` →
/// `fr` → the default locale that has the key, with its plural rules.
#[utoipa::path(
    post,
    path = "/api/localization/format",
    operation_id = "format_message",
    tag = "localization",
    request_body = FormatRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The formatted message", body = Formatted),
        (status = 400, description = "Malformed JSON, unknown field, bad namespace, key or locale, a bad argument, or an argument the message uses and the request lacks (`args.<name>`)", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading translations", body = ErrorBody),
        (status = 404, description = "No locale of the chain has the key", body = ErrorBody),
        (status = 409, description = "The stored message cannot be formatted (it refers to a message the locale lacks)", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn format(
    State(app): State<AppState>,
    Auth(caller): Auth,
    body: JsonBody<FormatRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(req) = body?;
    Ok(Json(app.services.localization.format(&caller, &req).await?))
}
