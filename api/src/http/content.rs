//! REST adapters of the content service under `/api/content`: posts, search, threaded
//! comments and reactions.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use services::content::Page;
use services::content::model::{
    Comment, Content, ContentPatch, Kind, NewComment, NewContent, ReactionCounts, SearchHit,
};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::{Auth, SignedIn};
use super::params::{PageQuery, Params};
use crate::error::ApiError;
use crate::openapi::ErrorBody;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;

/// Which posts a list returns; every parameter narrows it. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only posts of this kind.
    #[param(value_type = Option<Kind>)]
    kind: Option<String>,
    /// Only posts by this user id.
    author_id: Option<String>,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists posts, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/content",
    operation_id = "list_content",
    tag = "content",
    params(ListQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of posts", body = Page<Content>),
        (status = 400, description = "Bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading content", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let kind = q.kind.as_deref().map(Kind::parse).transpose()?;
    Ok(Json(
        app.services
            .content
            .list(
                &caller,
                kind,
                q.author_id.as_deref(),
                q.limit,
                q.cursor.as_deref(),
            )
            .await?,
    ))
}

/// Creates a post; its author is the caller.
#[utoipa::path(
    post,
    path = "/api/content",
    operation_id = "create_content",
    tag = "content",
    request_body = NewContent,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Content),
        (status = 400, description = "Malformed JSON, unknown field or invalid value", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow creating content", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    body: JsonBody<NewContent>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let c = app.services.content.create(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// One post.
#[utoipa::path(
    get,
    path = "/api/content/{id}",
    operation_id = "get_content",
    tag = "content",
    params(("id" = String, Path, description = "Content id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The post", body = Content),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading content", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.content.get(&caller, &id).await?))
}

/// Changes a post: its author, or a caller whose roles allow `update` on `content`.
#[utoipa::path(
    patch,
    path = "/api/content/{id}",
    operation_id = "update_content",
    tag = "content",
    params(("id" = String, Path, description = "Content id")),
    request_body = ContentPatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The post after the change", body = Content),
        (status = 400, description = "Malformed JSON, unknown field, empty patch or invalid value", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the author, and the caller's roles do not allow updating content", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 409, description = "A value this post's kind does not allow: no title for an article or video, no url for a video, an empty or over-long body for a micro-post", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<ContentPatch>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(patch)) = (id?, body?);
    Ok(Json(
        app.services.content.update(&caller, &id, patch).await?,
    ))
}

/// Deletes a post with its comments and reactions: its author, or a caller whose roles
/// allow `delete` on `content`.
#[utoipa::path(
    delete,
    path = "/api/content/{id}",
    operation_id = "delete_content",
    tag = "content",
    params(("id" = String, Path, description = "Content id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the author, and the caller's roles do not allow deleting content", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    app.services.content.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A full-text search. Unknown parameters are refused.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The words to find (all must match; operators and punctuation are plain text): at most
    /// 256 characters and 32 words.
    q: String,
    /// Page size, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page (an offset up to 10,000).
    cursor: Option<String>,
}

/// Searches posts' titles and bodies, best match first.
#[utoipa::path(
    get,
    path = "/api/content/search",
    operation_id = "search_content",
    tag = "content",
    params(SearchQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of hits", body = Page<SearchHit>),
        (status = 400, description = "Missing, empty or over-long `q`, bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading content", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn search(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Params(q): Params<SearchQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        app.services
            .content
            .search(&caller, &q.q, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// A post's comments, oldest first; replies carry their `parent_id`.
#[utoipa::path(
    get,
    path = "/api/content/{id}/comments",
    operation_id = "list_comments",
    tag = "content",
    params(("id" = String, Path, description = "Content id"), PageQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of comments", body = Page<Comment>),
        (status = 400, description = "Bad path, bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading content", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn comments(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
    Params(q): Params<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        app.services
            .content
            .list_comments(&caller, &id, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// Comments on a post, or answers a comment of it (`parent_id`).
#[utoipa::path(
    post,
    path = "/api/content/{id}/comments",
    operation_id = "add_comment",
    tag = "content",
    params(("id" = String, Path, description = "Content id")),
    request_body = NewComment,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Comment),
        (status = 400, description = "Malformed JSON, unknown field or invalid body", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow commenting", body = ErrorBody),
        (status = 404, description = "No such post, or `parent_id` is no comment of it", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn add_comment(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<NewComment>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(new)) = (id?, body?);
    let c = app.services.content.add_comment(&caller, &id, new).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// A comment's new text.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    /// 1–10,000 characters.
    body: String,
}

/// One comment.
#[utoipa::path(
    get,
    path = "/api/content/comments/{id}",
    operation_id = "get_comment",
    tag = "content",
    params(("id" = String, Path, description = "Comment id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The comment", body = Comment),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading content", body = ErrorBody),
        (status = 404, description = "No such comment", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get_comment(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.content.get_comment(&caller, &id).await?))
}

/// Changes a comment's text: its author, or a caller whose roles allow `update` on `content`.
#[utoipa::path(
    patch,
    path = "/api/content/comments/{id}",
    operation_id = "update_comment",
    tag = "content",
    params(("id" = String, Path, description = "Comment id")),
    request_body = CommentBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The comment after the change", body = Comment),
        (status = 400, description = "Malformed JSON, unknown field or invalid body", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the author, and the caller's roles do not allow updating content", body = ErrorBody),
        (status = 404, description = "No such comment", body = ErrorBody),
        (status = 413, description = "Body larger than the node's limit", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update_comment(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
    body: JsonBody<CommentBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(b)) = (id?, body?);
    Ok(Json(
        app.services
            .content
            .update_comment(&caller, &id, &b.body)
            .await?,
    ))
}

/// Deletes a comment and its replies: its author, or a caller whose roles allow `delete` on
/// `content`.
#[utoipa::path(
    delete,
    path = "/api/content/comments/{id}",
    operation_id = "delete_comment",
    tag = "content",
    params(("id" = String, Path, description = "Comment id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "Not the author, and the caller's roles do not allow deleting content", body = ErrorBody),
        (status = 404, description = "No such comment", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete_comment(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    app.services.content.delete_comment(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The reactions to a post: how many of each kind, and the caller's own.
#[utoipa::path(
    get,
    path = "/api/content/{id}/reactions",
    operation_id = "list_reactions",
    tag = "content",
    params(("id" = String, Path, description = "Content id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The counts", body = ReactionCounts),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "Bad or expired token", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reading content", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn reactions(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.content.reactions(&caller, &id).await?))
}

type ReactionPath = Result<Path<(String, String)>, PathRejection>;

/// Adds the caller's reaction of `kind` (adding it twice changes nothing).
#[utoipa::path(
    put,
    path = "/api/content/{id}/reactions/{kind}",
    operation_id = "react",
    tag = "content",
    params(
        ("id" = String, Path, description = "Content id"),
        ("kind" = String, Path, description = "Reaction kind: 1-32 characters of `[a-z0-9_]`"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The counts after", body = ReactionCounts),
        (status = 400, description = "Bad reaction kind", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reacting", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn react(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: ReactionPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path((id, kind)) = path?;
    Ok(Json(app.services.content.react(&caller, &id, &kind).await?))
}

/// Removes the caller's reaction of `kind` (removing one that is not there changes nothing).
#[utoipa::path(
    delete,
    path = "/api/content/{id}/reactions/{kind}",
    operation_id = "unreact",
    tag = "content",
    params(
        ("id" = String, Path, description = "Content id"),
        ("kind" = String, Path, description = "Reaction kind: 1-32 characters of `[a-z0-9_]`"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The counts after", body = ReactionCounts),
        (status = 400, description = "Bad reaction kind", body = ErrorBody),
        (status = 401, description = "No token, or a bad or expired one", body = ErrorBody),
        (status = 403, description = "The caller's roles do not allow reacting", body = ErrorBody),
        (status = 404, description = "No such post", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn unreact(
    State(app): State<AppState>,
    SignedIn(caller): SignedIn,
    path: ReactionPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path((id, kind)) = path?;
    Ok(Json(
        app.services.content.unreact(&caller, &id, &kind).await?,
    ))
}
