//! REST adapters of the content service under `/api/content`: posts, search, threaded
//! comments and reactions.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use services::content::model::{ContentPatch, Kind, NewComment, NewContent};

use super::AppState;
use super::auth::Auth;
use crate::error::ApiError;

type JsonBody<T> = Result<Json<T>, JsonRejection>;
type IdPath = Result<Path<String>, PathRejection>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    kind: Option<String>,
    author_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
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

pub async fn create(
    State(app): State<AppState>,
    Auth(caller): Auth,
    body: JsonBody<NewContent>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let c = app.services.content.create(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.content.get(&caller, &id).await?))
}

pub async fn update(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
    body: JsonBody<ContentPatch>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(patch)) = (id?, body?);
    Ok(Json(
        app.services.content.update(&caller, &id, patch).await?,
    ))
}

pub async fn delete(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    app.services.content.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: String,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn search(
    State(app): State<AppState>,
    Auth(caller): Auth,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
    Ok(Json(
        app.services
            .content
            .search(&caller, &q.q, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn comments(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Query(q)) = (id?, q?);
    Ok(Json(
        app.services
            .content
            .list_comments(&caller, &id, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

pub async fn add_comment(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
    body: JsonBody<NewComment>,
) -> Result<impl IntoResponse, ApiError> {
    let (Path(id), Json(new)) = (id?, body?);
    let c = app.services.content.add_comment(&caller, &id, new).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    body: String,
}

pub async fn get_comment(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.content.get_comment(&caller, &id).await?))
}

pub async fn update_comment(
    State(app): State<AppState>,
    Auth(caller): Auth,
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

pub async fn delete_comment(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    app.services.content.delete_comment(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn reactions(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: IdPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.content.reactions(&caller, &id).await?))
}

type ReactionPath = Result<Path<(String, String)>, PathRejection>;

pub async fn react(
    State(app): State<AppState>,
    Auth(caller): Auth,
    path: ReactionPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path((id, kind)) = path?;
    Ok(Json(app.services.content.react(&caller, &id, &kind).await?))
}

pub async fn unreact(
    State(app): State<AppState>,
    Auth(caller): Auth,
    path: ReactionPath,
) -> Result<impl IntoResponse, ApiError> {
    let Path((id, kind)) = path?;
    Ok(Json(
        app.services.content.unreact(&caller, &id, &kind).await?,
    ))
}
