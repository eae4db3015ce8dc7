//! Who is calling: the [`Auth`] extractor turns `Authorization: Bearer <token>` (or, on
//! WebSocket upgrades, `?token=`) into a [`Caller`] with the client's address; and the REST
//! adapters of the user service: `/api/auth/{register,login,refresh}` and `/api/users/...`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use services::security::Caller;
use services::user::{NewUser, ProfileUpdate};

use super::AppState;
use crate::error::ApiError;

/// The caller of a request: anonymous without a token; a bad or expired token is refused
/// with 401 even where anonymous calls are allowed.
pub struct Auth(pub Caller);

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

/// The bearer token of a request's headers, if any.
///
/// # Errors
/// 401 for an `Authorization` header that is not `Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| unauthenticated("the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(unauthenticated(
            "the Authorization header must be \"Bearer <token>\"",
        )),
    }
}

/// The caller a token (or its absence) stands for, seen from the request's address.
///
/// # Errors
/// 401 for a bad or expired token.
pub fn caller(app: &AppState, parts: &Parts, token: Option<&str>) -> Result<Caller, ApiError> {
    let caller = match token {
        Some(t) => app.services.users.authenticate(t)?,
        None => Caller::anonymous(),
    };
    Ok(match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => caller.from_addr(addr.to_string()),
        None => caller,
    })
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        caller(app, parts, token).map(Auth)
    }
}

type JsonBody<T> = Result<Json<T>, JsonRejection>;

pub async fn register(
    State(app): State<AppState>,
    Auth(caller): Auth,
    body: JsonBody<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(new) = body?;
    let user = app.services.users.register(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// Username or email.
    login: String,
    password: String,
}

pub async fn login(
    State(app): State<AppState>,
    body: JsonBody<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    Ok(Json(app.services.users.login(&b.login, &b.password).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(
    State(app): State<AppState>,
    body: JsonBody<RefreshBody>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    Ok(Json(app.services.users.refresh(&b.refresh_token).await?))
}

pub async fn me(
    State(app): State<AppState>,
    Auth(caller): Auth,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.services.users.me(&caller).await?))
}

pub async fn update_me(
    State(app): State<AppState>,
    Auth(caller): Auth,
    body: JsonBody<ProfileUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(change) = body?;
    Ok(Json(
        app.services.users.update_profile(&caller, change).await?,
    ))
}

pub async fn get_user(
    State(app): State<AppState>,
    Auth(caller): Auth,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    Ok(Json(app.services.users.get(&caller, &id).await?))
}
